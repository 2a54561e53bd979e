"""Content fingerprints that enter the store keys: of a weights file, and of a data split as it was read.

- A file: its sha256, computed once per process for each (real path, size, mtime): a file replaced under the same
  name gets a new digest, an unchanged one is not read again.
- A split held in memory (``Split``): the files its builder read (IDX files, CSVs, images, scikit-learn's bundled
  files), noted by the readers with ``note_read`` while ``recording_reads`` is active: each file's name relative to
  the folder holding them all, its size and its sha256 (a seeded sample of ``FOLDER_SAMPLE`` contents when there
  are more files). What is computed from them (resizing, rendering, synthetic data) is a function of the files and
  the data spec, which is in the key too; hashing the files rather than the float tensors keeps keys equal on CPUs
  whose kernels round differently.
- A ``FolderSplit`` (image files read lazily): its index (every file name relative to the folder holding them all,
  in order, with its label and group) plus the size and sha256 of ``FOLDER_SAMPLE`` files drawn with a fixed seed
  (every file when there are fewer). A renamed, added, removed or relabelled image, or any changed image among the
  sampled ones, changes the fingerprint; an in-place edit of an unsampled image of a large split that keeps the
  file name does not (a documented limit, docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

FOLDER_SAMPLE = 256
_SAMPLE_SEED = 97
T = TypeVar("T")


@functools.lru_cache(maxsize=1 << 16)
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


_recorders: list[set[str]] = []


@contextlib.contextmanager
def recording_reads() -> Iterator[set[str]]:
    """Collect the real paths of the files noted by ``note_read`` inside the block (nested blocks all see them)."""
    files: set[str] = set()
    _recorders.append(files)
    try:
        yield files
    finally:  # by identity: sets with equal contents compare equal
        del _recorders[next(i for i, f in enumerate(_recorders) if f is files)]


def note_read(path: str | os.PathLike[str]) -> None:
    """Record that a data file was read (a no-op outside ``recording_reads``)."""
    if _recorders:
        real = os.path.realpath(path)
        for files in _recorders:
            files.add(real)


def cached_reads(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``functools.lru_cache`` that also remembers the files noted while computing each value, and notes them
    again on every cache hit (so a split built from cached arrays still records what it was read from)."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.lru_cache(maxsize=maxsize)
        def inner(*args: Any) -> tuple[T, frozenset[str]]:
            with recording_reads() as files:
                value = fn(*args)
            return value, frozenset(files)

        @functools.wraps(fn)
        def outer(*args: Any) -> T:
            value, files = inner(*args)
            for f in files:
                note_read(f)
            return value

        outer.cache_clear = inner.cache_clear  # type: ignore[attr-defined]
        outer.cache_info = inner.cache_info  # type: ignore[attr-defined]
        return outer

    return deco


def _files_update(h: Any, files: list[str]) -> None:
    """Names relative to the common prefix (location-independent), then sizes and sha256 of all or a sample."""
    prefix = os.path.commonprefix(files) if len(files) > 1 else os.path.dirname(files[0]) + os.sep if files else ""
    cut = prefix.rfind(os.sep) + 1  # names relative to the deepest folder holding them all
    h.update("\0".join(f[cut:] for f in files).encode("utf-8", "surrogateescape") + b"\0")
    pick: Any = range(len(files))
    if len(files) > FOLDER_SAMPLE:
        g = torch.Generator().manual_seed(_SAMPLE_SEED)
        pick = torch.randperm(len(files), generator=g)[:FOLDER_SAMPLE].sort().values.tolist()
    for i in pick:
        h.update(f"{i}:{os.path.getsize(files[i])}:{file_digest(files[i])};".encode())


def split_fingerprint(split: Any, read: set[str] | frozenset[str] = frozenset()) -> str:
    """The content fingerprint of a data split (see the module docstring), as 32 hex digits; ``read``: the files
    its builder noted."""
    h = hashlib.sha256(f"{len(split)};{split.num_classes};".encode())
    if hasattr(split, "files"):
        h.update(b"folder;")
        _files_update(h, [str(f) for f in split.files])
        _tensor_update(h, "y", split.y)
        _tensor_update(h, "groups", split.groups)
    h.update(b"read;")
    _files_update(h, sorted(read))
    return h.hexdigest()[:32]


def weights_fingerprint(path: Path) -> dict[str, Any]:
    """What a weights file adds to a model key: its sha256 (the name alone says nothing about the content)."""
    return {"sha256": file_digest(path)}
