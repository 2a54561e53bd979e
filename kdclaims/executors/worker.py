"""What every executor runs: rebuild one model's ``Bank`` from its claim file and train it into the store, and
a worker loop that walks a plan in dependency order, leaving to others the keys whose lock another process holds.

Every piece here is picklable (a ``Job`` and plan ``Node``s), so the same code runs in this process, in a
spawned worker process or in a SLURM task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kdclaims.plan import Node, available, lock_held

POLL_S = 0.5


@dataclass(frozen=True)
class Job:
    """The run settings a worker needs to rebuild a ``RunContext`` (the options of ``kdclaims train``)."""

    cache: str
    tier: str
    data_root: str | None = None
    weights_dir: str | None = None
    device: str | None = None  # None: cuda for the gpu tier when present, else cpu
    recipe_mode: str = "paper"
    threads: int | None = 1
    claims_path: str | None = None  # the claims folder (for torchrun jobs through kdclaims.launch)
    progress: bool = False

    def context(self, store: Any = None, device: str | None = None) -> Any:
        import torch

        from kdclaims import fixture_store
        from kdclaims.bank import RunContext
        from kdclaims.store import CheckpointStore

        dev = device or self.device or ("cuda" if self.tier == "gpu" and torch.cuda.is_available() else "cpu")
        store = store or CheckpointStore(self.cache, fallbacks=fixture_store.fallbacks())
        return RunContext(store=store, tier=self.tier,
                          data_root=_p(self.data_root), weights_dir=_p(self.weights_dir), device=torch.device(dev),
                          progress=self.progress, recipe_mode=self.recipe_mode)


def _p(v: str | None) -> Path | None:
    return Path(v).expanduser() if v else None


class Trainer:
    """Trains plan nodes in this process; claim files are parsed once per process."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self._items: dict[tuple[str, str], Any] = {}

    def _item(self, node: Node) -> Any:
        k = (node.claim_file, node.item)
        if k not in self._items:
            from kdclaims.registries import load_all
            from kdclaims.spec.loader import load_claim_file

            load_all()
            for it in load_claim_file(node.claim_file).items:
                self._items[(node.claim_file, it.name)] = it
        if k not in self._items or self._items[k].claim is None:
            raise RuntimeError(f"{node.label}: {node.claim_file} has no item {node.item} any more; plan again")
        return self._items[k]

    def train(self, node: Node) -> str:
        """Train (or find) ``node``'s model; returns its source (``trained`` or ``cache``). ``RuntimeError`` when
        the claim file no longer defines this key (the claims changed after the plan was made)."""
        from kdclaims.bank import Bank
        from kdclaims.runner import missing_requirements
        from kdclaims.store import recipe_key

        claim = self._item(node).claim
        bank = Bank(claim, self.ctx)
        if recipe_key(bank.model_key(node.name, node.seed)) != node.key:
            raise RuntimeError(f"{node.label}: {node.claim_file} now defines another model than key {node.key[:12]} "
                               "(the claims changed after the plan was made); plan again")
        missing = missing_requirements(claim, self.ctx)
        if missing:
            raise RuntimeError(f"{node.label}: cannot train here, needs: " + "; ".join(missing))
        bank.model(node.name, node.seed)
        mine = [e for e in bank.events if e.get("key") == node.key]
        return mine[-1]["source"] if mine else "cache"


def rotated(nodes: list[Node], index: int, count: int) -> list[Node]:
    """Teachers, then students, each list rotated to start at worker ``index``'s share (so ``count`` workers
    start on different models)."""
    out = []
    for kind in ("teacher", "student"):
        part = [n for n in nodes if n.kind == kind]
        k = (index * len(part)) // max(count, 1)
        out += part[k:] + part[:k]
    return out


Report = Callable[[Node, str, float, str], None]  # node, outcome ("trained" | "cache" | "failed"), seconds, message


def work(nodes: list[Node], trainer: Trainer, *, index: int = 0, count: int = 1, report: Report | None = None,
         stop: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """Train every missing node this worker can, in dependency order; returns ``{key: outcome}`` of the nodes
    it tried. A node is tried at most once here. A node whose lock another process holds, or whose teacher is
    still being trained elsewhere, is left for later (polled every ``POLL_S``); one whose teacher failed here
    fails too. Ends when nothing is left that this worker could still do."""
    store = trainer.ctx.store
    order = [n for n in rotated(nodes, index, count) if not n.weights]
    done: dict[str, str] = {}
    known = {n.key for n in order}
    for n in order:  # a teacher outside the list that is not in the store would be waited for forever
        if any(d not in known and not available(store, d) for d in n.deps):
            done[n.key] = "failed"
            if report:
                report(n, "failed", 0.0, "its teacher is neither in the plan nor in the store")
    while not stop():
        waiting, progressed = False, False
        for n in order:
            if n.key in done or available(store, n.key):
                continue
            if any(done.get(d) == "failed" for d in n.deps):
                done[n.key] = "failed"
                if report:
                    report(n, "failed", 0.0, "its teacher failed")
                continue
            if any(not available(store, d) for d in n.deps) or lock_held(store, n.key):
                waiting = True  # its teacher is not ready yet, or another worker trains it now
                continue
            claim = _claim(store, n.key)
            if claim is None:  # another worker took it a moment ago
                waiting = True
                continue
            t0 = time.time()
            try:
                outcome, msg = trainer.train(n), ""
            except Exception as e:  # noqa: BLE001 - one model's failure is reported; the others go on
                outcome, msg = "failed", f"{type(e).__name__}: {e}"
            finally:
                claim.release()
            done[n.key] = outcome
            if report:
                report(n, outcome, time.time() - t0, msg)
            progressed = True
            break  # rescan from the start: teachers first
        if not progressed:
            if not waiting:
                break
            time.sleep(POLL_S)
    return done


def _claim(store: Any, key: str) -> FileLock | None:
    """Take ``locks/<key>.claim`` without waiting (None when another worker holds it). A separate file from the
    store's own lock, which ``get_or_train`` takes next: two workers that both saw the key free cannot both
    start on it."""
    lock = FileLock(str(store.root / "locks" / f"{key}.claim"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def worker_device(job: Job, index: int) -> str | None:
    """One GPU per worker on CUDA (``cuda:index mod count``); the job's device otherwise."""
    import torch

    want = job.device or ("cuda" if job.tier == "gpu" and torch.cuda.is_available() else None)
    if want == "cuda" and torch.cuda.is_available():
        dev = f"cuda:{index % torch.cuda.device_count()}"
        torch.cuda.set_device(dev)
        return dev
    return want


def set_threads(n: int | None) -> None:
    """torch's intra-op threads (None: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def job_from_context(ctx: Any, threads: int | None = 1) -> Job:
    """The ``Job`` that rebuilds ``ctx`` in another process."""
    return Job(cache=str(Path(ctx.store.root).resolve()), tier=ctx.tier,
               data_root=str(ctx.data_root) if ctx.data_root else None,
               weights_dir=str(ctx.weights_dir) if ctx.weights_dir else None,
               device=str(ctx.device), recipe_mode=ctx.recipe_mode, threads=threads)
