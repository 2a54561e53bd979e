"""The one trainer: any ``Distiller`` on any ``Split`` under a ``Recipe``, resumable, optionally under DDP.

Repeatability: the batch order of epoch ``e`` is ``batch_order(n, seed, e)`` (a generator seeded with
``derive_seed(seed, e, ORDER)``) and every other random stream of the epoch (global RNGs used by dropout or a
method's sampling, the augmentation generator) is re-seeded at the start of the epoch from ``(seed, e, rank)``.
The bank passes ``seed = stream_seed(role, seed)`` (``kdclaims.seeding``), so no student shares a teacher's
streams. An epoch is therefore a function of the state at its start, which is what ``workdir/last.pt`` stores,
so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdclaims.atomic import atomic_save, move_aside
from kdclaims.convergence import plateau_reached
from kdclaims.data.base import Batch, Split
from kdclaims.methods.base import Distiller
from kdclaims.methods.teacher_cache import TeacherCache
from kdclaims.recipe import Recipe
from kdclaims.seeding import derive_seed, seed_everything

logger = logging.getLogger("kdclaims.train")

CHECKPOINT = "last.pt"
_FORMAT = 1
_GLOBAL_STREAM, _AUGMENT_STREAM, _ORDER_STREAM = 0, 1, 2


@dataclass
class TrainResult:
    """What a training run returns.

    ``state_dict``: the student's weights on CPU. ``history``: one dict per epoch with ``epoch`` (1-based),
    ``loss`` (mean over images of the summed losses), ``losses`` (mean of each named loss), ``train_acc``,
    ``lr`` (at the epoch's last step), ``seconds``, ``images_per_s`` and, with a validation split, ``val_acc``.
    ``resumed_from_epoch``: the number of
    epochs loaded from ``workdir/last.pt`` (None for a fresh start). ``steps``: optimizer steps of the whole run.
    """

    state_dict: dict[str, Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    steps: int = 0


# ----------------------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class LRSchedule:
    """``lr(s) = base_lr * factor(s)`` at optimizer step ``s`` (0-based), ``T`` steps in all, ``W`` warmup steps.

    - ``none``: 1; ``step``: ``gamma ** #{m in milestones : m <= s // steps_per_epoch}`` (milestones in epochs);
    - ``cosine``: ``(1 + cos(pi * u)) / 2`` with ``u = (s - W) / (T - W)`` clamped to [0, 1] (reaches 0 at ``s = T``);
    - ``none``/``step``/``cosine`` are multiplied by the linear warmup ``(s + 1) / W`` while ``s < W``;
    - ``onecycle``: a cosine ramp from ``1/25`` to 1 over ``R = W`` steps (``0.3 T`` when ``W = 0``), then a cosine
      anneal from 1 to ``1/(25 * 1e4)`` (torch's ``OneCycleLR`` defaults, momentum not cycled).
    """

    kind: str
    base_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    ONECYCLE_DIV = 25.0
    ONECYCLE_FINAL_DIV = 1e4
    ONECYCLE_PCT = 0.3

    @classmethod
    def from_recipe(cls, recipe: Recipe, steps_per_epoch: int) -> "LRSchedule":
        total = recipe.epochs * steps_per_epoch
        return cls(
            kind=recipe.schedule,
            base_lr=recipe.lr,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            warmup_steps=min(total, round(recipe.warmup_epochs * steps_per_epoch)),
            milestones=tuple(recipe.milestones),
            gamma=recipe.gamma,
        )

    def factor(self, step: int) -> float:
        w, t = self.warmup_steps, self.total_steps
        if self.kind == "onecycle":
            ramp = w if w > 0 else max(1, round(self.ONECYCLE_PCT * t))
            start, end = 1.0 / self.ONECYCLE_DIV, 1.0 / (self.ONECYCLE_DIV * self.ONECYCLE_FINAL_DIV)
            if step < ramp:
                return start + (1.0 - start) * (1.0 - math.cos(math.pi * step / ramp)) / 2.0
            u = min(1.0, (step - ramp) / max(1, t - ramp))
            return end + (1.0 - end) * (1.0 + math.cos(math.pi * u)) / 2.0
        if self.kind == "none":
            f = 1.0
        elif self.kind == "step":
            epoch = step // self.steps_per_epoch
            f = self.gamma ** sum(epoch >= m for m in self.milestones)
        elif self.kind == "cosine":
            u = min(1.0, max(0.0, (step - w) / max(1, t - w)))
            f = (1.0 + math.cos(math.pi * u)) / 2.0
        else:
            raise ValueError(f"unknown schedule '{self.kind}'")
        if step < w:
            f *= (step + 1) / w
        return f

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)


def build_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, L2 weight decay), Adam (L2 weight decay) or AdamW (decoupled weight decay)."""
    if not params:
        raise ValueError("the distiller has no trainable parameters")
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer '{recipe.optimizer}'")


# -------------------------------------------------------------------------------------------- distributed


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``); returns (rank, world, device).

    Backend: NCCL on CUDA, gloo on CPU. A CUDA device without an index becomes ``cuda:LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = _rank_world()
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return rank, world, device


def _all_reduce_sum(t: Tensor, world: int) -> Tensor:
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _reduce_device(device: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _TrainStep(nn.Module):
    """Routes ``forward`` to ``distiller.forward_train`` so that DDP's forward (which arms the gradient
    all-reduce) covers every trainable part of the distiller: student, regressors, heads."""

    def __init__(self, distiller: Distiller, cache: TeacherCache | None = None):
        super().__init__()
        self.distiller, self.cache = distiller, cache

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.cache is None or rows is None:
            return self.distiller.forward_train(x, y, index)
        with self.distiller.cached_teacher(self.cache, rows):
            return self.distiller.forward_train(x, y, index)


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's contiguous share of a global batch."""
    if world == 1:
        return batch
    part = torch.tensor_split(torch.arange(len(batch.y)), world)[rank]
    lo, hi = int(part[0]), int(part[-1]) + 1
    return Batch(batch.x[lo:hi], batch.y[lo:hi], batch.index[lo:hi])


# ------------------------------------------------------------------------------------------------ checkpoint


def _meta(recipe: Recipe, seed: int, split: Split, steps_per_epoch: int) -> dict[str, Any]:
    return {
        "seed": int(seed),
        "recipe": json.dumps(recipe.key(), sort_keys=True),
        "images": len(split),
        "steps_per_epoch": steps_per_epoch,
    }


def order_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch ``epoch`` (0-based): ``manual_seed(derive_seed(seed, epoch, ORDER))``."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, _ORDER_STREAM))


def batch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The order in which a run with ``seed`` visits the ``n`` training images in epoch ``epoch``."""
    return torch.randperm(n, generator=order_generator(seed, epoch))


class DamagedCheckpoint(Exception):
    """A resume checkpoint that cannot be read (truncated, zeroed, not a torch file)."""


def _load_checkpoint(path: Path, device: torch.device, meta: dict[str, Any]) -> dict[str, Any]:
    """The resume state at ``path``. A file that cannot be read is ``DamagedCheckpoint``; one that would need
    unpickling beyond plain tensors (``pickle.UnpicklingError``) is refused as it is, never set aside."""
    import pickle

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, KeyError, ... by format
        raise DamagedCheckpoint(f"{path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f"{path}: holds a {type(state).__name__}, not a resume state")
    if state.get("format") != _FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    if state["meta"] != meta:
        diff = {k: (state["meta"].get(k), v) for k, v in meta.items() if state["meta"].get(k) != v}
        raise ValueError(f"{path} belongs to another run (stored vs requested: {diff}); remove it or use another workdir")
    return state


def _set_aside(path: Path, exc: Exception) -> None:
    """Move a damaged resume checkpoint aside (``<name>.damaged-*``, kept for inspection) and warn; the run starts
    from epoch 0. Under DDP every rank sees the damage; the first rename wins, the others find it gone."""
    try:
        name = move_aside(path, "damaged").name
    except FileNotFoundError:
        name = "(by another rank)"
    warnings.warn(f"resume checkpoint unreadable, set aside {name}; training from the start ({exc})",
                  RuntimeWarning, stacklevel=4)


# ------------------------------------------------------------------------------------------------ training


def _build_augment(specs: tuple[dict[str, Any], ...]) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    if not specs:
        return None
    from kdclaims.data.transforms import build_augment  # imported lazily: only runs that augment need it

    return build_augment(list(specs))


def _apply_label_smoothing(distiller: Distiller, value: float) -> Callable[[], None]:
    """Give ``Recipe.label_smoothing`` to a distiller whose CE reads a ``label_smoothing`` attribute; returns an
    undo function. Warns when the recipe asks for smoothing that the method cannot apply."""
    if not hasattr(distiller, "label_smoothing"):
        if value > 0:
            warnings.warn(
                f"recipe.label_smoothing={value} is ignored: {type(distiller).__name__} has no label_smoothing attribute",
                stacklevel=3,
            )
        return lambda: None
    had_own = "label_smoothing" in vars(distiller)
    previous = vars(distiller).get("label_smoothing")
    distiller.label_smoothing = value

    def undo() -> None:
        if had_own:
            distiller.label_smoothing = previous
        else:
            del distiller.label_smoothing

    return undo


def _check_teacher_excluded(distiller: Distiller, params: list[nn.Parameter]) -> None:
    teacher = distiller.teacher
    if teacher is not None:
        shared = {id(p) for p in teacher.parameters()} & {id(p) for p in params}
        if shared:
            raise RuntimeError(f"{len(shared)} teacher parameter(s) among the trainable parameters")


def _data_device(split, device: torch.device) -> torch.device:
    """Where a split's batches are made: tensors stay where they live (possibly the GPU); a split that decodes on
    the device it feeds (``decodes_on_device``) makes them on ``device``; other folder-backed splits on the CPU."""
    if getattr(split, "decodes_on_device", False):
        return device
    x = split.__dict__.get("x") if hasattr(split, "__dict__") else None
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def train(
    distiller: Distiller,
    split: Split,
    recipe: Recipe,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    workdir: Path | None = None,
    progress: bool = False,
    desc: str = "",
    validation: Split | None = None,
    teacher_cache: bool = True,
) -> TrainResult:
    """Train ``distiller``'s trainable parameters on ``split`` under ``recipe``; returns the student's weights.

    Each step minimises ``sum(losses.values())`` of ``distiller.forward_train(x, y, index)`` over a batch of
    ``recipe.batch_size`` images (the last partial batch is dropped when the split holds a full one), at most
    ``recipe.max_steps`` steps per epoch. Under torchrun (``WORLD_SIZE > 1``) every rank draws the same global
    batch order and trains on its contiguous ``batch_size // world_size`` share; DDP averages the gradients.
    With ``workdir``, ``workdir/last.pt`` is written atomically after every epoch (rank 0) and a run finding it
    resumes after its last complete epoch. The global RNGs are re-seeded at each epoch start (see module doc).
    On CUDA: bf16 autocast when ``recipe.amp``, channels-last model and inputs when ``recipe.channels_last``.
    With ``validation`` (images held out of ``split``), each epoch's record has ``val_acc``; an ``early_stop``
    convergence rule in the recipe ends training at the first epoch where its plateau is reached.
    Without augmentation (and with ``teacher_cache``), the teacher's outputs over ``split`` are computed once and
    looked up by image index (``kdclaims.methods.teacher_cache``); with augmentation the teacher runs every step.
    """
    rank, world, device = _setup_distributed(torch.device(device))
    drop_last, steps_per_epoch = _epoch_size(split, recipe, world)
    cuda = device.type == "cuda"
    run = _Run(distiller=distiller, split=split, recipe=recipe, seed=seed, device=device, rank=rank, world=world,
               drop_last=drop_last, steps_per_epoch=steps_per_epoch, desc=desc, validation=validation,
               schedule=LRSchedule.from_recipe(recipe, steps_per_epoch),
               memory_format=torch.channels_last if cuda and recipe.channels_last else None,
               augment=_build_augment(recipe.augment),
               autocast=torch.autocast("cuda", dtype=torch.bfloat16) if cuda and recipe.amp else None)
    distiller.to(device)
    if run.memory_format is not None:
        distiller.to(memory_format=run.memory_format)
    run.params = list(distiller.trainable_parameters())
    _check_teacher_excluded(distiller, run.params)
    run.optimizer = build_optimizer(run.params, recipe)
    run.meta = _meta(recipe, seed, split, steps_per_epoch)
    run.ckpt = Path(workdir) / CHECKPOINT if workdir is not None else None
    start_epoch, history, resumed = _resume(run)
    step = start_epoch * steps_per_epoch
    run.module = _wrap(run, _teacher_cache(distiller, split, run.augment, device) if teacher_cache else None)
    undo_smoothing = _apply_label_smoothing(distiller, recipe.label_smoothing)
    run.bar = _progress_bar(progress and rank == 0, recipe.epochs * steps_per_epoch, step, desc)
    try:
        for epoch in range(start_epoch, recipe.epochs):
            if _stop_early(recipe, history):
                logger.info("%sstopped after epoch %d: %s", _prefix(desc), epoch, recipe.convergence)
                break
            record, step = _train_epoch(run, epoch, step)
            history.append(record)
            _log_and_save(run, record, history)
    finally:
        run.bar.close()
        undo_smoothing()
    if world > 1:
        dist.barrier()
    distiller.eval()
    student = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in distiller.student.state_dict().items()}
    return TrainResult(state_dict=student, history=history, resumed_from_epoch=resumed, steps=step)


@dataclass
class _Run:
    """What every epoch of one ``train`` call needs (settings fixed at the start, parts built once)."""

    distiller: Distiller
    split: Split
    recipe: Recipe
    seed: int
    device: torch.device
    rank: int
    world: int
    drop_last: bool
    steps_per_epoch: int
    desc: str
    validation: Split | None
    schedule: LRSchedule
    memory_format: torch.memory_format | None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None
    autocast: Any
    params: list[nn.Parameter] = field(default_factory=list)
    optimizer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    ckpt: Path | None = None
    module: nn.Module | None = None
    bar: Any = None


def _epoch_size(split: Split, recipe: Recipe, world: int) -> tuple[bool, int]:
    """(drop the last partial batch?, steps per epoch); refuses batch sizes and splits the ranks cannot share."""
    if recipe.batch_size % world:
        raise ValueError(f"batch size {recipe.batch_size} is not divisible by the world size {world}")
    if len(split) < world:
        raise ValueError(f"split {split.name} has {len(split)} images, fewer than the {world} ranks")
    drop_last = len(split) >= recipe.batch_size
    steps = split.num_batches(recipe.batch_size, drop_last=drop_last)
    return drop_last, steps if recipe.max_steps is None else min(steps, recipe.max_steps)


def _resume(run: _Run) -> tuple[int, list[dict[str, Any]], int | None]:
    """(first epoch to train, history so far, epochs resumed or None) from ``run.ckpt`` when it holds a state."""
    if run.ckpt is None or not run.ckpt.exists():
        return 0, [], None
    try:
        state = _load_checkpoint(run.ckpt, run.device, run.meta)
    except DamagedCheckpoint as exc:
        _set_aside(run.ckpt, exc)
        return 0, [], None
    run.distiller.load_state_dict(state["distiller"])
    run.optimizer.load_state_dict(state["optimizer"])
    epoch = int(state["epoch"])
    logger.info("%sresumed from %s after epoch %d", _prefix(run.desc), run.ckpt, epoch)
    return epoch, list(state["history"]), epoch


def _wrap(run: _Run, cache: TeacherCache | None) -> nn.Module:
    """The module a step calls: the distiller's ``forward_train`` (with the teacher cache), under DDP if ranked."""
    module: nn.Module = _TrainStep(run.distiller, cache)
    if run.world > 1:
        cuda = run.device.type == "cuda"
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[run.device.index] if cuda else None, gradient_as_bucket_view=True
        )
    return module


def _train_epoch(run: _Run, epoch: int, step: int) -> tuple[dict[str, Any], int]:
    """One epoch from freshly seeded streams; returns its history record and the step count after it."""
    run.distiller.train()
    seed_everything(derive_seed(run.seed, epoch, _GLOBAL_STREAM, run.rank))
    g_aug = None
    if run.augment is not None:
        g_aug = torch.Generator(device=run.device).manual_seed(derive_seed(run.seed, epoch, _AUGMENT_STREAM, run.rank))
    meter = _Meter(run.device)
    tic = time.perf_counter()
    batches = run.split.batches(run.recipe.batch_size, shuffle=True, generator=order_generator(run.seed, epoch),
                                drop_last=run.drop_last, device=_data_device(run.split, run.device))
    for batch in itertools.islice(batches, run.steps_per_epoch):
        _train_step(run, batch, step, g_aug, meter)
        step += 1
        run.bar.update(1)
        if not run.bar.disable and run.bar.n % max(1, run.steps_per_epoch // 10) == 0:
            run.bar.set_postfix(epoch=epoch + 1, **meter.running())
    summary = meter.summary(run.world)
    seconds = time.perf_counter() - tic
    images = summary.pop("images")
    record = {"epoch": epoch + 1, **summary, "lr": run.schedule.lr(step - 1), "seconds": seconds,
              "images_per_s": images / max(seconds, 1e-9)}
    if run.validation is not None:
        record["val_acc"] = evaluate(run.distiller.student, run.validation, device=run.device)
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"{_prefix(run.desc)}non-finite loss {record['loss']} in epoch {epoch + 1}")
    return record, step


def _train_step(run: _Run, batch: Batch, step: int, g_aug: torch.Generator | None, meter: "_Meter") -> None:
    """One optimizer step on this rank's share of ``batch`` at the schedule's learning rate for ``step``."""
    x, y, index = (t.to(run.device, non_blocking=True) for t in _shard(batch, run.rank, run.world))
    if run.augment is not None:
        x = run.augment(x, g_aug)
    if run.memory_format is not None:
        x = x.contiguous(memory_format=run.memory_format)
    for group in run.optimizer.param_groups:
        group["lr"] = run.schedule.lr(step)
    with run.autocast or contextlib.nullcontext():
        logits, losses = run.module(x, y, index if run.distiller.needs_index else None, index)
    loss = torch.stack([v.float() for v in losses.values()]).sum()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.recipe.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.params, run.recipe.grad_clip)
    run.optimizer.step()
    meter.add(loss, losses, logits, y)


