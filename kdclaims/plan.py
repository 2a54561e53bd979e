"""The training plan: the distinct models a selection of claim items needs, as a graph (a teacher before its
students), each with its store key, state and an estimated cost.

Keys come from ``Bank.model_key`` (through ``kdclaims.launch.targets``), so the plan names exactly the entries a
pytest item or ``kdclaims.launch`` reads. States:

- ``cached``: a complete entry in the store (its manifest exists) or in one of its read-only fallbacks (the
  shipped fixture store of smoke models);
- ``training``: missing, and another process holds the key's lock right now;
- ``missing``: missing and nobody is training it;
- ``weights``: a teacher loaded from a file (nothing to train).

Cost estimate of one model, first that applies (``basis`` says which):

1. ``siblings``: the median ``train_seconds`` of cached entries whose recipe equals this one but for the seed
   (and the teacher's seed);
2. ``similar``: the median seconds per epoch of cached entries with the same architecture, data and tier, times
   this recipe's epochs;
3. ``declared``: ``DECLARED_EPOCH_SECONDS[arch]`` x epochs (the paper's own hardware, gpu tier only);
4. ``unknown``.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kdclaims.store import CheckpointStore, recipe_key

# seconds per epoch of the paper's recipe on the paper's hardware (Appendix A: ResNet-18 and VGG-11 students took
# about 2-3 days for 90-100 ImageNet epochs, Swin-T about 5 days; VGG-11 used two GPUs, Swin-T four)
DECLARED_EPOCH_SECONDS: dict[str, float] = {"resnet18": 2400.0, "vgg11": 2400.0, "vgg11_bn": 2400.0,
                                            "swin_t": 4300.0}
DECLARED_GPUS: dict[str, int] = {"vgg11": 2, "vgg11_bn": 2, "swin_t": 4}


@dataclass
class Node:
    """One distinct model of the plan."""

    key: str
    kind: str  # "teacher" | "student"
    label: str  # claim:name[:seed]
    claim_id: str
    claim_file: str  # the claim file and item that define it (a worker rebuilds its Bank from them)
    item: str
    name: str  # teacher name or arm
    seed: int | None
    arch: str
    deps: list[str] = field(default_factory=list)  # keys that must exist first (the student's teacher)
    weights: str | None = None
    state: str = "missing"
    seconds: float | None = None  # estimated training time
    basis: str = "unknown"
    gpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    nodes: list[Node]  # teachers first, then students; each key once
    store_root: str
    tier: str

    def by_key(self) -> dict[str, Node]:
        return {n.key: n for n in self.nodes}

    def to_train(self) -> list[Node]:
        return [n for n in self.nodes if n.state in ("missing", "training")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for n in self.nodes:
            out[n.state] += 1
        return dict(out)


def build_plan(items: Iterable[Any], ctx: Any, *, with_cost: bool = True) -> Plan:
    """The plan of resolved claim items (``kdclaims.spec.loader.ClaimItem`` with a claim) under ``ctx``."""
    from kdclaims.bank import Bank
    from kdclaims.launch import targets

    seen: dict[str, Node] = {}
    teachers, students = [], []
    for it in items:
        bank = Bank(it.claim, ctx)
        for t in targets(bank, it.setting):
            if t.key in seen:
                continue
            spec = bank.model_key(t.name, t.seed)
            deps = []
            if t.kind == "student" and spec.get("teacher") and spec["teacher"].get("kind") != "weights":
                deps = [recipe_key(spec["teacher"])]
            label = f"{t.claim_id}:{t.name}" + (f":{t.seed}" if t.seed is not None else "")
            node = Node(t.key, t.kind, label, t.claim_id, str(it.file), it.name, t.name, t.seed, spec["arch"],
                        deps, t.weights)
            seen[t.key] = node
            (teachers if t.kind == "teacher" else students).append((node, spec))
    plan = Plan([n for n, _ in teachers + students], str(ctx.store.root), ctx.tier)
    refresh(plan, ctx.store)
    if with_cost:
        estimate(plan, dict((n.key, s) for n, s in teachers + students), ctx.store)
    return plan


def lock_held(store: CheckpointStore, key: str) -> bool:
    """Whether another process holds ``key``'s training lock (tried without waiting, released at once)."""
    path = store.root / "locks" / f"{key}.lock"
    if not path.exists():
        return False
    try:
        with FileLock(str(path), timeout=0):
            return False
    except Timeout:
        return True


def available(store: CheckpointStore, key: str) -> bool:
    """Whether loading ``key`` needs no training: complete in the store or in one of its read-only fallbacks
    (the shipped fixture store of smoke models)."""
    return store.is_complete(key) or any(fb.is_complete(key) for fb in getattr(store, "fallbacks", ()))


def state_of(node: Node, store: CheckpointStore) -> str:
    if node.weights:
        return "weights"
    if available(store, node.key):
        return "cached"
    return "training" if lock_held(store, node.key) else "missing"


def refresh(plan: Plan, store: CheckpointStore) -> Plan:
    """Re-read every node's state from the store."""
    for n in plan.nodes:
        n.state = state_of(n, store)
    return plan


# ------------------------------------------------------------------------------------------------- cost


def _without_seeds(spec: dict[str, Any]) -> str:
    s = {k: v for k, v in spec.items() if k != "seed"}
    if isinstance(s.get("teacher"), dict):
        s["teacher"] = {k: v for k, v in s["teacher"].items() if k != "seed"}
    return json.dumps(s, sort_keys=True, default=str)


