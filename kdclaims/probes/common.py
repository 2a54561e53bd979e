"""Plumbing shared by the probes: strict parameters, batched predictions, iteration over the bank's models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from kdclaims.probes.base import ModelBank

# Keys every probe accepts: the probe's name and image cap (consumed by the runner and the bank), the evaluation
# data (resolved by the bank) and the batch size.
COMMON_PARAMS = ("name", "data", "images", "batch_size")
DEFAULT_BATCH = 256
log = logging.getLogger(__name__)
T = TypeVar("T")


def check_params(
    probe: str, params: Mapping[str, Any], optional: Iterable[str] = (), required: Iterable[str] = ()
) -> None:
    """Raise ``ValueError`` naming ``probe`` and its accepted parameters on an unknown or a missing key."""
    optional, required = tuple(optional), tuple(required)
    accepted = [*required, *optional, *COMMON_PARAMS]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"probe '{probe}' got unknown parameter(s) {unknown}; accepted: {accepted}")
    missing = [k for k in required if params.get(k) is None]
    if missing:
        raise ValueError(f"probe '{probe}' needs parameter(s) {missing}; accepted: {accepted}")


def batch_size(probe: str, params: Mapping[str, Any]) -> int:
    """``params['batch_size']`` (default 256), a positive int."""
    b = params.get("batch_size", DEFAULT_BATCH)
    if not isinstance(b, int) or isinstance(b, bool) or b < 1:
        raise ValueError(f"probe '{probe}': batch_size must be a positive int, got {b!r}")
    return b


def as_float_list(probe: str, name: str, value: Any) -> list[float]:
    """A YAML number or list of numbers as a list of floats (for sweeps)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"probe '{probe}': {name} must be a number or a list of numbers, got {value!r}") from None
    if not out:
        raise ValueError(f"probe '{probe}': {name} is empty")
    return out


def fmt(v: float) -> str:
    """A sweep value as it appears in a sub-metric name: ``0.4``, ``8``, ``0.0157``."""
    return f"{v:g}"


def model_device(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of a model's first parameter or buffer."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(default)


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA running out of memory (the typed error, or the older ``RuntimeError`` text)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _retries_oom(device: torch.device | str) -> bool:
    """Whether computations on ``device`` retry a CUDA OOM with smaller batches (CUDA only)."""
    return torch.device(device).type == "cuda"


def _check_oom(probe: str, batch: int, exc: BaseException, cuda: bool) -> None:
    """Re-raise ``exc`` unless it is a CUDA OOM with room to shrink; ``MemoryError`` naming the probe at batch 1."""
    if not (cuda and is_cuda_oom(exc)):
        raise exc
    if batch <= 1:
        raise MemoryError(
            f"probe '{probe}': out of CUDA memory even with a batch of 1 image; free the GPU or use a smaller model"
        ) from exc


def _shrink(probe: str, batch: int) -> int:
    """Half of ``batch`` after releasing the cached blocks (called once the failed step's tensors are gone)."""
    torch.cuda.empty_cache()
    smaller = max(1, batch // 2)
    log.warning("probe '%s': out of CUDA memory with a batch of %d; retrying with %d", probe, batch, smaller)
    return smaller


def over_slices(n: int, batch: int, fn: Callable[[slice], None], device: torch.device | str, probe: str) -> int:
    """Call ``fn(slice)`` on consecutive slices covering ``range(n)``, each at most ``batch`` long.

    On CUDA, a slice that runs out of memory is retried at half the size (down to one image) and later slices keep
    the smaller size; ``fn`` must give the same results for any cut of the slices (what a failed slice wrote is
    overwritten by its retry). Returns the
    batch size in use at the end. Errors other than a CUDA OOM, and any error on the CPU, propagate unchanged.
    """
    cuda = _retries_oom(device)
    start = 0
    while start < n:
        sl = slice(start, min(start + batch, n))
        try:
            fn(sl)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            _check_oom(probe, batch, exc, cuda)
        else:
            start = sl.stop
            continue
        batch = _shrink(probe, batch)  # outside the handler: the traceback no longer pins the failed batch
    return batch


def with_smaller_batches(
    fn: Callable[[int], T], batch: int, device: torch.device | str, probe: str
) -> tuple[T, int]:
    """``(fn(batch), batch)``; on a CUDA OOM, ``fn`` again from the start with half the batch (down to one image),
    returning the batch that fitted. For computations that stream a split in batches and cannot resume mid-way
    (a DataLoader over image files)."""
    cuda = _retries_oom(device)
    while True:
        try:
            return fn(batch), batch
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            _check_oom(probe, batch, exc, cuda)
        batch = _shrink(probe, batch)


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, batch: int = DEFAULT_BATCH, probe: str = "predict") -> Tensor:
    """``argmax_c model(x)_c`` for each image (int64, on the CPU), in batches of ``batch`` on the model's device
    (smaller ones after a CUDA OOM, see ``over_slices``)."""
    device = model_device(model)
    out = torch.empty(len(x), dtype=torch.long)

    def run(sl: slice) -> None:
        out[sl] = model(x[sl].to(device)).argmax(1).cpu()

    over_slices(len(x), batch, run, device, probe)
    return out


def students(bank: ModelBank) -> Iterator[tuple[str, int, int, nn.Module]]:
    """``(arm, seed_row, seed, model)`` for every student arm and seed of the bank."""
    for arm in bank.arms:
        for row, seed in enumerate(bank.seeds):
            yield arm, row, seed, bank.model(arm, seed)


def require_teacher(probe: str, bank: ModelBank, name: str) -> str:
    """``name`` if the bank has a teacher-like model of that name, else ``ValueError``."""
    if name not in bank.teachers:
        raise ValueError(f"probe '{probe}': unknown teacher '{name}'; the bank has {list(bank.teachers)}")
    return name
