"""Where data lives on disk, and the error raised when it is not there."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

KD_DATA_OPTION = "--kd-data ROOT"


class DataNotFound(FileNotFoundError):
    """A data file or folder is missing; the message names every path looked at and what would supply it."""


def require_root(dataset: str, root: Path | None, sub: str) -> Path:
    """``root / sub``, or ``DataNotFound`` naming ``--kd-data ROOT`` when no root was given or it lacks ``sub``."""
    if root is None:
        raise DataNotFound(f"{dataset}: needs {KD_DATA_OPTION} with ROOT/{sub}; no data root was given")
    path = Path(root) / sub
    if not path.exists():
        raise DataNotFound(f"{dataset}: {path} does not exist; pass {KD_DATA_OPTION} where ROOT/{sub} exists")
    return path


def find_file(dataset: str, dirs: Sequence[Path], names: Sequence[str], supply: str) -> Path:
    """The first ``dir / name`` that exists (dirs outer, names inner); else ``DataNotFound`` listing them all."""
    tried = [Path(d) / n for d in dirs for n in names]
    for path in tried:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in tried) or "(no directory to look in)"
    raise DataNotFound(f"{dataset}: no file found; looked for {looked}; {supply}")


def stream(seed: int, *tags: object) -> torch.Generator:
    """A CPU generator seeded by a stable hash of ``(seed, *tags)``: one independent stream per purpose.

    (Python's ``hash`` is salted per process, so sha256 is used to keep streams stable across runs.)
    """
    key = "/".join(str(t) for t in (seed, *tags)).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)
