"""CIFAR-100 (Krizhevsky 2009) from its python release, as torchvision and RepDistiller read it:

    ROOT/cifar-100-python/{train,test}   pickled dicts: b"data" (N, 3072) uint8 rows (R, G, B planes of 32x32),
                                         b"fine_labels" (100 classes), b"coarse_labels"

The files are pickles, so they are read with an unpickler that builds only plain containers and numpy arrays (any
other global in the file is refused): a data file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from kdclaims.data.base import Split
from kdclaims.data.paths import DataNotFound, require_root, stream
from kdclaims.data.sampling import stratified_indices
from kdclaims.registries import DATASETS

LAYOUT = "ROOT/cifar-100-python/{train,test} (the python release, as torchvision downloads it)"
MEAN = (0.5071, 0.4865, 0.4409)  # CIFAR-100 train-set channel statistics (RepDistiller's)
STD = (0.2673, 0.2564, 0.2762)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201  (pickle's signature)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, fine labels (N,) int64)`` from one CIFAR-100 python file."""
    try:
        d = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"fine_labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
        raise ValueError(f"cifar100: {path} is not a CIFAR-100 python file ({e}); expected {LAYOUT}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"cifar100: {path}: data {data.shape} and {len(labels)} labels; expected (N, 3072) and N")
    return data.reshape(-1, 3, 32, 32), labels


@DATASETS.register("cifar100")
def cifar100(split: str, root: Path | None, seed: int, *, n: int | None = None) -> Split:
    """CIFAR-100 train (50,000) or test (10,000) images in [0, 1]; ``n`` keeps a seeded class-stratified subset."""
    name = {"train": "train", "test": "test"}.get(split)
    if name is None:
        raise ValueError(f"cifar100: split must be 'train' or 'test', got '{split}'")
    if root is None:
        raise DataNotFound(f"cifar100: needs --kd-data ROOT with {LAYOUT}; no data root was given")
    folder = require_root("cifar100", root, "cifar-100-python")
    if not (folder / name).is_file():
        raise DataNotFound(f"cifar100: {folder / name} does not exist; expected {LAYOUT}")
    x, y = read_batch(folder / name)
    out = Split(f"cifar100-{split}", torch.from_numpy(x).float() / 255, torch.from_numpy(y), num_classes=100,
                mean=MEAN, std=STD)
    if n is not None and n < len(out):
        out = out.subset(stratified_indices(out.y, n, stream(seed, split, "cifar100", "select")))
    return out
