"""``kdclaims plan`` and ``kdclaims train``: the models a selection of claims needs, and training the missing ones
with an executor (``local`` processes, or ``slurm`` job arrays through submitit)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("claims", nargs="*", help="claim ids (default: every claim)")
    s.add_argument("--tier", default="cpu", choices=("smoke", "cpu", "gpu"))
    s.add_argument("--setting", help="only this teacher->student setting")
    s.add_argument("--path", help="claims folder (default: ./claims, else the package's)")
    s.add_argument("--kd-cache", metavar="DIR", help="checkpoint store (default .kdclaims/cache or $KDCLAIMS_CACHE)")
    s.add_argument("--kd-data", metavar="ROOT")
    s.add_argument("--kd-weights", metavar="DIR")
    s.add_argument("--kd-device", metavar="DEV", help="default: cuda for the gpu tier when present, else cpu")
    s.add_argument("--kd-recipe", choices=("paper", "fast"), default="paper", help="as pytest's --kd-recipe")


def add_commands(sub: Any) -> None:
    s = sub.add_parser("plan", help="the distinct models a selection needs: key, state, estimated cost, order")
    _common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("train", help="train the plan's missing models into the store (local processes or SLURM)")
    _common(s)
    s.add_argument("--executor", choices=("local", "slurm"), default="local")
    s.add_argument("--jobs", type=int, default=1, help="local: worker processes (one thread or one GPU each)")
    s.add_argument("--threads", type=int, help="torch CPU threads per worker (default: 1 with --jobs > 1, "
                   "--cpus-per-task on slurm, torch's own otherwise)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    g = s.add_argument_group("slurm (flags override --slurm-config)")
    g.add_argument("--slurm-config", metavar="YAML", help="partition, gpus_per_task, time_min, ... (see docs/scale.md)")
    g.add_argument("--slurm-folder", metavar="DIR", help="submitit's scripts and logs (default <store>/slurm)")
    g.add_argument("--partition")
    g.add_argument("--gpus-per-task", type=int)
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--time-min", type=int, help="time limit of each task in minutes (at least 2)")
    g.add_argument("--array-parallelism", type=int, help="tasks of one array running at once")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option")
    s.set_defaults(fn=cmd_train)


def _plan(args: argparse.Namespace, *, with_cost: bool = True):
    from kdclaims.executors.worker import Job
    from kdclaims.plan import build_plan, select_items, store_of
    from kdclaims.registries import load_all

    load_all()
    store = store_of(args.kd_cache)
    job = Job(cache=str(store.root.resolve()), tier=args.tier, data_root=_abs(args.kd_data),
              weights_dir=_abs(args.kd_weights), device=args.kd_device, recipe_mode=args.kd_recipe,
              claims_path=_abs(args.path))
    items = select_items(args.claims, args.tier, args.path, args.setting)
    if not items:
        raise ValueError(f"no {args.tier} item in the selection (see `kdclaims list`)")
    return build_plan(items, job.context(store=store, device="cpu"), with_cost=with_cost), job


def _abs(v: str | None) -> str | None:
    return str(Path(v).expanduser().resolve()) if v else None


def cmd_plan(args: argparse.Namespace) -> int:
    from kdclaims.plan import format_plan, plan_json

    try:
        plan, _ = _plan(args)
    except ValueError as e:
        print(f"kdclaims: {e}", file=sys.stderr)
        return 2
    print(plan_json(plan) if args.json else format_plan(plan))
    return 0


def slurm_options(args: argparse.Namespace, store_root: Path) -> Any:
    from kdclaims.executors.slurm import SlurmOptions, load_options

    given = load_options(args.slurm_config) if args.slurm_config else {}
    for name in ("partition", "gpus_per_task", "cpus_per_task", "time_min", "array_parallelism"):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    for kv in args.sbatch:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"--sbatch {kv}: expected KEY=VALUE (e.g. --sbatch account=vision)")
        given.setdefault("sbatch", {})[k.lstrip("-").replace("-", "_")] = v
    folder = args.slurm_folder or str(store_root / "slurm")
    return SlurmOptions(folder=str(Path(folder).expanduser().resolve()), **given)


def cmd_train(args: argparse.Namespace) -> int:
    from kdclaims.executors.local import run_local

    try:
        plan, job = _plan(args)
        opts = slurm_options(args, Path(job.cache)) if args.executor == "slurm" else None
        if opts is not None:
            opts.check("--executor slurm")
        threads = args.threads or (opts.cpus_per_task if opts is not None else 1 if args.jobs > 1 else None)
        job = replace(job, threads=threads)
    except ValueError as e:
        print(f"kdclaims: {e}", file=sys.stderr)
        return 2
    todo = plan.to_train()
    print(f"kdclaims: {len(plan.nodes)} models, {len(todo)} to train, store {job.cache}", file=sys.stderr)
    if args.executor == "slurm":
        from kdclaims.executors.slurm import run_slurm

        out = run_slurm(plan, job, opts, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    else:
        out = run_local(plan, job, args.jobs, progress=not args.quiet)
    for label, msg in sorted(out.errors.items()):
        print(f"kdclaims: FAILED {label}: {msg}", file=sys.stderr)
    print(f"kdclaims: {out.count('trained')} trained, {out.count('cache')} found in the store, "
          f"{len(out.errors)} failed" + ("; stopped (run the same command again to go on)" if out.interrupted
                                          else ""), file=sys.stderr)
    if out.interrupted:
        return 130
    return 1 if out.errors else 0


