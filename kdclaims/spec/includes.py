"""Where an ``include:`` may point, and how much one claim file may include.

An include name is a relative path, searched in the including file's folder and then in each parent folder up to
the claims folder (the nearest ancestor named ``claims``; without one, the folder of the file being validated).
The file found must lie inside that folder after resolving ``..`` and symbolic links: an include never reads a
file outside the claims tree, so no error can quote a foreign file. One claim file may load at most
``MAX_INCLUDES`` included files (each counted every time it is included) of ``MAX_INCLUDE_BYTES`` in all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdclaims.spec.yamlsource import SpecError

MAX_INCLUDES = 64
MAX_INCLUDE_BYTES = 1 << 20
MAX_NAME = 1024  # characters of one include entry


def claims_root(path: Path) -> Path:
    """The nearest ancestor folder named ``claims`` of ``path``; else the folder holding ``path``."""
    path = Path(os.path.abspath(path))
    for d in path.parents:
        if d.name == "claims":
            return d
    return path.parent


@dataclass
class IncludeBudget:
    """What one claim file's includes have used so far (shared by the whole include tree)."""

    root: Path
    files: int = 0
    size: int = 0

    def charge(self, target: Path, where: Path, line: int | None, name: str) -> None:
        self.files += 1
        self.size += target.stat().st_size
        if self.files > MAX_INCLUDES:
            raise SpecError(where, line, "include", f"'{name}': more than {MAX_INCLUDES} includes in all "
                                                    "(counting repeats); flatten the include tree")
        if self.size > MAX_INCLUDE_BYTES:
            raise SpecError(where, line, "include", f"'{name}': included files exceed {MAX_INCLUDE_BYTES} bytes "
                                                    "in all (counting repeats)")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_include(path: Path, name: str, root: Path, line: int | None) -> Path:
    """The file an ``include:`` entry ``name`` of ``path`` names (see the module docstring), else a SpecError that
    quotes the entry, never the content of another file."""
    bad = next((c for c in name if c == "\0" or (ord(c) < 32 and c != "\t")), None)
    if not name.strip() or bad is not None:
        raise SpecError(path, line, "include", f"{name!r} is not a usable file name (empty or control characters)")
    if os.path.isabs(name) or name.startswith("~"):
        raise SpecError(path, line, "include", f"'{name}' must be a path relative to the claims folder {root}")
    if len(name) > MAX_NAME:
        raise SpecError(path, line, "include", f"'{name[:60]}...' is longer than {MAX_NAME} characters")
    real_root = Path(os.path.realpath(root))
    here = Path(os.path.realpath(path)).parent
    for d in [here, *here.parents]:
        if not _inside(d, real_root):
            break
        try:
            cand = Path(os.path.realpath(d / name))
            found = cand.is_file()
        except OSError as e:  # a path component too long, a symlink loop, ...
            raise SpecError(path, line, "include", f"'{name}' cannot be looked up: {e.strerror or e}") from None
        if not _inside(cand, real_root):
            raise SpecError(path, line, "include", f"'{name}' leads outside the claims folder {root}")
        if found:
            return cand
    raise SpecError(path, line, "include", f"no such file '{name}' (looked in {path.parent} and its parents up to "
                                           f"{root})")
