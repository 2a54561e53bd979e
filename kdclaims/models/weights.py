"""Weights from local files only: resolve a weights reference to a path, load it strictly into ``model.net``.

References:
- ``torchvision/<arch>-<TAG>`` (e.g. ``torchvision/resnet50-IMAGENET1K_V1``): the file name torchvision itself
  uses for that weight enum (the basename of its URL, e.g. ``resnet50-0676ba61.pth``), under ``weights_dir``
  (default: torch hub's checkpoint folder, where torchvision keeps what it once downloaded);
- ``file:<path>`` or a plain path: a file; a relative path is taken under ``weights_dir`` (default: the working
  directory) and may not leave it through ``..``.
Nothing is ever downloaded. Files are read with ``torch.load(..., weights_only=True)``: tensors and plain
containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from kdclaims.errors import WeightsError
from kdclaims.models.base import Classifier

TORCHVISION = "torchvision/"
FILE = "file:"
OPTION = "--kd-weights DIR"


class WeightsNotFound(FileNotFoundError):
    """A weights file that is not on disk; the message names the file, the folder searched and ``--kd-weights``."""

    def __init__(self, ref: str, filename: str, directory: Path):
        self.ref, self.filename, self.directory = ref, filename, directory
        super().__init__(
            f"weights '{ref}' not found: expected file '{filename}' in {directory}. Nothing is downloaded: put the "
            f"file there, or pass {OPTION} with a directory that holds '{filename}'."
        )

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror) otherwise
        return self.args[0]


class UnsafePath(ValueError):
    """A relative weights path that leaves the weights directory through ``..``."""


class UnsafeCheckpoint(pickle.UnpicklingError):
    """A checkpoint that ``torch.load(weights_only=True)`` refused: it pickles more than tensors and containers."""


def torchvision_filename(arch: str, tag: str) -> str:
    """File name torchvision uses for weights ``<arch>`` / ``<tag>``: the basename of the enum's URL (no download)."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(arch)
    except ValueError as e:
        ref = f"{TORCHVISION}{arch}-{tag}"
        raise ValueError(f"torchvision has no model '{arch}' (from weights reference '{ref}')") from e
    try:
        weights = enum[tag]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ValueError(f"torchvision {arch} has no weights '{tag}'; known: {known}") from None
    return os.path.basename(weights.url)


def _default_torchvision_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(ref: str, weights_dir: Path | None) -> Path:
    """Path of the file behind ``ref`` (see the module docstring); raises ``WeightsNotFound`` if it is absent."""
    if ref.startswith(TORCHVISION):
        arch, sep, tag = ref[len(TORCHVISION):].rpartition("-")
        if not sep or not arch or not tag:
            raise ValueError(f"weights reference '{ref}' should read '{TORCHVISION}<arch>-<TAG>'")
        name = torchvision_filename(arch, tag)
        directory = Path(weights_dir) if weights_dir is not None else _default_torchvision_dir()
        path = directory / name
    else:
        raw = ref[len(FILE):] if ref.startswith(FILE) else ref
        if not raw:
            raise ValueError(f"weights reference '{ref}' names no file")
        given = Path(raw).expanduser()
        directory = Path(weights_dir) if weights_dir is not None else Path.cwd()
        if given.is_absolute():
            path = given
        else:
            normal = os.path.normpath(given)
            if normal == ".." or normal.startswith(".." + os.sep):
                raise UnsafePath(f"weights path '{raw}' leaves the weights directory {directory}")
            path = directory / normal
        name, directory = path.name, path.parent
    if not path.is_file():
        raise WeightsNotFound(ref, name, directory)
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)``, unwrapped from ``state_dict``/``model`` keys.

    An empty, truncated or foreign file is a ``WeightsError`` naming it; pickled code an ``UnsafeCheckpoint``."""
    if os.path.getsize(path) == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes); copy the checkpoint again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise _damaged(path, e) from e
        raise UnsafeCheckpoint(
            f"refused to load {path}: it holds pickled objects other than tensors and plain containers, which "
            f"could run code when loaded (torch.load with weights_only=True rejected it). Re-save only the "
            f"state dict (torch.save(model.state_dict(), path)) from code you trust. Detail: {e}"
        ) from e
    except (EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise _damaged(path, e) from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return dict(obj)


def _damaged(path: Path, e: BaseException) -> WeightsError:
    detail = (str(e).strip().splitlines() or [""])[0][:160]
    real = os.path.realpath(path)
    via = f" (a link to {real})" if real != os.path.abspath(path) else ""
    return WeightsError(f"weights file {path}{via} is not a readable PyTorch checkpoint: truncated, damaged or "
                        f"another kind of file ({type(e).__name__}: {detail})")


def _strip(state: dict[str, Tensor], prefix: str, target: set[str]) -> dict[str, Tensor]:
    """Drop ``prefix`` from every key when all keys carry it and the target's keys do not."""
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in target):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: Classifier, ref: str, weights_dir: Path | None) -> None:
    """Load the weights behind ``ref`` into ``model.net`` strictly (every key must match, no key may be left over).

    A ``module.`` prefix (DataParallel) or ``net.`` prefix (a saved ``Classifier``) on every key is dropped.
    """
    path = resolve_weights(ref, weights_dir)
    state = read_state_dict(path)
    target = set(model.net.state_dict())
    for prefix in ("module.", "net."):
        state = _strip(state, prefix, target)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"weights {path} ('{ref}') do not fit model {model.arch}: {e}") from e
