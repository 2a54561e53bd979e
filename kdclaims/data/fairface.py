"""FairFace (Kärkkäinen & Joo 2021): face images labelled by gender, grouped by race (§6.2 of the paper).

Layout: ROOT/fairface/fairface_label_{train,val}.csv with columns ``file, age, gender, race, service_test`` (``file``
relative to ROOT/fairface, e.g. ``train/1.jpg``) and the images beside it. Label = gender, group = race.
"""

from __future__ import annotations

import csv
import functools
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
from kdclaims.registries import DATASETS

GENDERS: tuple[str, ...] = ("Female", "Male")  # label index
RACES: tuple[str, ...] = (
    "White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern",
)  # fmt: skip  (group index; the CSV's spelling)
_CSV = {"train": "fairface_label_train.csv", "test": "fairface_label_val.csv"}


def read_labels(path: Path) -> tuple[list[str], Tensor, Tensor]:
    """(relative files, gender labels, race groups) from a FairFace label CSV."""
    files, genders, races = [], [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "gender", "race"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; columns: {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if row["gender"] not in GENDERS:
                raise ValueError(f"{path}:{line}: gender '{row['gender']}' not in {GENDERS}")
            if row["race"] not in RACES:
                raise ValueError(f"{path}:{line}: race '{row['race']}' not in {RACES}")
            files.append(row["file"])
            genders.append(GENDERS.index(row["gender"]))
            races.append(RACES.index(row["race"]))
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
    files, y, race = read_labels(csv_path)
    gen = stream(seed, split, "fairface", "select")
    index = select(y, race, list(RACES), n=n, composition=composition, generator=gen)
    if index is not None:
        files, y, race = [files[i] for i in index.tolist()], y[index], race[index]
    paths = tuple(str(folder / f) for f in files)
    for p in paths:
        if not Path(p).is_file():
            raise DataNotFound(f"fairface: image {p} listed in {csv_path} does not exist")
    x = _load_images(paths, int(size)).float().div_(255)
    return Split(name=f"fairface-{split}", x=x, y=y, num_classes=len(GENDERS), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 groups=race, group_names=list(RACES))
