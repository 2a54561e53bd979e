"""Content fingerprints that enter the store keys: of a weights file, and of a data split as it was read.

- A file: its sha256, computed once per process for each (real path, size, mtime): a file replaced under the same
  name gets a new digest, an unchanged one is not read again.
- An in-memory ``Split``: sha256 over the shape, dtype and bytes of ``x``, ``y``, ``groups`` and every ``meta``
  tensor (the decoded pixels and labels a model sees; derived data such as synthetic or textured sets included).
- A ``FolderSplit`` (image files read lazily): sha256 over its index (every file name relative to the folder it was
  read from, in order, with its label and group) plus the size and sha256 of ``FOLDER_SAMPLE`` files drawn with a
  fixed seed (every file when there are fewer). A renamed, added, removed or relabelled image, or any changed image
  among the sampled ones, changes the fingerprint; an in-place edit of an unsampled image of a large split that
  keeps the file name does not (a documented limit, docs/reliability.md).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

FOLDER_SAMPLE = 256
_SAMPLE_SEED = 97


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content, cached by (real path, size, mtime): hashed once while it is unchanged."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return _sha256_of(real, st.st_size, st.st_mtime_ns)


def _tensor_update(h: Any, name: str, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(f"{name}:none;".encode())
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else b"")


def _folder_update(h: Any, split: Any) -> None:
    files = [str(f) for f in split.files]
    prefix = os.path.commonprefix(files) if len(files) > 1 else os.path.dirname(files[0]) + os.sep if files else ""
    cut = prefix.rfind(os.sep) + 1  # names relative to the deepest folder holding them all
    h.update("\0".join(f[cut:] for f in files).encode("utf-8", "surrogateescape") + b"\0")
    _tensor_update(h, "y", split.y)
    _tensor_update(h, "groups", split.groups)
    pick = range(len(files))
    if len(files) > FOLDER_SAMPLE:
        g = torch.Generator().manual_seed(_SAMPLE_SEED)
        pick = torch.randperm(len(files), generator=g)[:FOLDER_SAMPLE].sort().values.tolist()
    for i in pick:
        h.update(f"{i}:{os.path.getsize(files[i])}:{file_digest(files[i])};".encode())


def split_fingerprint(split: Any) -> str:
    """The content fingerprint of a data split (see the module docstring), as 32 hex digits."""
    h = hashlib.sha256(f"{len(split)};{split.num_classes};".encode())
    if hasattr(split, "files"):
        h.update(b"folder;")
        _folder_update(h, split)
    else:
        h.update(b"tensors;")
        for name in ("x", "y", "groups"):
            _tensor_update(h, name, getattr(split, name))
        for name in sorted(split.meta):
            _tensor_update(h, f"meta.{name}", split.meta[name])
    return h.hexdigest()[:32]


def weights_fingerprint(path: Path) -> dict[str, Any]:
    """What a weights file adds to a model key: its sha256 (the name alone says nothing about the content)."""
    return {"sha256": file_digest(path)}
