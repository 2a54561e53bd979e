"""Small data files shipped inside scikit-learn (digits, two sample photos), read without importing scikit-learn.

Importing ``sklearn`` costs seconds; these readers open its bundled files directly and fall back to its loaders when
the files are not where this version of scikit-learn keeps them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from kdclaims.fingerprint import cached_reads, note_read


def sklearn_file(relative: str) -> Path | None:
    """``<sklearn package dir>/<relative>`` if it exists (found through import metadata, not an import)."""
    spec = importlib.util.find_spec("sklearn")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = Path(base) / relative
        if path.is_file():
            return path
    return None


@cached_reads(1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 with values 0..16, labels (1797,) int64), as ``sklearn.datasets.load_digits``."""
    path = sklearn_file("datasets/data/digits.csv.gz")
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    note_read(path)
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


@cached_reads(1)
def sample_photo_arrays() -> tuple[np.ndarray, ...]:
    """The two sample photos (china, flower) as (427, 640, 3) uint8 arrays, as ``load_sample_images`` gives them."""
    paths = [sklearn_file(f"datasets/images/{name}.jpg") for name in ("china", "flower")]
    if any(p is None for p in paths):
        from sklearn.datasets import load_sample_images

        return tuple(load_sample_images().images)
    out = []
    for p in paths:
        note_read(p)
        with Image.open(p) as img:
            out.append(np.asarray(img.convert("RGB")))
    return tuple(out)
