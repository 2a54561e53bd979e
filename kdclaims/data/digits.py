"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), with a fixed stratified 70/30 train/test split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.data.domains import gray_split
from kdclaims.data.sklearn_assets import digits_arrays
from kdclaims.fingerprint import cached_reads
from kdclaims.registries import DATASETS

TRAIN_FRACTION = 0.7


@cached_reads(1)
def _digits() -> tuple[Tensor, Tensor, Tensor]:
    """(images (N, 1, 8, 8) in [0, 1], labels, split mask: True = train). Values 0..16 are divided by 16.

    The split is fixed: per class, the first ``round(0.7·N_c)`` of a seed-0 permutation go to train.
    """
    images, target = digits_arrays()
    x = torch.from_numpy(images).float().div_(16).unsqueeze(1)
    y = torch.from_numpy(target).long()
    train = torch.zeros(len(y), dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for c in range(10):
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        train[members[: round(TRAIN_FRACTION * len(members))]] = True
    return x, y, train


@DATASETS.register("digits")
def digits(
    split: str,
    root: Path | None,
    seed: int,
    *,
    size: int | None = None,
    domain: str | None = None,
    domains: Sequence[str] | None = None,
    composition: Mapping[str, int] | None = None,
    n: int | None = None,
    colorize: bool = False,
) -> Split:
    """The 8x8 digits (``size`` resizes bilinearly, e.g. to 16 or 28); ships with scikit-learn, ``root`` unused."""
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got '{split}'")
    x, y, train = _digits()
    keep = train if split == "train" else ~train
    xs, ys = x[keep], y[keep]
    xt = x[train]
    mean, std = float(xt.mean()), float(xt.std(unbiased=False))
    return gray_split("digits", xs, ys, 10, split=split, seed=seed, mean=mean, std=std, size=size, domain=domain,
                      domains=domains, composition=composition, n=n, colorize=colorize)
