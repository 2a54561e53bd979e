"""Datasets by name (``DATASETS``) and batch transforms. ``build_dataset`` is the one entry point.

Importing this package registers every builder: ``fashion_mnist``, ``mnist``, ``digits``, ``synthetic``, ``imagenet``,
``fairface``, the model-vs-human sets ``mvh_edge``, ``mvh_silhouette``, ``mvh_cue_conflict``, ``mvh_sketch``,
``mvh_stylized``, the grating-textured ``textured_fashion``, ``textured_digits`` (``textures``), ``cifar100``
(``cifar``) and the multi-domain folders ``vlcs``, ``pacs`` (``domainfolders``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from kdclaims.data import (  # noqa: F401  (registers builders)
    cifar, digits, domainfolders, fairface, folder, mnist, mvh, synthetic, textures,
)
from kdclaims.data.base import Batch, Split
from kdclaims.data.folder import FolderSplit
from kdclaims.data.paths import DataNotFound
from kdclaims.registries import DATASETS

SPLITS = ("train", "test")


def dataset_params(name: str) -> list[str] | None:
    """The parameters the builder registered as ``name`` accepts after ``(split, root, seed)`` (None: it takes ``**kwargs``)."""
    params = list(inspect.signature(DATASETS.get(name)).parameters.values())[3:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def build_dataset(
    name: str, split: str, root: str | Path | None = None, seed: int = 0, **params: Any
) -> Split | FolderSplit:
    """The ``split`` ("train" or "test") of dataset ``name`` with builder ``params``.

    ``root`` is the ``--kd-data ROOT`` folder (None when not given). Raises ``UnknownName`` for an unknown dataset,
    ``ValueError`` for an unknown parameter or split, ``DataNotFound`` when files are missing.
    """
    builder = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"dataset {name}: split must be one of {SPLITS}, got '{split}'")
    accepted = dataset_params(name)
    unknown = [] if accepted is None else sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"dataset {name}: unknown parameter(s) {unknown}; accepted: {', '.join(accepted) or 'none'}")
    return builder(split, None if root is None else Path(root), int(seed), **params)


__all__ = ["Batch", "DataNotFound", "FolderSplit", "Split", "build_dataset", "dataset_params", "DATASETS"]
