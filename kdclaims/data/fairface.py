"""FairFace (Kärkkäinen & Joo 2021): face images labelled by gender, grouped by race (§6.2 of the paper).

Layout: ROOT/fairface/fairface_label_{train,val}.csv with columns ``file, age, gender, race, service_test`` (``file``
relative to ROOT/fairface, e.g. ``train/1.jpg``) and the images beside it. Label = gender, group = race.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.data.folder import IMAGENET_MEAN, IMAGENET_STD, default_workers, load_rgb
from kdclaims.data.paths import DataNotFound, require_root, stream
from kdclaims.data.sampling import select
from kdclaims.errors import DataError
from kdclaims.fingerprint import note_read
from kdclaims.registries import DATASETS

GENDERS: tuple[str, ...] = ("Female", "Male")  # label index
RACES: tuple[str, ...] = (
    "White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern",
)  # fmt: skip  (group index; the CSV's spelling)
_CSV = {"train": "fairface_label_train.csv", "test": "fairface_label_val.csv"}


def read_labels(path: Path) -> tuple[list[str], Tensor, Tensor]:
    """(relative files, gender labels, race groups) from a FairFace label CSV; a ``DataError`` at
    ``file:line`` for text that is not UTF-8, a missing column, an unknown label, no rows, or a ``file`` entry
    that leaves the folder of the CSV (absolute, or through ``..``)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    files, genders, races = [], [], []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = {"file", "gender", "race"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}:1: missing column(s) {sorted(missing)}; columns: {reader.fieldnames}")
        for row in reader:
            line = reader.line_num
            if row["gender"] not in GENDERS:
                raise DataError(f"{path}:{line}: gender '{row['gender']}' not in {GENDERS}")
            if row["race"] not in RACES:
                raise DataError(f"{path}:{line}: race '{row['race']}' not in {RACES}")
            f = row["file"] or ""
            norm = os.path.normpath(f)
            if not f or os.path.isabs(f) or norm == ".." or norm.startswith(".." + os.sep) or "\0" in f:
                raise DataError(f"{path}:{line}: file {f!r} must be a path inside {path.parent}")
            files.append(f)
            genders.append(GENDERS.index(row["gender"]))
            races.append(RACES.index(row["race"]))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not a valid CSV row ({e})") from None
    if not files:
        raise DataError(f"{path}: no images listed (only a header, or an empty file)")
    return files, torch.tensor(genders, dtype=torch.long), torch.tensor(races, dtype=torch.long)


def _load_one(path: str, size: int) -> Tensor:
    img = load_rgb(path).resize((size, size), resample=Image.Resampling.BILINEAR)  # PIL filters when shrinking
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


@functools.lru_cache(maxsize=4)
def _load_images(paths: tuple[str, ...], size: int) -> Tensor:
    """uint8 (N, 3, size, size) images, decoded in a thread pool; cached per process."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        for i, img in enumerate(pool.map(lambda p: _load_one(p, size), paths)):
            out[i] = img
    return out


@DATASETS.register("fairface")
def fairface(
    split: str,
    root: Path | None,
    seed: int,
    *,
    size: int = 32,
    composition: Mapping[str, int] | None = None,
    n: int | None = None,
) -> Split:
    """FairFace gender classification at ``size`` x ``size`` (default 32, for the paper's ResNet20), groups = race.

    ``composition`` ({race: count}) or ``n`` pick a seeded subset first; only the chosen images are decoded.
    """
    if split not in _CSV:
        raise ValueError(f"fairface: split must be 'train' or 'test', got '{split}'")
    folder = require_root("fairface", root, "fairface")
    csv_path = folder / _CSV[split]
    if not csv_path.is_file():
        raise DataNotFound(f"fairface: no label file {csv_path}; pass --kd-data ROOT with ROOT/fairface/{_CSV[split]}")
    note_read(csv_path)
    files, y, race = read_labels(csv_path)
    gen = stream(seed, split, "fairface", "select")
    index = select(y, race, list(RACES), n=n, composition=composition, generator=gen)
    if index is not None:
        files, y, race = [files[i] for i in index.tolist()], y[index], race[index]
    paths = tuple(str(folder / f) for f in files)
    for p in paths:
        if not Path(p).is_file():
            raise DataNotFound(f"fairface: image {p} listed in {csv_path} does not exist")
        note_read(p)
    x = _load_images(paths, int(size)).float().div_(255)
    return Split(name=f"fairface-{split}", x=x, y=y, num_classes=len(GENDERS), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 groups=race, group_names=list(RACES))
