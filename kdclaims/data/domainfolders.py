"""Multi-domain image folders in their standard layouts (as DomainBed and most releases ship them): VLCS and PACS.

    ROOT/VLCS/{Caltech101,LabelMe,SUN09,VOC2007}/{bird,car,chair,dog,person}/<image>
    ROOT/PACS/{art_painting,cartoon,photo,sketch}/{dog,elephant,giraffe,guitar,horse,house,person}/<image>

Neither set has an official train/test split, so each domain's images are split once, per class, into a held-out
``holdout`` share (the test split) and the rest (the train split), with a generator seeded by ``holdout_seed`` only:
teacher and students, of any seed, see the same split (DomainBed holds out 20 % the same way). Every image's group is
its domain (``group_names`` = the chosen ``domains``), so ``accuracy`` with ``per: group`` scores each domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from kdclaims.data.folder import IMAGE_EXTENSIONS, FolderSplit, eval_transform, image_folder, train_transform
from kdclaims.data.paths import DataNotFound, require_root, stream
from kdclaims.registries import DATASETS

LAYOUTS = {
    "vlcs": ("VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), ("bird", "car", "chair", "dog", "person")),
    "pacs": ("PACS", ("art_painting", "cartoon", "photo", "sketch"),
             ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")),
}


def layout(name: str) -> str:
    """The expected folder layout of dataset ``name``, for error and skip messages."""
    top, domains, classes = LAYOUTS[name]
    return f"ROOT/{top}/{{{','.join(domains)}}}/{{{','.join(classes)}}}/<image>"


def holdout_mask(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """True for the held-out images: ``round(share * N_c)`` of each class ``c`` (at least one when ``N_c >= 2``)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        k = min(len(idx) - 1, max(1, round(share * len(idx)))) if len(idx) >= 2 else 0
        mask[idx[torch.randperm(len(idx), generator=generator)[:k]]] = True
    return mask


def domain_folders(name: str, split: str, root: Path | None, seed: int, domains: Sequence[str] | None, size: int,
                   augment: str, holdout: float, holdout_seed: int, num_workers: int | None) -> FolderSplit:
    """The ``split`` of the chosen domains of ``name`` (see the module docstring); ``DataNotFound`` names the layout."""
    top, known, classes = LAYOUTS[name]
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test', got '{split}'")
    domains = list(known if domains is None else domains)
    unknown = [d for d in domains if d not in known]
    if unknown or not domains:
        raise ValueError(f"{name}: unknown domain(s) {unknown}; known: {list(known)}")
    if not 0 < holdout < 1:
        raise ValueError(f"{name}: holdout must be in (0, 1), got {holdout}")
    if root is None:
        raise DataNotFound(f"{name}: needs --kd-data ROOT with the layout {layout(name)}; no data root was given")
    base = require_root(name, root, top)
    files: list[str] = []
    labels, groups = [], []
    for g, d in enumerate(domains):
        if not (base / d).is_dir():
            raise DataNotFound(f"{name}: {base / d} does not exist; expected the layout {layout(name)}")
        f, y = image_folder(base / d, classes)
        if not f:
            raise DataNotFound(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {base / d}/<class>/; "
                               f"expected the layout {layout(name)}")
        held = holdout_mask(y, holdout, stream(holdout_seed, name, d, "holdout"))
        keep = held if split == "test" else ~held
        files += [p for p, k in zip(f, keep.tolist()) if k]
        labels.append(y[keep])
        groups.append(torch.full((int(keep.sum()),), g, dtype=torch.long))
    transform = train_transform(size, augment) if split == "train" else eval_transform(size)
    return FolderSplit(name=f"{name}-{split}", files=files, y=torch.cat(labels), num_classes=len(classes),
                       transform=transform, image_size=size, groups=torch.cat(groups), group_names=domains,
                       num_workers=num_workers, loader_seed=seed, deterministic=split == "test" or augment == "none")


@DATASETS.register("vlcs")
def vlcs(split: str, root: Path | None, seed: int, *, domains: Sequence[str] | None = None, size: int = 224,
         augment: str = "crop_flip", holdout: float = 0.2, holdout_seed: int = 0,
         num_workers: int | None = None) -> FolderSplit:
    """VLCS (5 classes) from ROOT/VLCS/<domain>/<class>/; ``domains`` defaults to all four."""
    return domain_folders("vlcs", split, root, seed, domains, size, augment, holdout, holdout_seed, num_workers)


@DATASETS.register("pacs")
def pacs(split: str, root: Path | None, seed: int, *, domains: Sequence[str] | None = None, size: int = 224,
         augment: str = "crop_flip", holdout: float = 0.2, holdout_seed: int = 0,
         num_workers: int | None = None) -> FolderSplit:
    """PACS (7 classes) from ROOT/PACS/<domain>/<class>/; ``domains`` defaults to all four."""
    return domain_folders("pacs", split, root, seed, domains, size, augment, holdout, holdout_seed, num_workers)
