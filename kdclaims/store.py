"""The checkpoint store: content-addressed by the full training recipe, shared by claims, runs and workers.

Layout under ``root``::

    ckpt/<k[:2]>/<key>/model.pt        the student's (or teacher's) state dict
    ckpt/<k[:2]>/<key>/manifest.json   recipe, sha256 and size of model.pt, train_seconds, and under ``training``
                                       the per-epoch history (loss, train_acc, val_acc, ...); written last = complete
    ckpt/<k[:2]>/<key>/work/           the trainer's per-epoch resume checkpoint while training
    probe/<k[:2]>/<key>.npz|.json      cached probe measurements: the .npz holds the arrays and their index (key,
                                       metric/arm of each array, extras, fingerprints of the data read); the
                                       .json the same index plus the .npz's sha256. Reused only when both agree,
                                       name the key asked for, and the data read is unchanged (``runner``)
    locks/<key>.lock                   one trainer per key across processes (fcntl lock: a dead holder frees it)

A store may have read-only *fallbacks*: other stores (the shipped ``fixtures/store`` of pre-trained smoke models)
consulted, sha-checked, when an entry is missing here. A fallback hit is served as a cache hit and never copied.

Keys of trained models carry ``streams`` (``kdclaims.seeding.STREAMS_VERSION``): version 2 derives every random
stream from the model's role and seed, so entries written under version 1 are never hit again (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from kdclaims.atomic import atomic_save, atomic_write_text, move_aside

FORMAT_VERSION = 1
log = logging.getLogger("kdclaims.store")
# write errors (a training run only writes to the cache): reported as StoreError wherever they come from
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class StoreError(RuntimeError):
    """The cache cannot be used (no permission, disk full, a corrupt entry that cannot be repaired)."""


class CorruptCheckpoint(StoreError):
    pass


def recipe_key(recipe: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the recipe plus the store format version (first 32 hex digits)."""
    blob = json.dumps({"format": FORMAT_VERSION, **recipe}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _manifest_recipe_key(manifest: dict[str, Any]) -> str:
    recipe = manifest.get("recipe")
    return recipe_key(recipe) if isinstance(recipe, dict) else "none"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TrainedState(dict):
    """A state dict (what ``train_fn`` returns) that also carries facts about its training for the manifest.

    ``info`` lands in the manifest under ``training`` (e.g. the per-epoch ``history``); ``info["seconds"]``, when
    given, is the manifest's ``train_seconds`` (the model's own training, without a teacher trained on demand).
    """

    def __init__(self, state: dict[str, torch.Tensor], **info: Any):
        super().__init__(state)
        self.info = info


class CheckpointStore:
    """Train once, reuse everywhere. ``get_or_train`` is safe across processes and xdist workers."""

    def __init__(self, root: Path | str, lock_timeout: float = 6 * 3600, *,
                 fallbacks: "list[CheckpointStore] | tuple[CheckpointStore, ...]" = ()):
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.fallbacks = tuple(fallbacks)
        self.hits = 0
        self.trained = 0
        self.unwritable: str | None = None  # why the store cannot be written, when it cannot
        try:
            for sub in ("ckpt", "probe", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = self.root / "locks" / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            if not (self.root / "ckpt").is_dir() or not os.access(self.root / "ckpt", os.R_OK | os.X_OK):
                raise StoreError(
                    f"cannot use checkpoint cache {self.root}: {e.strerror or e}; "
                    f"choose a writable folder with --kd-cache DIR"
                ) from e
            self.unwritable = e.strerror or str(e)  # complete entries can still be read
            log.warning("checkpoint cache %s is read-only (%s): cache hits only", self.root, self.unwritable)

    @classmethod
    def read_only(cls, root: Path | str) -> "CheckpointStore":
        """A store that is only read (a fallback): no folders are created and nothing is written."""
        store = object.__new__(cls)
        store.root, store.lock_timeout, store.fallbacks, store.hits, store.trained = Path(root), 0.0, (), 0, 0
        store.unwritable = "a read-only fallback store"
        return store

    def entry(self, key: str) -> Path:
        return self.root / "ckpt" / key[:2] / key

    def _from_fallbacks(self, key: str, name: str) -> dict[str, torch.Tensor] | None:
        """The state of ``key`` from the first fallback holding a sound copy; a damaged copy is skipped."""
        for fb in self.fallbacks:
            if fb.is_complete(key):
                try:
                    state = fb.load(key)
                except CorruptCheckpoint as e:
                    log.warning("fallback store entry unusable, ignored: %s", e)
                    continue
                log.info("fallback store hit: %s (%s) from %s", name, key[:12], fb.root)
                return state
        return None

    def _lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{key}.lock"), timeout=self.lock_timeout)

    def is_complete(self, key: str) -> bool:
        return (self.entry(key) / "manifest.json").is_file()

    def load(self, key: str) -> dict[str, torch.Tensor]:
        """Load a complete entry after checking its sha256; a mismatch raises ``CorruptCheckpoint``."""
        d = self.entry(key)
        try:
            manifest = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise CorruptCheckpoint(f"checkpoint {d}: unreadable manifest ({e})") from e
        if not isinstance(manifest, dict):
            raise CorruptCheckpoint(f"checkpoint {d}: manifest is not a JSON object")
        if manifest.get("key") != key or _manifest_recipe_key(manifest) != key:
            raise CorruptCheckpoint(
                f"checkpoint {d}: its manifest describes another model (key {str(manifest.get('key'))[:12]}…, "
                f"recipe key {_manifest_recipe_key(manifest)[:12]}…, asked for {key[:12]}…); entries were swapped "
                f"or copied"
            )
        model = d / "model.pt"
        if not model.is_file():
            raise CorruptCheckpoint(f"checkpoint {d}: model.pt is missing")
        digest = file_sha256(model)
        if digest != manifest.get("sha256"):
            raise CorruptCheckpoint(
                f"checkpoint {model}: sha256 {digest[:12]}… does not match its manifest "
                f"({str(manifest.get('sha256'))[:12]}…); the file was changed or damaged"
            )
        try:
            state = torch.load(model, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is corruption here
            raise CorruptCheckpoint(f"checkpoint {model}: cannot be loaded ({e})") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CorruptCheckpoint(f"checkpoint {model}: not a state dict (a mapping from names to tensors)")
        return state

    def manifest(self, key: str) -> dict[str, Any]:
        """The entry's manifest, here or (for a fallback hit) in the first fallback that holds it."""
        for store in (self, *self.fallbacks):
            path = store.entry(key) / "manifest.json"
            if path.is_file():
                return json.loads(path.read_text())
        raise FileNotFoundError(f"no manifest for {key} in {self.root} or its fallbacks")

    def _cache_error(self, e: OSError) -> bool:
        """A disk-full/read-only error, or any error on a path inside the cache."""
        if e.errno in _WRITE_ERRNOS:
            return True
        root = os.path.abspath(self.root)
        names = [f for f in (e.filename, e.filename2) if isinstance(f, (str, os.PathLike))]
        return any(os.path.abspath(f).startswith(root + os.sep) for f in names)

    def _quarantine(self, key: str) -> None:
        d = self.entry(key)
        target = move_aside(d, "corrupt")
        log.warning("moved corrupt checkpoint %s aside to %s; it will be retrained", d, target)

    def _need_write(self, name: str, why: str) -> None:
        if self.unwritable:
            raise StoreError(f"cannot train {name}: {why}, and the checkpoint cache {self.root} is read-only "
                             f"({self.unwritable}); choose a writable folder with --kd-cache DIR")

    def get_or_train(
        self,
        recipe: dict[str, Any],
        train_fn: Callable[[Path], dict[str, torch.Tensor]],
        *,
        label: str = "",
        on_corrupt: str = "retrain",
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """Return ``(state_dict, cache_hit)``; train with ``train_fn(workdir)`` under a lock when absent.

        ``on_corrupt``: "retrain" moves a damaged entry aside and trains again; "refuse" raises.
        """
        key = recipe_key(recipe)
        name = label or key[:12]
        if not self.is_complete(key):
            state = self._from_fallbacks(key, name)
            if state is not None:
                self.hits += 1
                return state, True
        try:
            for attempt in (0, 1):
                if self.is_complete(key):
                    try:
                        state = self.load(key)
                        self.hits += 1
                        log.info("cache hit: %s (%s)", name, key[:12])
                        return state, True
                    except CorruptCheckpoint as e:
                        if on_corrupt == "refuse":
                            raise
                        self._need_write(name, f"its entry is damaged ({e})")
                        with self._lock(key):
                            if self.is_complete(key):
                                try:
                                    self.load(key)
                                except CorruptCheckpoint:
                                    self._quarantine(key)
                        continue
                self._need_write(name, "it is not in the cache")
                with self._lock(key):
                    if self.is_complete(key):
                        continue  # another process finished it while we waited
                    log.info("training: %s (%s)", name, key[:12])
                    d = self.entry(key)
                    t0 = time.time()
                    try:
                        d.mkdir(parents=True, exist_ok=True)
                        state = train_fn(d / "work")
                    except OSError as e:
                        if not self._cache_error(e):
                            raise  # e.g. teacher weights or data the run reads: not the cache's problem
                        raise StoreError(
                            f"training {name} could not write to the checkpoint cache ({d}): {e.strerror or e}; "
                            f"free space or choose another --kd-cache DIR"
                        ) from e
                    self._commit(key, recipe, state, time.time() - t0)
                    self.trained += 1
                    return state, False
        except Timeout as e:
            raise StoreError(f"waited {self.lock_timeout:.0f}s for another process to train {name}") from e
        raise StoreError(f"checkpoint {name} could not be produced")

    def _commit(self, key: str, recipe: dict[str, Any], state: dict[str, torch.Tensor], seconds: float) -> None:
        d = self.entry(key)
        try:
            atomic_save({k: v.detach().cpu() for k, v in state.items()}, d / "model.pt")
            manifest = {
                "format": FORMAT_VERSION,
                "key": key,
                "recipe": recipe,
                "sha256": file_sha256(d / "model.pt"),
                "bytes": (d / "model.pt").stat().st_size,
                "train_seconds": round(seconds, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            info = getattr(state, "info", None)
            if info:
                manifest["training"] = {k: v for k, v in info.items() if k != "seconds"}
                if info.get("seconds") is not None:
                    manifest["train_seconds"] = round(float(info["seconds"]), 2)
            atomic_write_text(d / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True, default=str))
        except OSError as e:
            raise StoreError(
                f"cannot write checkpoint to {d}: {e.strerror or e}; free space or choose another --kd-cache DIR"
            ) from e
        shutil.rmtree(d / "work", ignore_errors=True)

    # -- probe measurement cache -------------------------------------------------------------------------
    def measurements_path(self, key: str) -> Path:
        return self.root / "probe" / key[:2] / key

    def load_measurements(self, key: str, *, with_reads: bool = False):
        """The cached measurements of ``key`` (with the data fingerprints they were measured on when
        ``with_reads``), or None. The ``.npz`` holds the arrays and the index JSON; the ``.json`` beside it holds
        the same index and the ``.npz``'s sha256. An entry whose hashes, index or key disagree is moved aside."""
        from kdclaims.probes.base import Measurements

        base = self.measurements_path(key)
        meta = base.with_suffix(".json")
        if not meta.is_file():
            return None
        try:
            info = json.loads(meta.read_text())
            npz = base.with_suffix(".npz")
            if file_sha256(npz) != info["sha256"]:
                raise ValueError("the .npz does not match the sha256 in its .json")
            with np.load(npz, allow_pickle=False) as z:
                inner = json.loads(bytes(z["meta"]).decode())
                if inner != {k: v for k, v in info.items() if k != "sha256"} or inner.get("key") != key:
                    raise ValueError("the .json index differs from the one stored in the .npz, or names another key")
                values: dict[str, dict[str, np.ndarray]] = {}
                for i, (metric, arm) in enumerate(inner["index"]):
                    values.setdefault(metric, {})[arm] = z[f"a{i}"]
            m = Measurements(values=values, extras=inner["extras"])
            return (m, inner.get("reads", [])) if with_reads else m
        except FileNotFoundError:  # written or removed by another process meanwhile: measure again
            return None
        except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
            self._quarantine_measurements(base, e)
            return None

    def _quarantine_measurements(self, base: Path, why: Exception) -> None:
        for suffix in (".json", ".npz"):
            try:
                target = move_aside(base.with_suffix(suffix), "corrupt")
                log.warning("probe cache entry %s is damaged or tampered (%s); moved aside to %s, measuring again",
                            base.with_suffix(suffix), why, target)
            except OSError:
                pass  # already gone, or a read-only store: it is recomputed either way

    def save_measurements(self, key: str, m, reads: list[dict[str, Any]] | None = None) -> None:
        """Store ``m`` under ``key`` with the data fingerprints it was measured on (see ``load_measurements``).
        On a read-only store the measurements are not cached (a warning), since nothing else needs writing."""
        base = self.measurements_path(key)
        index, arrays = [], {}
        for metric, arms in m.values.items():
            for arm, arr in arms.items():
                arrays[f"a{len(index)}"] = arr
                index.append([metric, arm])
        inner = json.loads(json.dumps({"key": key, "index": index, "extras": m.extras, "reads": reads or []},
                                      default=_json_default))
        arrays["meta"] = np.frombuffer(json.dumps(inner).encode(), dtype=np.uint8)
        tmp = base.with_name(base.name + f".tmp{os.getpid()}.npz")
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, **arrays)
            os.replace(tmp, base.with_suffix(".npz"))
            info = {**inner, "sha256": file_sha256(base.with_suffix(".npz"))}
            atomic_write_text(base.with_suffix(".json"), json.dumps(info))
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if self.unwritable:
                log.warning("probe measurements not cached: the store %s is read-only (%s)", self.root, self.unwritable)
                return
            raise StoreError(
                f"cannot write probe measurements to {base.parent}: {e.strerror or e}; "
                f"free space or choose another --kd-cache DIR"
            ) from e


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
