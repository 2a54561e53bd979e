"""Atomic file writes: write a temporary file beside the target, fsync it, ``os.replace`` it into place.

A reader (another pytest worker, a resumed run) sees either the old file or the complete new one, never a
partial write, and a crash mid-write leaves the old file untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)``, atomically. Returns the path. A write error inside ``torch.save`` (disk full,
    quota) is raised as the ``OSError`` it was, naming ``path``, not as torch's ``RuntimeError``."""
    return _atomic_write(Path(path), lambda f: _torch_save(obj, f, Path(path)), binary=True)


def _torch_save(obj: Any, f: IO[bytes], path: Path) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as e:  # torch's zip writer turns the file's OSError into "[enforce fail ...]"
        cause = e.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from e
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path``, atomically. Returns the path."""
    return _atomic_write(Path(path), lambda f: f.write(text), binary=False, encoding=encoding)


def move_aside(path: str | os.PathLike[str], label: str) -> Path:
    """Rename a damaged file or folder to ``<name>.<label>-<UTC time>-<pid>-<n>`` beside it (kept for inspection;
    ``n`` makes names unique within a second) and return the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    n = 0
    while (target := path.with_name(f"{path.name}.{label}-{stamp}-{os.getpid()}-{n}")).exists():
        n += 1
    os.replace(path, target)
    return target


STALE_TEMP_S = 3600.0
_TEMP = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")  # .<name>.<pid>.<random>.tmp (see ``_temp_beside``)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(folder: str | os.PathLike[str], max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.<random>.tmp``) that a writer killed mid-write left in
    ``folder``: those whose process is gone, and any older than ``max_age_s``. Returns what was removed."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file(follow_symlinks=False)):
            continue
        m = _TEMP.match(e.name)
        with contextlib.suppress(OSError):
            if (m and not _alive(int(m.group(1)))) or now - e.stat(follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(e.path)
                removed.append(Path(e.path))
    return removed


def writable_dir(folder: str | os.PathLike[str]) -> str | None:
    """None when ``folder`` can be created and written (a file created and removed there), else why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return f"{e.filename or folder}: {e.strerror or e}"
    return None


def _atomic_write(path: Path, write: Callable[[IO[Any]], object], *, binary: bool, encoding: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temp_beside(path) as tmp:
        try:
            with open(tmp, "wb" if binary else "w", encoding=None if binary else encoding) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.filename is None:  # a write or flush error names no file: name the target
                raise OSError(e.errno, e.strerror or str(e), str(path)) from e
            raise
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[Path]:
    """A fresh temporary file name in ``path``'s directory (same filesystem, so ``os.replace`` is atomic);
    removed on error."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are read by other processes
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (a directory entry); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ("atomic_save", "atomic_write_text", "move_aside", "remove_stale_temps", "writable_dir")
