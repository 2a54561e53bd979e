"""Before pytest runs the claim items, train the models they will need (the plan of the selection) with the
local executor, so that the items only load and probe.

- Under xdist every worker walks the same plan from its own starting point (``worker.work`` with the worker's
  index and count); the store's locks keep two workers off one model.
- Without xdist, ``--kd-jobs N`` spawns N worker processes; by default the models train in this process.

Left out of the plan: items that cannot run here (no CUDA, missing weights: they skip) and items whose probe
measurements are already in the store (they load no model). A model that fails here is left to its item,
which then fails with its own error. When nothing is missing this costs the key computation of each item.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger("kdclaims.pretrain")


@dataclass
class Pretrained:
    """What the step did in this process."""

    planned: int = 0  # distinct models the items need
    trained: set[str] = field(default_factory=set)  # keys trained here
    failed: dict[str, str] = field(default_factory=dict)  # label -> message
    seconds: float = 0.0


def needs_models(item: Any, ctx: Any) -> bool:
    """Whether a claim item will load models: it can run here and its probe measurements are not cached."""
    from kdclaims.bank import Bank
    from kdclaims.runner import missing_requirements, probe_key
    from kdclaims.store import recipe_key

    claim = item.claim
    if claim is None or missing_requirements(claim, ctx):
        return False
    try:
        key = recipe_key(probe_key(claim, Bank(claim, ctx)))
    except (OSError, ValueError):  # weights that cannot be read: the item reports it
        return False
    return not ctx.store.measurements_path(key).with_suffix(".json").is_file()


def xdist_share() -> tuple[int, int] | None:
    """``(index, count)`` of this xdist worker, or None outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if name.startswith("gw") and name[2:].isdigit() and count.isdigit():
        return int(name[2:]), int(count)
    return None


def pretrain(specs: list[Any], context: Any, jobs: int | None, job_for: Any) -> Pretrained:
    """Train the missing models of ``specs`` (``kdclaims.spec.loader.ClaimItem``); ``context(tier)`` gives the
    run's ``RunContext``, ``job_for(ctx)`` its picklable ``Job`` (for worker processes)."""
    from kdclaims.executors.local import run_local
    from kdclaims.executors.worker import Trainer, work
    from kdclaims.plan import build_plan

    t0 = time.time()
    out = Pretrained()
    for tier in sorted({s.tier for s in specs if s.claim is not None}):
        ctx = context(tier)
        items = [s for s in specs if s.claim is not None and s.tier == tier and needs_models(s, ctx)]
        if not items:
            continue
        plan = build_plan(items, ctx, with_cost=False)
        out.planned += len(plan.nodes)
        if not plan.to_train():
            continue
        by_key = plan.by_key()
        share = xdist_share()

        def note(node, outcome, seconds, message):
            if outcome == "trained":
                out.trained.add(node.key)
            elif outcome == "failed":
                out.failed[node.label] = message

        if share is not None:
            work(plan.nodes, Trainer(ctx), index=share[0], count=share[1], report=note)
        else:
            # one thread per spawned worker, and for tiny smoke models; torch's default when training here
            threads = 1 if (jobs or 1) > 1 or tier == "smoke" else None
            result = run_local(plan, replace(job_for(ctx), threads=threads), jobs or 1, progress=False, ctx=ctx)
            for key, outcome in result.results.items():
                note(by_key[key], outcome, 0.0, result.errors.get(by_key[key].label, ""))
            if result.interrupted:
                raise KeyboardInterrupt
    for label, msg in out.failed.items():
        log.warning("could not train %s before the items (its item will try again): %s", label, msg)
    out.seconds = time.time() - t0
    return out


def mark_pretrained(events: list[dict[str, Any]], trained: set[str]) -> None:
    """A model this process trained before the items is reported as ``trained`` by the item that loads it."""
    for e in events:
        if e.get("source") == "cache" and e.get("key") in trained:
            e["source"] = "trained"
            e["when"] = "before the items"
