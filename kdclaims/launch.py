"""Train one model of a claim item into the checkpoint store, alone or as one DDP job under ``torchrun``.

    torchrun --nproc-per-node 8 -m kdclaims.launch accuracy-gain --tier gpu --setting resnet50-resnet18 \\
        --arm kl --seed 0 --kd-data ROOT --kd-weights DIR --kd-cache DIR
    python -m kdclaims.launch accuracy-gain --tier gpu --setting vgg19-vgg11 --teacher teacher ...
    python -m kdclaims.launch accuracy-gain --tier gpu --setting vgg19-vgg11 --list      # every model, key, state
    python -m kdclaims.launch all --tier gpu --list > plan.txt                              # every claim's models
    python -m kdclaims.launch all --tier gpu --key "$(awk -v i=$SLURM_ARRAY_TASK_ID '$1==i {print $2}' plan.txt)"

The model is built and trained by the same ``Bank`` a pytest item uses, so it lands under the same store key and
a later ``pytest`` run of the item loads it (its model event reads ``cache``). A student whose teacher is not in
the store yet trains that teacher first (same job, same ranks).

Under torchrun (``WORLD_SIZE > 1``) the store is wrapped in a ``RankedStore``: rank 0 alone takes the store's
lock, checks the cache and commits; the other ranks follow rank 0's announcement over a gloo control group and
either train beside it (the trainer's DDP collectives pair them) or read the finished entry. Multi-node jobs need
the store on a filesystem every node sees (every rank resumes from rank 0's ``last.pt``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdclaims.store import CheckpointStore, StoreError, recipe_key
from kdclaims.train import CHECKPOINT

EXIT_USAGE = 2
CONTROL_MARGIN_S = 3600  # the control group outlives the store's lock timeout by this much

Channel = Callable[[Any], Any]  # rank 0: send(msg) -> msg; other ranks: send(None) -> rank 0's msg


# ------------------------------------------------------------------------------------------ the ranked store


class RankedStore:
    """A ``CheckpointStore`` as one rank of a DDP job sees it (``get_or_train`` only, as ``Bank`` needs).

    Rank 0 runs ``CheckpointStore.get_or_train``; every call sends exactly one message to the other ranks:
    ``("train", key, resume)`` just before it trains (holding the key's lock; ``resume``: whether ``last.pt``
    exists), ``("hit", key)`` after a cache hit, ``("error", key, text)`` when it fails before training. The other
    ranks never take a lock or write: on ``train`` they run the same ``train_fn`` on the entry's work folder,
    on ``hit`` they load the entry, on ``error`` they raise ``StoreError``.
    """

    def __init__(self, inner: CheckpointStore, rank: int, channel: Channel):
        self.inner, self.rank, self.channel = inner, rank, channel
        self.hits = 0
        self.trained = 0

    def __getattr__(self, name: str) -> Any:  # read-only helpers (entry, is_complete, load, ...) of the store
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def get_or_train(
        self,
        recipe: dict[str, Any],
        train_fn: Callable[[Path], dict[str, torch.Tensor]],
        *,
        label: str = "",
        on_corrupt: str = "retrain",
    ) -> tuple[dict[str, torch.Tensor], bool]:
        key = recipe_key(recipe)
        if self.rank == 0:
            state, hit = self._lead(key, recipe, train_fn, label, on_corrupt)
        else:
            state, hit = self._follow(key, train_fn, label)
        if hit:
            self.hits += 1
        else:
            self.trained += 1
        return state, hit

    def _lead(self, key, recipe, train_fn, label, on_corrupt) -> tuple[dict[str, torch.Tensor], bool]:
        announced = False

        def announce_and_train(workdir: Path) -> dict[str, torch.Tensor]:
            nonlocal announced
            announced = True
            self.channel(("train", key, (Path(workdir) / CHECKPOINT).is_file()))
            return train_fn(workdir)

        try:
            state, hit = self.inner.get_or_train(recipe, announce_and_train, label=label, on_corrupt=on_corrupt)
        except BaseException as e:
            if not announced:  # the others wait for a word; once training started, DDP's failure reaches them
                self.channel(("error", key, f"{type(e).__name__}: {e}"))
            raise
        if not announced:
            self.channel(("hit", key))
        return state, hit

    def _follow(self, key, train_fn, label) -> tuple[dict[str, torch.Tensor], bool]:
        msg = self.channel(None)
        name = label or key[:12]
        if msg[1] != key:
            raise RuntimeError(f"rank {self.rank} asked for {name} ({key[:12]}) but rank 0 announced {msg[1][:12]}: "
                               "the ranks diverged (different claim files or options?)")
        if msg[0] == "hit":
            return self.inner.load(key), True
        if msg[0] == "train":
            workdir = self.inner.entry(key) / "work"
            if msg[2] and not (workdir / CHECKPOINT).is_file():
                raise StoreError(f"rank 0 resumes {name} from {workdir / CHECKPOINT} but rank {self.rank} cannot see "
                                 "it: put --kd-cache on a filesystem every node shares")
            return train_fn(workdir), False
        raise StoreError(f"rank 0 could not produce {name}: {msg[2]}")


def broadcast_channel(group: Any) -> Channel:
    """A ``Channel`` over ``torch.distributed`` (rank 0 is the source)."""
    import torch.distributed as dist

    def send(msg: Any) -> Any:
        box = [msg]
        dist.broadcast_object_list(box, src=0, group=group)
        return box[0]

    return send


# --------------------------------------------------------------------------------------------- the targets


@dataclass(frozen=True)
class Target:
    """One trainable (or loadable) model of a claim item."""

    claim_id: str
    setting: str | None
    kind: str  # "teacher" | "student"
    name: str  # teacher name or arm
    seed: int | None
    key: str  # the store key (``recipe_key`` of ``Bank.model_key``)
    weights: str | None = None  # a teacher loaded from a file: nothing to train

    def flags(self) -> str:
        where = f"{self.claim_id}" + (f" --setting {self.setting}" if self.setting else "")
        what = f"--teacher {self.name}" if self.kind == "teacher" else f"--arm {self.name} --seed {self.seed}"
        return f"{where} {what}"


def targets(bank: Any, setting: str | None = None) -> list[Target]:
    """Every model of one item in a stable order: teachers (declaration order), then arms x seeds."""
    cid = bank.claim.id
    out = []
    for t in bank.teachers:
        k = bank.model_key(t)
        weights = k.get("weights") if k.get("kind") == "weights" else None
        out.append(Target(cid, setting, "teacher", t, None, recipe_key(k), weights))
    for arm in bank.arms:
        for s in bank.seeds:
            out.append(Target(cid, setting, "student", arm, s, recipe_key(bank.model_key(arm, s))))
    return out


def plan(banks: list[tuple[Any, str | None]]) -> list[tuple[Any, Target]]:
    """The distinct models (by store key) of several items: every teacher first, then every student, each in
    item order. A key shared by items (the same model in two claims) appears once, with its first item."""
    seen: set[str] = set()
    teachers, students = [], []
    for bank, setting in banks:
        for t in targets(bank, setting):
            if t.key not in seen:
                seen.add(t.key)
                (teachers if t.kind == "teacher" else students).append((bank, t))
    return teachers + students


def state_of(target: Target, store: CheckpointStore) -> str:
    """``weights`` (loaded from a file), ``cached`` (in the store) or ``missing``."""
    if target.weights:
        return "weights"
    return "cached" if store.is_complete(target.key) else "missing"


def select(entries: list[tuple[Any, Target]], args: argparse.Namespace) -> tuple[Any, Target]:
    """The entry named by ``--index`` or by ``--teacher`` / ``--arm --seed``; ``ValueError`` naming the choices."""
    if args.key is not None:
        found = [e for e in entries if e[1].key.startswith(args.key)]
        if len(found) != 1:
            raise ValueError(f"--key {args.key} matches {len(found)} of the {len(entries)} models (see --list); "
                             "the claims may have changed since the list was written")
        return found[0]
    if args.index is not None:
        if not 0 <= args.index < len(entries):
            raise ValueError(f"--index {args.index} is out of range: {len(entries)} models (0..{len(entries) - 1}; "
                             "see --list)")
        return entries[args.index]
    banks = list({id(b): b for b, _ in entries}.values())
    if len(banks) != 1:
        raise ValueError(f"{len(banks)} items match: pass --setting (or use --index with --list)")
    bank = banks[0]
    if args.teacher is not None:
        for b, t in entries:
            if t.kind == "teacher" and t.name == args.teacher:
                return b, t
        raise ValueError(f"no teacher '{args.teacher}'; teachers: {list(bank.teachers)}")
    if args.seed is None:
        raise ValueError(f"--arm {args.arm} needs --seed; seeds: {list(bank.seeds)}")
    for b, t in entries:
        if t.kind == "student" and t.name == args.arm and t.seed == args.seed:
            return b, t
    if args.arm not in bank.arms:
        raise ValueError(f"no arm '{args.arm}'; arms: {list(bank.arms)}")
    raise ValueError(f"seed {args.seed} is not a seed of this item (a pytest run would never read it); "
                     f"seeds: {list(bank.seeds)}")


# ----------------------------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdclaims.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("claim", help="claim id (see `kdclaims list`), or 'all' with --list, --index or --key")
    p.add_argument("--tier", default="gpu", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--setting", help="the teacher->student setting (with --arm/--teacher when there are several)")
    p.add_argument("--path", help="claims folder (default: ./claims, else the package's)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--arm", help="train this arm's student (with --seed)")
    what.add_argument("--teacher", metavar="NAME", help="train this teacher (e.g. 'teacher')")
    what.add_argument("--index", type=int, help="train the N-th model of --list (0-based; for job arrays)")
    what.add_argument("--key", help="train the model whose store key starts with this (from --list; for job arrays)")
    what.add_argument("--list", action="store_true", help="print every distinct model, its flags, store key and state")
    p.add_argument("--seed", type=int, help="the student's seed (one of the claim's seeds)")
    p.add_argument("--kd-data", metavar="ROOT")
    p.add_argument("--kd-weights", metavar="DIR")
    p.add_argument("--kd-cache", metavar="DIR", help="checkpoint store (default .kdclaims/cache or $KDCLAIMS_CACHE)")
    p.add_argument("--kd-device", metavar="DEV", help="default: cuda:LOCAL_RANK for the gpu tier when CUDA exists")
    p.add_argument("--kd-recipe", choices=("paper", "fast"), default="paper", help="as pytest's --kd-recipe")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _device(arg: str | None, tier: str, local_rank: int) -> torch.device:
    if arg:
        dev = torch.device(arg)
    else:
        dev = torch.device("cuda" if tier == "gpu" and torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _init_distributed(device: torch.device, lock_timeout: float) -> Any:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); returns a gloo control group whose timeout
    outlasts the store's lock wait (rank 0 may wait for another process to finish the same model)."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    timeout = datetime.timedelta(seconds=lock_timeout + CONTROL_MARGIN_S)
    return dist.new_group(backend="gloo", timeout=timeout)


def _items(args: argparse.Namespace) -> list[Any]:
    """The resolved claim items of ``args.claim`` (every claim for 'all') at ``--tier`` (and ``--setting``)."""
    from kdclaims.cli import _claims_dir, _find
    from kdclaims.spec.loader import load_claims

    if args.claim == "all":
        files, errors = load_claims([_claims_dir(args.path)])
        if errors:
            raise ValueError("invalid claim files:\n" + "\n".join(e.format() for e in errors))
    else:
        files = [_find(args.claim, args.path)]
    items = [i for f in files for i in f.items
             if i.tier == args.tier and i.claim is not None and (args.setting is None or i.setting == args.setting)]
    if not items:
        which = f" with setting {args.setting}" if args.setting else ""
        raise ValueError(f"no {args.tier} item of {args.claim}{which} (the tier may be absent; see `kdclaims list`)")
    return items


def run(args: argparse.Namespace) -> int:
    """Train (or find) the selected model; returns an exit code."""
    from kdclaims.bank import Bank, RunContext
    from kdclaims.registries import load_all
    from kdclaims.runner import missing_requirements

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.claim == "all" and not (args.list or args.index is not None or args.key is not None):
        raise ValueError("'all' goes with --list, --index or --key")
    load_all()
    cache = Path(args.kd_cache or os.environ.get("KDCLAIMS_CACHE") or ".kdclaims/cache").expanduser()
    store = CheckpointStore(cache)  # every rank: creates the folders if needed, takes no lock
    device = _device(args.kd_device, args.tier, local_rank)
    ctx = RunContext(store=store, tier=args.tier, data_root=_p(args.kd_data), weights_dir=_p(args.kd_weights),
                     device=device, progress=rank == 0 and not args.quiet, recipe_mode=args.kd_recipe)
    entries = plan([(Bank(i.claim, ctx), i.setting) for i in _items(args)])
    if args.list:
        if rank == 0:
            for i, (_, t) in enumerate(entries):  # index, key, state, then the flags that select it
                extra = f"  ({t.weights})" if t.weights else ""
                print(f"{i:4d}  {t.key}  {state_of(t, store):7s}  {t.flags()}{extra}")
            n_teachers = sum(t.kind == "teacher" and not t.weights for _, t in entries)
            n_missing = sum(state_of(t, store) == "missing" for _, t in entries)
            print(f"{len(entries)} models: {n_teachers} teachers to train, "
                  f"{sum(t.kind == 'student' for _, t in entries)} students; {n_missing} missing from {cache}")
        return 0
    bank, target = select(entries, args)
    claim = bank.claim
    missing = missing_requirements(claim, ctx)
    if missing:
        raise ValueError("cannot train here, needs: " + "; ".join(missing))
    if target.weights:
        if rank == 0:
            print(f"kdclaims.launch: {claim.id}[{args.tier}] {target.name} loads weights {target.weights}; "
                  "nothing to train")
        return 0

    control = None
    if world > 1:
        control = _init_distributed(device, store.lock_timeout)
        ctx.store = RankedStore(store, rank, broadcast_channel(control))
    t0 = time.time()
    try:
        bank.model(target.name, target.seed)
        if control is not None:
            import torch.distributed as dist

            dist.barrier(group=control)  # rank 0 has committed before anyone reports success
    finally:
        if control is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        for e in bank.events:
            who = e["model"] if e["seed"] is None else f"{e['model']} seed {e['seed']}"
            print(f"kdclaims.launch: {claim.id}[{args.tier}] {who}: {e['source']} "
                  f"({str(e.get('key', ''))[:12]}) on {world} rank(s), device {device.type}")
        print(f"kdclaims.launch: done in {time.time() - t0:.1f}s; store {cache}")
    return 0


def _p(v: str | None) -> Path | None:
    return Path(v).expanduser() if v else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING,
                        format=f"[rank {rank}] %(name)s: %(message)s")
    if args.arm is None and args.seed is not None:
        print("kdclaims.launch: --seed goes with --arm", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except (ValueError, FileNotFoundError, StoreError) as e:
        print(f"kdclaims.launch: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # the CLI's claim lookup exits with a message
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
