"""Plumbing shared by the probes: strict parameters, batched predictions, iteration over the bank's models."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from kdclaims.probes.base import ModelBank

# Keys every probe accepts: the probe's name and image cap (consumed by the runner and the bank), the evaluation
# data (resolved by the bank) and the batch size.
COMMON_PARAMS = ("name", "data", "images", "batch_size")
DEFAULT_BATCH = 256


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


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, batch: int = DEFAULT_BATCH) -> Tensor:
    """``argmax_c model(x)_c`` for each image (int64, on the CPU), in batches of ``batch`` on the model's device."""
    device = model_device(model)
    out = [model(x[i:i + batch].to(device)).argmax(1).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


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
