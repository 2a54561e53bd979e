"""The SLURM executor, through submitit: the missing teachers are one job array, the missing students a second
array that starts only after every teacher task succeeded (``--dependency=afterok``). A failed task is
submitted once more; a second failure is reported with the task's log file. A model that needs several GPUs
(``Node.gpus``) runs as one ``torchrun`` job of ``kdclaims.launch`` on one node.

Options come from flags or a small YAML file (flags win)::

    partition: gpu            # sbatch --partition
    gpus_per_task: 1          # GPUs of a one-GPU model's task (a several-GPU model gets its own count)
    cpus_per_task: 8
    time_min: 4320            # time limit of each task, minutes (more than 1.5: submitit signals 90 s before it)
    array_parallelism: 32     # tasks of one array running at once
    mem_gb: 64
    sbatch: {account: vision, qos: high}   # any other sbatch option
    setup: ["source /opt/venv/bin/activate"]
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kdclaims.executors.local import Outcome
from kdclaims.executors.worker import Job, Trainer, set_threads
from kdclaims.plan import Node, Plan

MIN_TIME_MIN = 2  # submitit asks SLURM for a signal 90 s before the limit: a 1-minute task fails at once


@dataclass
class SlurmOptions:
    folder: str  # submitit's folder: submission scripts, pickles and logs (<folder>/<job id>_0_log.err)
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time_min: int = 60
    array_parallelism: int = 32
    mem_gb: float | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    def check(self, where: str = "slurm options") -> None:
        if self.time_min < MIN_TIME_MIN:
            raise ValueError(f"{where}: time_min: {self.time_min} is too short; submitit asks SLURM to signal the "
                             f"task 90 s before its limit, so use at least {MIN_TIME_MIN}")
        for name in ("gpus_per_task", "cpus_per_task", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "gpus_per_task" else 1):
                raise ValueError(f"{where}: {name}: {v!r} is not a valid count")


def load_options(path: Path | str) -> dict[str, Any]:
    """The YAML file's options; ``ValueError`` as ``file:line: field: message`` for an unknown key or a value
    of the wrong type."""
    from kdclaims.spec.yamlsource import load_source

    src = load_source(Path(path))
    data = src.data if src.data is not None else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: the file must be a mapping of options")
    types = {f.name: f.type for f in fields(SlurmOptions) if f.name != "folder"}
    want = {"partition": (str,), "gpus_per_task": (int,), "cpus_per_task": (int,), "time_min": (int,),
            "array_parallelism": (int,), "mem_gb": (int, float), "sbatch": (dict,), "setup": (list,)}
    for k, v in data.items():
        line = src.line_of((k,)) or 1
        if k not in types:
            raise ValueError(f"{path}:{line}: {k}: unknown option; options: {', '.join(types)}")
        if not isinstance(v, want[k]) or isinstance(v, bool):
            raise ValueError(f"{path}:{line}: {k}: expected {' or '.join(t.__name__ for t in want[k])}, "
                             f"got {type(v).__name__}")
    return dict(data)


def slurm_task(job: Job, node: Node) -> str:
    """One array task: train ``node`` (several GPUs: ``torchrun`` of ``kdclaims.launch``); returns the source."""
    if node.gpus > 1:
        return _torchrun(job, node)
    set_threads(job.threads)
    return Trainer(job.context()).train(node)


def _torchrun(job: Job, node: Node) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={node.gpus}",
           "-m", "kdclaims.launch", node.claim_id, "--tier", job.tier, "--key", node.key, "--kd-cache", job.cache,
           "--kd-recipe", job.recipe_mode, "--quiet"]
    for flag, v in (("--path", job.claims_path), ("--kd-data", job.data_root), ("--kd-weights", job.weights_dir)):
        if v:
            cmd += [flag, v]
    print("kdclaims: " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return "trained"


def executor_for(opts: SlurmOptions, cluster: str | None = "slurm") -> Any:
    import submitit

    ex = submitit.AutoExecutor(folder=opts.folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": opts.time_min, "cpus_per_task": opts.cpus_per_task,
                              "tasks_per_node": 1, "nodes": 1, "name": "kdclaims"}
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if ex.cluster == "slurm":
        params.update(slurm_array_parallelism=opts.array_parallelism, slurm_additional_parameters=dict(opts.sbatch),
                      slurm_setup=list(opts.setup))
        if opts.partition:
            params["slurm_partition"] = opts.partition
    ex.update_parameters(**params)
    return ex


def _submit(ex: Any, job: Job, nodes: list[Node], opts: SlurmOptions, after: list[str]) -> list[tuple[Node, Any]]:
    """Submit ``nodes`` as arrays (one per GPU count); ``after``: job ids every task waits for (afterok)."""
    out = []
    for gpus in sorted({n.gpus for n in nodes}):
        group = [n for n in nodes if n.gpus == gpus]
        extra = dict(opts.sbatch)
        if after:
            extra["dependency"] = "afterok:" + ":".join(after)
        g = gpus if gpus > 1 else opts.gpus_per_task
        if ex.cluster == "slurm":
            ex.update_parameters(slurm_additional_parameters=extra, **({"gpus_per_node": g} if g else {}))
        jobs = ex.map_array(slurm_task, [job] * len(group), group)
        out += list(zip(group, jobs))
    return out


def _array_ids(pairs: list[tuple[Node, Any]]) -> list[str]:
    return sorted({str(j.job_id).split("_")[0] for _, j in pairs})


def _wait(pairs: list[tuple[Node, Any]], out: Outcome, bar: Any, poll_s: float = 2.0) -> list[tuple[Node, Any]]:
    """Wait for every task; record the successes; return the failed pairs."""
    pending, failed = list(pairs), []
    while pending:
        still = []
        for node, j in pending:
            if not j.done():
                still.append((node, j))
                continue
            err = j.exception()
            if err is None:
                out.add(node, j.result() or "trained", "")
                if bar is not None:
                    bar.update(1)
            else:
                failed.append((node, j))
        pending = still
        if pending:
            time.sleep(poll_s)
    return failed


def _fail(out: Outcome, node: Node, j: Any, bar: Any) -> None:
    err = j.exception()
    first = str(err).strip().splitlines()[-1] if err is not None and str(err).strip() else type(err).__name__
    out.add(node, "failed", f"{first} (log: {j.paths.stderr})")
    if bar is not None:
        bar.update(1)


def run_slurm(plan: Plan, job: Job, opts: SlurmOptions, *, progress: bool = True, cluster: str | None = "slurm",
              log: Any = print) -> Outcome:
    """Train ``plan``'s missing models on SLURM; returns what happened to each."""
    opts.check()
    todo = plan.to_train()
    out = Outcome()
    if not todo:
        return out
    ex = executor_for(opts, cluster)
    teachers = [n for n in todo if n.kind == "teacher" and not n.weights]
    students = [n for n in todo if n.kind == "student"]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(teachers) + len(students), desc="slurm", unit="model", dynamic_ncols=True)
    try:
        t_jobs = _submit(ex, job, teachers, opts, []) if teachers else []
        s_jobs = _submit(ex, job, students, opts, _array_ids(t_jobs)) if students else []
        log(f"kdclaims: submitted {len(teachers)} teacher task(s) {_array_ids(t_jobs)} and {len(students)} student "
            f"task(s) {_array_ids(s_jobs)}; logs in {opts.folder}")
        t_failed = _wait(t_jobs, out, bar)
        if t_failed:  # the student array can never start (afterok): cancel it, retry the teachers, resubmit
            for _, j in s_jobs:
                j.cancel(check=False)
            log(f"kdclaims: {len(t_failed)} teacher task(s) failed; submitting them once more")
            retry = _submit(ex, job, [n for n, _ in t_failed], opts, [])
            for node, j in _wait(retry, out, bar):
                _fail(out, node, j, bar)
            lost = {k for k, v in out.results.items() if v == "failed"}
            for n in students:
                if lost & set(n.deps):
                    out.add(n, "failed", "its teacher failed twice")
                    if bar is not None:
                        bar.update(1)
            rest = [n for n in students if not lost & set(n.deps)]
            s_jobs = _submit(ex, job, rest, opts, []) if rest else []
        s_failed = _wait(s_jobs, out, bar)
        if s_failed:
            log(f"kdclaims: {len(s_failed)} student task(s) failed; submitting them once more")
            for node, j in _wait(_submit(ex, job, [n for n, _ in s_failed], opts, []), out, bar):
                _fail(out, node, j, bar)
    except KeyboardInterrupt:
        out.interrupted = True  # the submitted tasks go on; `kdclaims plan` shows them as training
    finally:
        if bar is not None:
            bar.close()
    return out