def _family(spec: dict[str, Any]) -> tuple:
    data = spec.get("data") or {}
    return spec.get("arch"), json.dumps(data, sort_keys=True, default=str), spec.get("tier")


def _epochs(spec: dict[str, Any]) -> float | None:
    e = (spec.get("recipe") or {}).get("epochs")
    return float(e) if isinstance(e, (int, float)) and e > 0 else None


def _manifests(store: CheckpointStore) -> list[dict[str, Any]]:
    out = []
    for path in (store.root / "ckpt").glob("*/*/manifest.json"):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and isinstance(m.get("recipe"), dict) and \
                isinstance(m.get("train_seconds"), (int, float)):
            out.append(m)
    return out


def estimate(plan: Plan, specs: dict[str, dict[str, Any]], store: CheckpointStore) -> None:
    """Fill ``seconds``, ``basis`` and ``gpus`` of every node (see the module's docstring for the rules)."""
    siblings: dict[str, list[float]] = defaultdict(list)
    per_epoch: dict[tuple, list[float]] = defaultdict(list)
    for m in _manifests(store):
        r = m["recipe"]
        siblings[_without_seeds(r)].append(float(m["train_seconds"]))
        if _epochs(r):
            per_epoch[_family(r)].append(float(m["train_seconds"]) / _epochs(r))
    for n in plan.nodes:
        spec = specs[n.key]
        n.gpus = DECLARED_GPUS.get(n.arch, 1) if plan.tier == "gpu" else 1
        if n.weights:
            n.seconds, n.basis = 0.0, "weights"
        elif siblings.get(_without_seeds(spec)):
            n.seconds, n.basis = statistics.median(siblings[_without_seeds(spec)]), "siblings"
        elif per_epoch.get(_family(spec)) and _epochs(spec):
            n.seconds, n.basis = statistics.median(per_epoch[_family(spec)]) * _epochs(spec), "similar"
        elif plan.tier == "gpu" and n.arch in DECLARED_EPOCH_SECONDS and _epochs(spec):
            n.seconds, n.basis = DECLARED_EPOCH_SECONDS[n.arch] * _epochs(spec), "declared"


# ----------------------------------------------------------------------------------------------- output


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def format_plan(plan: Plan) -> str:
    """One line per model (index, key, state, estimate, label, dependencies), then a summary."""
    index = {n.key: i for i, n in enumerate(plan.nodes)}
    rows = [f"{'#':>4s}  {'key':32s}  {'state':8s}  {'est.':>7s}  model"]
    for i, n in enumerate(plan.nodes):
        after = f"  after #{', #'.join(str(index[d]) for d in n.deps if d in index)}" if n.deps else ""
        gpus = f"  [{n.gpus} GPUs]" if n.gpus > 1 else ""
        extra = f"  ({n.weights})" if n.weights else ""
        rows.append(f"{i:4d}  {n.key}  {n.state:8s}  {_duration(n.seconds):>7s}  {n.label}{extra}{after}{gpus}")
    c = plan.counts()
    todo = plan.to_train()
    known = [n.seconds for n in todo if n.seconds is not None]
    parts = ([f"about {_duration(sum(known))} of training"] if known else []) + \
        ([f"{len(todo) - len(known)} unestimated"] if len(known) < len(todo) else [])
    cost = f"; {' + '.join(parts)}" if todo else ""
    states = ", ".join(f"{c[s]} {s}" for s in ("cached", "training", "missing", "weights") if c.get(s))
    rows.append(f"{len(plan.nodes)} models ({states}) in {plan.store_root}{cost}")
    return "\n".join(rows)


def plan_json(plan: Plan) -> str:
    return json.dumps({"store": plan.store_root, "tier": plan.tier, "counts": plan.counts(),
                       "models": [n.to_dict() for n in plan.nodes]}, indent=1)


def select_items(claims: list[str], tier: str, path: str | None, setting: str | None = None) -> list[Any]:
    """Resolved items of the named claims (all claims when ``claims`` is empty) at ``tier``; ``ValueError``
    naming an unknown claim or invalid files."""
    from kdclaims.cli import _claims_dir
    from kdclaims.spec.loader import load_claims

    files, errors = load_claims([_claims_dir(path)])
    if errors:
        raise ValueError("invalid claim files:\n" + "\n".join(e.format() for e in errors))
    known = {f.claim_id: f for f in files}
    unknown = [c for c in claims if c not in known]
    if unknown:
        raise ValueError(f"no claim {', '.join(unknown)}; claims: {', '.join(sorted(known))}")
    chosen = [known[c] for c in claims] if claims else files
    return [i for f in chosen for i in f.items
            if i.tier == tier and i.claim is not None and (setting is None or i.setting == setting)]


def store_of(cache: str | None) -> CheckpointStore:
    """The store the CLI opens (``--kd-cache``, else ``$KDCLAIMS_CACHE``, else ``.kdclaims/cache``), with the
    fixture store as its fallback, as pytest opens it."""
    import os

    from kdclaims import fixture_store

    root = Path(cache or os.environ.get("KDCLAIMS_CACHE") or ".kdclaims/cache").expanduser()
    return CheckpointStore(root, fallbacks=fixture_store.fallbacks())