def _log_and_save(run: _Run, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Rank 0 logs the epoch and writes the resume checkpoint atomically."""
    if run.rank != 0:
        return
    logger.info(
        "%sepoch %d/%d loss %.4f %s acc %.4f lr %.3g %.1f s %.0f img/s",
        _prefix(run.desc), record["epoch"], run.recipe.epochs, record["loss"],
        " ".join(f"{k} {v:.4f}" for k, v in record["losses"].items()),
        record["train_acc"], record["lr"], record["seconds"], record["images_per_s"],
    )
    if run.ckpt is not None:
        atomic_save({"format": _FORMAT, "meta": run.meta, "epoch": record["epoch"],
                     "distiller": run.distiller.state_dict(), "optimizer": run.optimizer.state_dict(),
                     "history": history}, run.ckpt)


def _teacher_cache(distiller: Distiller, split: Split, augment, device: torch.device) -> TeacherCache | None:
    """A cache of the teacher's outputs when every batch is exactly the split's images (in-memory, no augment)."""
    if distiller.teacher is None or augment is not None or not isinstance(split, Split):
        return None
    return TeacherCache(distiller.teacher, split.x, device)


def _stop_early(recipe: Recipe, history: list[dict[str, Any]]) -> bool:
    rule = recipe.convergence
    return rule is not None and rule.stops_training and plateau_reached(history, rule)


def _prefix(desc: str) -> str:
    return f"{desc}: " if desc else ""


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc or "train", unit="step", disable=not enabled, leave=False)


class _Meter:
    """Sums over an epoch kept on the device (no host sync per step): loss, named losses, correct, images."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss = torch.zeros((), device=device)
        self.named: dict[str, Tensor] = {}
        self.correct = torch.zeros((), device=device)
        self.images = 0

    def add(self, loss: Tensor, losses: dict[str, Tensor], logits: Tensor, y: Tensor) -> None:
        n = len(y)
        self.loss += loss.detach() * n
        for k, v in losses.items():
            self.named[k] = self.named.get(k, torch.zeros((), device=self.device)) + v.detach().float() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.images += n

    def running(self) -> dict[str, str]:
        n = max(self.images, 1)
        return {"loss": f"{self.loss.item() / n:.4f}", "acc": f"{self.correct.item() / n:.3f}"}

    def summary(self, world: int) -> dict[str, Any]:
        """Means over the images of all ranks."""
        names = sorted(self.named)
        sums = torch.stack([self.loss, self.correct.float(), torch.tensor(float(self.images), device=self.device)]
                           + [self.named[k] for k in names]).double()
        sums = _all_reduce_sum(sums.to(_reduce_device(self.device)), world).tolist()
        images = sums[2]
        n = max(images, 1.0)
        return {
            "loss": sums[0] / n,
            "losses": {k: s / n for k, s in zip(names, sums[3:])},
            "train_acc": sums[1] / n,
            "images": int(images),
        }


# ---------------------------------------------------------------------------------------------- evaluation


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def predict(
    model: nn.Module, split: Split, batch_size: int = 512, device: str | torch.device | None = None
) -> Tensor:
    """``argmax model(x)`` for every image of ``split`` in order, on CPU (int64); eval mode, inference mode.

    Every module's train/eval mode is restored afterwards. ``device`` defaults to the model's.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            preds = [
                model(b.x.to(device, non_blocking=True)).argmax(1).cpu()
                for b in split.batches(batch_size, device=_data_device(split, device))
            ]
    finally:
        for m, mode in modes.items():
            m.training = mode
    return torch.cat(preds).clone() if preds else torch.empty(0, dtype=torch.long)


def evaluate(
    model: nn.Module, split: Split, *, batch_size: int = 512, device: str | torch.device | None = None
) -> float:
    """Top-1 accuracy ``mean_i [argmax model(x_i) = y_i]``; under DDP each rank predicts every ``world``-th image
    and the counts are summed over ranks."""
    rank, world = _rank_world()
    part = split if world == 1 else split.subset(torch.arange(rank, len(split), world))
    preds = predict(model, part, batch_size, device)
    counts = torch.tensor([float((preds == part.y.cpu()).sum()), float(len(part))], dtype=torch.float64)
    dev = torch.device(device) if device is not None else _model_device(model)
    counts = _all_reduce_sum(counts.to(_reduce_device(dev)), world).cpu()
    return float(counts[0] / counts[1]) if counts[1] > 0 else float("nan")


__all__ = ("TrainResult", "LRSchedule", "build_optimizer", "train", "predict", "evaluate", "CHECKPOINT", "batch_order")
