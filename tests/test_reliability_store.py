"""The checkpoint store under crashes, concurrency, corruption and a full or unusable disk (CPU, tiny models)."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch

import kdclaims.atomic
import kdclaims.store
from kdclaims.store import CheckpointStore, CorruptCheckpoint, StoreError, recipe_key
from reliability_helpers import (TINY_RECIPE_KEY, crash_worker, fork, lock_holder, sigkill, store_worker, tiny_recipe,
                                 tiny_split, tiny_train_fn, wait_for)

torch.set_num_threads(1)
RECIPE = {"kind": "reliability-unit", "arch": "none", "seed": 3}


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(32, 8, generator=g), "b": torch.randn(8, generator=g)}


class Counting:
    """A train_fn that counts its calls and returns ``small_state()``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, workdir: Path) -> dict[str, torch.Tensor]:
        self.calls += 1
        return small_state()


def trained_store(tmp_path: Path) -> tuple[CheckpointStore, str]:
    store = CheckpointStore(tmp_path / "cache")
    store.get_or_train(RECIPE, Counting())
    return store, recipe_key(RECIPE)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -------------------------------------------------------------------------------------------- 2. crash
def test_sigkill_mid_training_leaves_no_complete_entry_and_resume_matches(tmp_path):
    """A forked trainer (tiny_cnn, 3 epochs of 30 steps, kdclaims.train.train through get_or_train) is SIGKILLed
    once epoch 1's resume checkpoint exists. No entry is complete; the next get_or_train resumes after the last
    saved epoch and ends with exactly the weights of an uninterrupted run in another cache.

    Can fail: with ``is_complete`` temporarily returning ``entry(key).is_dir()`` the first assertion failed; with
    ``torch.optim.SGD.load_state_dict`` monkeypatched to a no-op for the resumed run (momentum lost) the weights
    differed and the last assertion failed."""
    root, log = tmp_path / "crash", tmp_path / "crash.log"
    key = recipe_key(TINY_RECIPE_KEY)
    work = CheckpointStore(root).entry(key) / "work" / "last.pt"
    child = fork(crash_worker, str(root), str(log))
    wait_for(lambda: work.exists() or not child.is_alive(), 120, "epoch 1's checkpoint")
    sigkill(child)
    saved_epoch = torch.load(work, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 3, "the kill did not land mid-run"

    store = CheckpointStore(root)
    assert not store.is_complete(key) and not (store.entry(key) / "model.pt").exists()
    assert read_log(log) == []  # the killed run never returned
    resumed, hit = store.get_or_train(TINY_RECIPE_KEY, tiny_train_fn(tiny_recipe(), tiny_split(), log=log))
    assert hit is False
    (run,) = read_log(log)
    assert run["resumed_from_epoch"] == saved_epoch and run["epochs"] == 3
    assert store.is_complete(key) and not (store.entry(key) / "work").exists()

    ref_log = tmp_path / "ref.log"
    reference, _ = CheckpointStore(tmp_path / "ref").get_or_train(
        TINY_RECIPE_KEY, tiny_train_fn(tiny_recipe(), tiny_split(), log=ref_log))
    assert read_log(ref_log)[0]["resumed_from_epoch"] is None
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    print(f"\nkilled with epoch {saved_epoch}/3 saved; resumed_from_epoch={run['resumed_from_epoch']}; "
          f"{len(reference)} tensors bit-identical to the uninterrupted run")


# -------------------------------------------------------------------------------------- 3. concurrency
def test_two_processes_needing_the_same_teacher_train_it_once(tmp_path):
    """Two forked processes ask for the same recipe at once; train_fn appends to a marker file and takes 1.5 s.
    The marker has one line; one process trained, the other waited and loaded the same weights.

    Can fail: with ``CheckpointStore._lock`` temporarily returning ``contextlib.nullcontext()`` the marker had two
    lines."""
    root, marker = tmp_path / "cache", tmp_path / "trained.txt"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    kids = [fork(store_worker, str(root), RECIPE, str(marker), 1.5, str(o)) for o in outs]
    for k in kids:
        k.join(120)
        assert k.exitcode == 0
    assert len(marker.read_text().splitlines()) == 1
    results = [json.loads(o.read_text()) for o in outs]
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["sum"] == results[1]["sum"]


def test_stale_lock_of_a_killed_holder_does_not_block(tmp_path):
    """A forked process takes the store's lock for a key and is SIGKILLed. While it lives, get_or_train times
    out (the lock is real); after the kill the lock file is still on disk, yet get_or_train trains at once
    (fcntl locks die with their process).

    Can fail: checked with the holder left alive (no kill) -> the final get_or_train timed out."""
    root, ready = tmp_path / "cache", tmp_path / "ready"
    key = recipe_key(RECIPE)
    holder = fork(lock_holder, str(root), key, str(ready))
    wait_for(ready.exists, 60, "the lock holder")
    with pytest.raises(StoreError, match="waited"):
        CheckpointStore(root, lock_timeout=0.3).get_or_train(RECIPE, Counting())
    sigkill(holder)
    assert (root / "locks" / f"{key}.lock").exists()  # stale file left behind
    train = Counting()
    t0 = time.monotonic()
    state, hit = CheckpointStore(root, lock_timeout=5).get_or_train(RECIPE, train)
    waited = time.monotonic() - t0
    assert hit is False and train.calls == 1 and waited < 5
    print(f"\nlock of the killed holder re-acquired and trained in {waited:.3f} s")


# ------------------------------------------------------------------------------------ 4. corruption
def flip_byte(path: Path, where: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_byte_is_moved_aside_and_retrained(tmp_path, caplog, where):
    """One flipped bit anywhere in model.pt: the sha256 check catches it, the entry is moved to a
    ``<key>.corrupt-*`` folder (with the damaged file), a warning is logged, and the model is retrained.

    Can fail: with the sha256 comparison in ``CheckpointStore.load`` temporarily removed, the flip in the middle
    (a tensor byte) loaded silently as a cache hit."""
    store, key = trained_store(tmp_path)
    flip_byte(store.entry(key) / "model.pt", where)
    train = Counting()
    with caplog.at_level(logging.WARNING, logger="kdclaims.store"):
        state, hit = store.get_or_train(RECIPE, train)
    assert hit is False and train.calls == 1
    assert all(torch.equal(state[k], small_state()[k]) for k in state)
    (aside,) = store.entry(key).parent.glob(f"{key}.corrupt-*")
    assert (aside / "model.pt").exists() and (aside / "manifest.json").exists()
    assert "moved corrupt checkpoint" in caplog.text and str(aside) in caplog.text
    assert store.load(key).keys() == state.keys()  # the new entry is sound


def test_refuse_policy_raises_a_clear_error(tmp_path):
    """``on_corrupt="refuse"``: CorruptCheckpoint naming the file, both digests' prefixes and what happened; the
    entry stays where it is. Can fail: checked against a store whose load skips the digest (no exception)."""
    store, key = trained_store(tmp_path)
    model = store.entry(key) / "model.pt"
    flip_byte(model)
    with pytest.raises(CorruptCheckpoint) as e:
        store.get_or_train(RECIPE, Counting(), on_corrupt="refuse")
    msg = str(e.value)
    assert str(model) in msg and "does not match its manifest" in msg and "changed or damaged" in msg
    assert model.exists() and not list(store.entry(key).parent.glob("*.corrupt-*"))


def test_two_corruptions_within_a_second_are_both_quarantined(tmp_path):
    """Can fail: the original ``_quarantine`` named the folder by the second only; the second move raised
    OSError(ENOTEMPTY) (seen before the fix)."""
    store, key = trained_store(tmp_path)
    for _ in range(2):
        flip_byte(store.entry(key) / "model.pt")
        assert store.get_or_train(RECIPE, Counting())[1] is False
    assert len(list(store.entry(key).parent.glob(f"{key}.corrupt-*"))) == 2


@pytest.mark.parametrize("manifest", ["", '{"format": 1, "key": "ab', "[]", "null", '"text"', '{"sha256": 5}', "{}"],
                         ids=["empty", "truncated", "list", "null", "string", "wrong-digest-type", "no-digest"])
def test_damaged_manifest_is_handled(tmp_path, manifest):
    """A truncated, empty or malformed manifest.json: "refuse" raises CorruptCheckpoint, "retrain" retrains.
    Can fail: the original ``load`` raised AttributeError for the list/null/string manifests (seen before the
    fix)."""
    store, key = trained_store(tmp_path)
    (store.entry(key) / "manifest.json").write_text(manifest)
    with pytest.raises(CorruptCheckpoint, match="manifest"):
        store.get_or_train(RECIPE, Counting(), on_corrupt="refuse")
    train = Counting()
    assert store.get_or_train(RECIPE, train)[1] is False and train.calls == 1


def test_missing_model_file_is_retrained(tmp_path):
    """Can fail: with the ``model.is_file()`` check in ``load`` removed, a bare FileNotFoundError escaped."""
    store, key = trained_store(tmp_path)
    (store.entry(key) / "model.pt").unlink()
    with pytest.raises(CorruptCheckpoint, match="missing"):
        store.load(key)
    assert store.get_or_train(RECIPE, Counting())[1] is False


def test_tampered_probe_cache_is_recomputed_not_trusted(tmp_path):
    """A probe-cache .json replaced by other JSON, or its .npz changed, reads as a miss (None), never a crash or
    wrong numbers. Can fail: the original ``load_measurements`` raised TypeError for a list-valued index."""
    import numpy as np

    from kdclaims.probes.base import Measurements

    store = CheckpointStore(tmp_path / "cache")
    m = Measurements()
    m.add("accuracy", "kl", np.array([[1.0, 0.0, 1.0]]))
    store.save_measurements("k" * 32, m)
    base = store.measurements_path("k" * 32)
    assert store.load_measurements("k" * 32).values["accuracy"]["kl"].tolist() == [[1.0, 0.0, 1.0]]
    for text in ("[]", '{"index": 5, "extras": {}, "sha256": "x"}', '{"index": [[1]], "extras": {}}', "{"):
        store.save_measurements("k" * 32, m)  # a damaged entry is moved aside: write it again for each case
        base.with_suffix(".json").write_text(text)
        assert store.load_measurements("k" * 32) is None, text
    store.save_measurements("k" * 32, m)
    flip_byte(base.with_suffix(".npz"), 0.9)
    assert store.load_measurements("k" * 32) is None


# ------------------------------------------------------------------------------------- 6. resources
def test_unusable_cache_folder_is_one_clear_error(tmp_path):
    """A cache under a regular file (ENOTDIR; tests run as root here, so chmod 555 would not bite) and one
    under /proc: one StoreError naming the folder and the --kd-cache option. Can fail: with the ``except
    OSError`` of ``CheckpointStore.__init__`` narrowed to another type, NotADirectoryError escaped."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (blocker / "cache", Path("/proc/kdclaims-cache")):
        with pytest.raises(StoreError) as e:
            CheckpointStore(folder)
        assert str(folder) in str(e.value) and "--kd-cache" in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_cache_folder_is_one_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="--kd-cache"):
            CheckpointStore(ro / "cache")
    finally:
        ro.chmod(0o755)


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_the_model(tmp_path, monkeypatch):
    """``atomic_save`` raising ENOSPC: StoreError saying what failed and naming --kd-cache; nothing the store
    would load is left; once there is room the next call trains and commits.
    Can fail: checked with the ``except OSError`` in ``_commit`` removed -> a bare OSError escaped."""
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    monkeypatch.setattr(kdclaims.store, "atomic_save", enospc)
    with pytest.raises(StoreError) as e:
        store.get_or_train(RECIPE, Counting())
    assert "No space left on device" in str(e.value) and "--kd-cache" in str(e.value)
    assert str(store.entry(key)) in str(e.value)
    assert not store.is_complete(key) and not (store.entry(key) / "model.pt").exists()
    monkeypatch.undo()
    assert store.get_or_train(RECIPE, Counting())[1] is False and store.is_complete(key)


def test_disk_full_half_way_through_a_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """torch.save writes half its bytes, then the disk is full: the temporary file is removed and no model.pt
    (or manifest) exists. Same for the manifest's write. Can fail: with ``kdclaims.atomic._temp_beside``
    monkeypatched to a version without its cleanup, a ``.model.pt.*.tmp`` file was left and this failed."""
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    real_save = torch.save

    def half_then_full(obj, f, *a, **kw):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(kdclaims.atomic.torch, "save", half_then_full)
    with pytest.raises(StoreError, match="No space left"):
        store.get_or_train(RECIPE, Counting())
    assert sorted(p.name for p in store.entry(key).iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(kdclaims.store, "atomic_write_text", enospc)
    with pytest.raises(StoreError, match="No space left"):
        store.get_or_train(RECIPE, Counting())
    assert not store.is_complete(key)


def test_disk_full_inside_the_trainer_is_a_store_error(tmp_path, monkeypatch):
    """The trainer's per-epoch checkpoint (kdclaims.train's atomic_save) hits ENOSPC: StoreError naming the
    cache. Can fail: the original store let the bare OSError through (seen before the fix)."""
    import kdclaims.train

    monkeypatch.setattr(kdclaims.train, "atomic_save", enospc)
    store = CheckpointStore(tmp_path / "cache")
    with pytest.raises(StoreError, match="could not write to the checkpoint cache"):
        store.get_or_train(TINY_RECIPE_KEY, tiny_train_fn(tiny_recipe(epochs=1, max_steps=2), tiny_split(64)))


def test_missing_teacher_weights_inside_training_are_not_a_store_error(tmp_path):
    """A FileNotFoundError for something the run reads (outside the cache) passes through unchanged, so the
    runner can still turn it into a skip naming --kd-weights."""
    from kdclaims.models.weights import WeightsNotFound

    def needs_weights(workdir: Path):
        raise WeightsNotFound("file:t.pt", "t.pt", tmp_path / "weights")

    with pytest.raises(WeightsNotFound):
        CheckpointStore(tmp_path / "cache").get_or_train(RECIPE, needs_weights)
