"""Model-vs-human out-of-domain test sets (Geirhos et al. 2021), 16 entry-level categories, in their release layout.

- ``edge``, ``silhouette``, ``cue-conflict``: ROOT/model-vs-human/<name>/<category>/<img>.png
- ``sketch``, ``stylized``: ROOT/model-vs-human/<name>/dnn/session-1/<img>, the category being field 4 (0-based) of
  the ``_``-split file name (e.g. ``0001_sk_dnn_0_airplane_...``: fields 0..3 are number, dataset, subject, condition).

Cue-conflict file names carry both cues: ``<shape><k>-<texture><j>.png`` (``airplane1-bicycle2.png``: shape airplane,
texture bicycle); the label is the shape and ``meta["texture"]`` the texture. The ImageNet-1k indices of each
category (for a 16-way decision from a 1000-way model) live with the probes, in ``kdclaims.probes.imagenet16``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from kdclaims.data.folder import IMAGE_EXTENSIONS, FolderSplit, eval_transform
from kdclaims.data.paths import DataNotFound, require_root
from kdclaims.registries import DATASETS

CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip
CATEGORY_FIELD = 4  # position of the category in a session file name split at "_"
_CUE = re.compile(r"^([a-z]+)\d*-([a-z]+)\d*$")


def category_index(name: str, where: str) -> int:
    if name not in CATEGORIES:
        raise ValueError(f"{where}: '{name}' is not one of the 16 categories {', '.join(CATEGORIES)}")
    return CATEGORIES.index(name)


def _images(folder: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _category_tree(folder: Path) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            label = category_index(entry.name, str(entry.path))
            found = _images(Path(entry.path))
            files += found
            labels += [label] * len(found)
    return files, labels


def _session_files(folder: Path) -> tuple[list[Path], list[int]]:
    session = folder / "dnn" / "session-1"
    if not session.is_dir():
        raise DataNotFound(f"no folder {session} (the release layout <name>/dnn/session-1/<img>)")
    files = _images(session)
    labels = []
    for f in files:
        fields = f.stem.split("_")
        if len(fields) <= CATEGORY_FIELD:
            raise ValueError(f"{f}: file name has {len(fields)} '_'-fields; the category is field {CATEGORY_FIELD}")
        labels.append(category_index(fields[CATEGORY_FIELD], str(f)))
    return files, labels


def cue_conflict_cues(path: Path) -> tuple[int, int]:
    """(shape, texture) category indices from a cue-conflict file name such as ``airplane1-bicycle2.png``."""
    match = _CUE.match(path.stem)
    if not match:
        raise ValueError(f"{path}: cue-conflict names look like <shape><k>-<texture><j>.png")
    return category_index(match[1], str(path)), category_index(match[2], str(path))


def _build(name: str, split: str, root: Path | None, size: int, num_workers: int | None) -> FolderSplit:
    if split != "test":
        raise ValueError(f"mvh {name}: only a 'test' split exists, got '{split}'")
    folder = require_root(f"mvh_{name.replace('-', '_')}", root, f"model-vs-human/{name}")
    meta = {}
    if name in ("sketch", "stylized"):
        files, labels = _session_files(folder)
    else:
        files, labels = _category_tree(folder)
    if name == "cue-conflict":
        cues = [cue_conflict_cues(f) for f in files]
        for f, label, (shape, _) in zip(files, labels, cues):
            if shape != label:
                raise ValueError(f"{f}: shape '{CATEGORIES[shape]}' in the name, but folder '{CATEGORIES[label]}'")
        meta["texture"] = torch.tensor([t for _, t in cues], dtype=torch.long)
    if not files:
        raise DataNotFound(f"mvh {name}: no images under {folder}")
    return FolderSplit(
        name=f"mvh-{name}",
        files=[str(f) for f in files],
        y=torch.tensor(labels, dtype=torch.long),
        num_classes=len(CATEGORIES),
        transform=eval_transform(size, resize=size),
        image_size=size,
        meta=meta,
        num_workers=num_workers,
    )


def _register(name: str) -> None:
    def builder(
        split: str, root: Path | None, seed: int, *, size: int = 224, num_workers: int | None = None
    ) -> FolderSplit:
        return _build(name, split, root, size, num_workers)

    builder.__name__ = f"mvh_{name.replace('-', '_')}"
    builder.__doc__ = f"Model-vs-human '{name}' (16 classes; images resized and center-cropped to ``size``)."
    DATASETS.register(builder.__name__)(builder)


for _name in ("edge", "silhouette", "cue-conflict", "sketch", "stylized"):
    _register(_name)
