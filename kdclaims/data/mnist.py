"""Fashion-MNIST and MNIST from their IDX files (10 classes, 28x28 grayscale; domain parameters in ``domains``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.data.domains import gray_split
from kdclaims.data.idx import read_idx
from kdclaims.data.paths import KD_DATA_OPTION, DataNotFound, find_file
from kdclaims.fingerprint import cached_reads
from kdclaims.registries import DATASETS

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
_PREFIX = {"train": "train", "test": "t10k"}


def _idx_pair(dataset: str, dirs: list[Path], split: str, supply: str) -> tuple[Path, Path]:
    if split not in _PREFIX:
        raise ValueError(f"{dataset}: split must be 'train' or 'test', got '{split}'")
    found = []
    for kind, rank in (("images", 3), ("labels", 1)):
        stem = f"{_PREFIX[split]}-{kind}-idx{rank}-ubyte"
        found.append(find_file(dataset, dirs, [stem + ".gz", stem], supply))
    return found[0], found[1]


def _load(dataset: str, images: Path, labels: Path) -> tuple[Tensor, Tensor]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{dataset}: {images} has shape {tuple(x.shape)} and {labels} {tuple(y.shape)}; "
                         "expected (N, H, W) images and N labels")
    return x.unsqueeze(1), y.long()


@cached_reads(8)
def _gray_stats(images: str) -> tuple[float, float]:
    """Mean and std of the pixels (in [0, 1]) of a uint8 IDX image file, from its histogram."""
    x = read_idx(images)
    hist = torch.bincount(x.flatten().long(), minlength=256).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    total = hist.sum()
    mean = float((hist * v).sum() / total)
    std = float(((hist * (v - mean) ** 2).sum() / total).sqrt())
    return mean, std


def _mnist_like(
    dataset: str, dirs: list[Path], supply: str, split: str, seed: int, params: dict
) -> Split:
    images, labels = _idx_pair(dataset, dirs, split, supply)
    try:
        stats_from, _ = _idx_pair(dataset, dirs, "train", supply)
    except DataNotFound:  # only the test files exist: normalise with their own statistics
        stats_from = images
    x, y = _load(dataset, images, labels)
    if x.dtype != torch.uint8:
        raise ValueError(f"{dataset}: {images} holds {x.dtype}, expected uint8 pixels")
    mean, std = _gray_stats(str(stats_from))
    return gray_split(dataset, x, y, 10, split=split, seed=seed, mean=mean, std=std, **params)


@DATASETS.register("fashion_mnist")
def fashion_mnist(
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
    """Fashion-MNIST (Xiao et al. 2017) from ROOT/fashion-mnist, else /usr/share/datasets/fashion-mnist."""
    dirs = ([Path(root) / "fashion-mnist"] if root is not None else []) + [FASHION_MNIST_SYSTEM_DIR]
    supply = (f"install it with `apt-get install dataset-fashion-mnist` or pass {KD_DATA_OPTION} "
              "with ROOT/fashion-mnist/")
    params = dict(size=size, domain=domain, domains=domains, composition=composition, n=n, colorize=colorize)
    return _mnist_like("fashion_mnist", dirs, supply, split, seed, params)


@DATASETS.register("mnist")
def mnist(
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
    """MNIST (LeCun et al. 1998) from ROOT/mnist (same IDX file names as Fashion-MNIST)."""
    dirs = [Path(root) / "mnist"] if root is not None else []
    supply = f"pass {KD_DATA_OPTION} with the MNIST IDX files in ROOT/mnist/"
    params = dict(size=size, domain=domain, domains=domains, composition=composition, n=n, colorize=colorize)
    return _mnist_like("mnist", dirs, supply, split, seed, params)
