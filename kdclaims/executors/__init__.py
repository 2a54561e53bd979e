"""Executors that train a plan's missing models into the store: ``local`` (worker processes on this machine),
``slurm`` (job arrays through submitit). ``worker`` holds what every executor runs for one model."""
