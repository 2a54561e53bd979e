"""The local executor: ``jobs`` worker processes on this machine (one torch thread each on CPU, one GPU each on
CUDA) walk the plan (``worker.work``); the store's per-key locks keep two of them off one model. With one job
the work runs in this process. Ctrl-C stops the workers; what they had not finished trains on the next run
(the trainer resumes from its last complete epoch)."""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
from dataclasses import dataclass, field
from typing import Any

from kdclaims.executors.worker import Job, Trainer, set_threads, work, worker_device
from kdclaims.plan import Node, Plan


@dataclass
class Outcome:
    """What an executor did: ``{key: outcome}`` and each failure's message."""

    results: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def count(self, what: str) -> int:
        return sum(v == what for v in self.results.values())

    def add(self, node: Node, outcome: str, message: str) -> None:
        if self.results.get(node.key) in ("trained", "cache") and outcome == "failed":
            return  # another worker's failure of a model this one produced does not count
        self.results[node.key] = outcome
        if outcome == "failed":
            self.errors[node.label] = message
        else:
            self.errors.pop(node.label, None)


def _child(job: Job, nodes: list[Node], index: int, count: int, events: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    set_threads(job.threads)
    trainer = Trainer(job.context(device=worker_device(job, index)))
    work(nodes, trainer, index=index, count=count,
         report=lambda n, o, s, m: events.put((n.key, o, round(s, 2), m)))


def run_local(plan: Plan, job: Job, jobs: int = 1, *, progress: bool = True, ctx: Any = None) -> Outcome:
    """Train ``plan``'s missing models with ``jobs`` processes (in this process when ``jobs`` is 1; ``ctx``: a
    ``RunContext`` to use there instead of the job's)."""
    todo = plan.to_train()
    out = Outcome()
    if not todo:
        return out
    bar = _bar(len(todo), progress)
    by_key = plan.by_key()

    def note(key: str, outcome: str, seconds: float, message: str) -> None:
        node = by_key[key]
        first = key not in out.results
        out.add(node, outcome, message)
        if bar is not None and first:
            bar.set_postfix_str(f"{node.label} {outcome}", refresh=False)
            bar.update(1)

    try:
        if jobs <= 1:
            import torch

            before = torch.get_num_threads()
            set_threads(job.threads)
            try:
                work(plan.nodes, Trainer(ctx or job.context()), report=lambda n, o, s, m: note(n.key, o, s, m))
            finally:
                torch.set_num_threads(before)
        else:
            _run_children(plan, job, jobs, note)
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return out


def _run_children(plan: Plan, job: Job, jobs: int, note: Any) -> None:
    spawn = mp.get_context("spawn")  # fork after torch has started threads is unsafe
    events = spawn.Queue()
    procs = [spawn.Process(target=_child, args=(job, plan.nodes, k, jobs, events), daemon=True)
             for k in range(jobs)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs) or not events.empty():
            try:
                note(*events.get(timeout=0.2))
            except queue.Empty:
                pass
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the store's lock dies with its holder; last.pt keeps finished epochs
        for p in procs:
            p.join(10)
        raise
    for p in procs:
        p.join()


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="training", unit="model", dynamic_ncols=True)
