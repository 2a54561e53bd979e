"""Synthetic class-conditional images, for smoke tests only (not a benchmark, no claim is verified on it)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from kdclaims.data.base import Split
from kdclaims.data.paths import stream
from kdclaims.registries import DATASETS

_DEFAULT_N = {"train": 512, "test": 256}
_TEMPLATE_GRID = 4  # templates are bilinear upsamplings of a 4x4 random grid: low frequency


@DATASETS.register("synthetic")
def synthetic(
    split: str,
    root: Path | None,
    seed: int,
    *,
    n: int | None = None,
    size: int = 16,
    channels: int = 1,
    num_classes: int = 4,
    noise: float = 0.25,
    template_seed: int = 0,
) -> Split:
    """Smoke-test data: ``x = clamp(T_y + noise·ε, 0, 1)``, ε ~ N(0, 1) per pixel.

    ``T_c = 0.5 + 0.2·z_c`` with ``z_c`` a standardised bilinear upsampling of a 4x4 N(0, 1) grid per class and
    channel, drawn from ``template_seed`` (shared by train and test); labels are balanced; the noise and label order
    come from a stream keyed by ``(seed, split)``. A tiny CNN separates the classes within a few dozen steps.
    """
    if split not in _DEFAULT_N:
        raise ValueError(f"synthetic: split must be 'train' or 'test', got '{split}'")
    if num_classes < 2 or channels < 1 or size < 2:
        raise ValueError(
            f"synthetic: need num_classes >= 2, channels >= 1, size >= 2; got {num_classes}, {channels}, {size}"
        )
    n = _DEFAULT_N[split] if n is None else int(n)
    grid = torch.randn(num_classes, channels, _TEMPLATE_GRID, _TEMPLATE_GRID,
                       generator=torch.Generator().manual_seed(template_seed))
    z = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    z = (z - z.mean((1, 2, 3), keepdim=True)) / z.std((1, 2, 3), keepdim=True)
    templates = 0.5 + 0.2 * z
    g = stream(seed, split, "synthetic")
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    x = (templates[y] + noise * torch.randn(n, channels, size, size, generator=g)).clamp_(0, 1)
    return Split(name=f"synthetic-{split}", x=x, y=y, num_classes=num_classes,
                 mean=(0.5,) * channels, std=(0.25,) * channels)
