"""Store keys on content, and every load verified (issue 16, points 1 and 2): tiny IDX data and weights files on disk."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdclaims.bank import Bank, RunContext
from kdclaims.data.idx import encode_idx
from kdclaims.probes.base import Measurements
from kdclaims.runner import run_claim
from kdclaims.spec.loader import load_claim_file
from kdclaims.store import CheckpointStore, CorruptCheckpoint, recipe_key

torch.set_num_threads(1)

CLAIM = """\
id: content-keys
title: Content keys
paper: {{section: "4", table: "1"}}
statement: A tiny distilled student is compared with its independent twin on tiny IDX files.
setup:
  teacher: {{arch: tiny_cnn_wide{weights}, recipe: {{epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01}}}}
  student: {{arch: tiny_cnn}}
  methods: [independent, {{name: kl, params: {{gamma: 0.5, alpha: 0.5, tau: 4.0}}}}]
  data: {{name: mnist, size: 8}}
  seeds: [0]
  recipe: {{epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01}}
probe: {{name: accuracy, images: 40}}
expect:
  - {{metric: accuracy, compare: "kl > independent"}}
significance: {{resamples: 100}}
tiers:
  smoke: {{}}
"""


def write_mnist(root: Path, seed: int = 0, n_train: int = 96, n_test: int = 40) -> Path:
    """Tiny MNIST-layout IDX files (random 28x28 pixels, 10 labels) under ``root/mnist``."""
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(encode_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(encode_idx(np.arange(n, dtype=np.uint8) % 10)))
    return folder


def claim_at(folder: Path, weights: str = ""):
    path = folder / "claims" / "content.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CLAIM.format(weights=f", weights: '{weights}'" if weights else ""))
    (item,) = [i for i in load_claim_file(path).items if i.tier == "smoke"]
    assert item.claim is not None, item
    return item.claim


def test_weights_file_replaced_under_its_name_changes_every_key(tmp_path):
    """Other weights saved under the same file name, with the same size and mtime, change the teacher's key and so
    every distilled student's key and the probe key; the file is hashed once while it is unchanged.

    Can fail: on the old main the teacher key held only the file name (and the probe key its size and mtime);
    with ``weights_fingerprint`` returning ``{}`` (name only, as then) the last assertion failed."""
    from kdclaims.fingerprint import _sha256_of
    from kdclaims.models.small import tiny_cnn_wide
    from kdclaims.runner import probe_key

    write_mnist(tmp_path / "data")
    wfile = tmp_path / "w" / "teacher.pt"
    wfile.parent.mkdir()
    torch.save(tiny_cnn_wide(10, in_chans=1).net.state_dict(), wfile)
    claim = claim_at(tmp_path, weights="file:teacher.pt")
    ctx = RunContext(store=CheckpointStore(tmp_path / "cache"), data_root=tmp_path / "data", weights_dir=wfile.parent)

    def keys():
        bank = Bank(claim, ctx)
        return recipe_key(bank.model_key("kl", 0)), recipe_key(probe_key(claim, bank))

    before = keys()
    hashed = _sha256_of.cache_info().misses
    assert keys() == before and _sha256_of.cache_info().misses == hashed  # unchanged file: not hashed again
    st = wfile.stat()
    torch.manual_seed(1)
    torch.save(tiny_cnn_wide(10, in_chans=1).net.state_dict(), wfile)
    os.utime(wfile, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert wfile.stat().st_size == st.st_size
    _sha256_of.cache_clear()  # same (path, size, mtime): only a new process would see it; emulate one
    after = keys()
    assert after[0] != before[0] and after[1] != before[1]


def test_changed_or_truncated_data_with_a_warm_cache_is_never_reused(tmp_path):
    """A run fills the store; the test images are then replaced (same names, sizes and count): the probe cache
    entry is stale and the probe runs again. Then the training images are replaced: every model key changes and the
    students train again. A truncated training file with a warm cache is an error naming the file.

    Can fail: on the old main data entered the keys by name and parameters only: the second run was a probe cache
    hit (``probe_cached`` True), the third reused every student, and the truncated file passed unread."""
    root = tmp_path / "data"
    folder = write_mnist(root, seed=0)
    claim = claim_at(tmp_path)
    ctx = RunContext(store=CheckpointStore(tmp_path / "cache"), data_root=root)
    first = run_claim(claim, ctx)
    assert not first.probe_cached
    assert run_claim(claim, ctx).probe_cached  # unchanged data: a hit

    fresh = write_mnist(tmp_path / "other", seed=1)
    shutil.copy(fresh / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    second = run_claim(claim, ctx)
    assert not second.probe_cached
    assert {e["source"] for e in second.events} == {"cache"}

    shutil.copy(fresh / "train-images-idx3-ubyte.gz", folder / "train-images-idx3-ubyte.gz")
    third = run_claim(claim, ctx)
    assert {e["source"] for e in third.events} == {"trained"} and not third.probe_cached

    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: truncated payload"):
        run_claim(claim, ctx)


def test_swapped_checkpoint_entries_are_quarantined_and_retrained(tmp_path):
    """``model.pt`` and ``manifest.json`` swapped between two complete entries (each pair self-consistent) are
    refused on load, moved aside and trained again.

    Can fail: on the old main ``load`` checked only the sha256 in the manifest against model.pt, so the swapped
    pair loaded as the other model and ``trained`` stayed 0."""
    store = CheckpointStore(tmp_path / "cache")
    a, b = {"kind": "unit", "arm": "independent"}, {"kind": "unit", "arm": "kl"}
    store.get_or_train(a, lambda w: {"w": torch.zeros(3)})
    store.get_or_train(b, lambda w: {"w": torch.ones(3)})
    ea, eb = store.entry(recipe_key(a)), store.entry(recipe_key(b))
    tmp = tmp_path / "swap"
    shutil.move(ea, tmp)
    shutil.move(eb, ea)
    shutil.move(tmp, eb)
    with pytest.raises(CorruptCheckpoint, match="describes another model"):
        store.load(recipe_key(a))
    state, hit = store.get_or_train(a, lambda w: {"w": torch.full((3,), 7.0)})
    assert not hit and state["w"].tolist() == [7.0] * 3 and store.trained == 3
    assert [p.name.split(".")[1].split("-")[0] for p in ea.parent.iterdir() if p.name != ea.name] == ["corrupt"]


def test_probe_cache_index_swaps_and_copies_are_detected(tmp_path):
    """Two arms swapped in a probe entry's ``.json`` index (its ``.npz`` sha still matching), or a whole entry
    copied under another key, read as a miss and are moved aside.

    Can fail: on the old main the sha covered the ``.npz`` only: the swapped index loaded with the arms exchanged
    (the sign of a contrast flipped) and the copied entry loaded under the wrong key."""
    store = CheckpointStore(tmp_path / "cache")
    m = Measurements()
    m.add("accuracy", "independent", np.array([[1.0, 1.0]]))
    m.add("accuracy", "kl", np.array([[0.0, 0.0]]))
    key, other = "a" * 32, "b" * 32
    store.save_measurements(key, m)
    meta = store.measurements_path(key).with_suffix(".json")
    info = json.loads(meta.read_text())
    info["index"] = [info["index"][1], info["index"][0]]
    meta.write_text(json.dumps(info))
    assert store.load_measurements(key) is None
    aside = sorted(p.name.split(".")[1] for p in meta.parent.iterdir() if ".corrupt-" in p.name)
    assert aside == ["json", "npz"]

    store.save_measurements(key, m)
    dst = store.measurements_path(other)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".npz", ".json"):
        shutil.copy(store.measurements_path(key).with_suffix(suffix), dst.with_suffix(suffix))
    assert store.load_measurements(other) is None
    assert store.load_measurements(key).values["accuracy"]["kl"].tolist() == [[0.0, 0.0]]


def test_read_only_complete_store_serves_cache_hits(tmp_path, monkeypatch):
    """A store filled by one run, then read-only (every write under it raises EROFS, as on a read-only mount),
    serves a second run whose every model is a cache hit; a model it lacks is a clear StoreError naming the
    read-only store, not an OSError traceback.

    Can fail: on the old main ``CheckpointStore.__init__`` wrote a probe file and raised StoreError for any
    read-only store, so the second ``CheckpointStore`` raised."""
    import errno
    import pathlib

    from kdclaims.store import StoreError

    root = tmp_path / "cache"
    CheckpointStore(root).get_or_train({"k": 1}, lambda w: {"w": torch.ones(2)})

    def refuse(orig):
        def wrapper(self, *a, **kw):
            if root in Path(self).parents or Path(self) == root:
                if orig is pathlib.Path.mkdir and Path(self).is_dir():
                    return None if kw.get("exist_ok") else orig(self, *a, **kw)
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return orig(self, *a, **kw)
        return wrapper

    for name in ("mkdir", "write_text", "write_bytes", "touch"):
        monkeypatch.setattr(pathlib.Path, name, refuse(getattr(pathlib.Path, name)))
    ro = CheckpointStore(root)
    assert ro.unwritable
    state, hit = ro.get_or_train({"k": 1}, lambda w: {})
    assert hit and state["w"].tolist() == [1.0, 1.0]
    with pytest.raises(StoreError, match="read-only"):
        ro.get_or_train({"k": 2}, lambda w: {"w": torch.ones(2)})


def test_folder_split_fingerprint_follows_content_not_location(tmp_path):
    """The fingerprint of an image-folder split (ImageNet layout, 2 classes x 3 PNGs) changes when one image is
    rewritten under its name or renamed, and not when the whole tree is copied elsewhere.

    Can fail: with ``_folder_update`` hashing only the index (no file contents) the rewritten image kept the
    fingerprint; hashing absolute paths made the copied tree differ."""
    from PIL import Image

    from kdclaims.data import build_dataset, folder
    from kdclaims.fingerprint import split_fingerprint

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            d = tmp_path / "a" / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{k}.png")

    def fp(root: Path) -> str:
        folder._scan.cache_clear()  # the folder listing is cached per process (as a new run would, list again)
        return split_fingerprint(build_dataset("imagenet", "test", root=root, size=8, num_workers=0))

    first = fp(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert fp(tmp_path / "b") == first
    img = tmp_path / "b" / "imagenet" / "val" / "n02" / "1.png"
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img)
    assert fp(tmp_path / "b") != first
    shutil.copy(tmp_path / "a" / "imagenet" / "val" / "n02" / "1.png", img)
    assert fp(tmp_path / "b") == first
    img.rename(img.with_name("4.png"))
    assert fp(tmp_path / "b") != first


def test_model_keys_follow_the_files_read_not_where_they_are_or_how_floats_round(tmp_path):
    """The same IDX files under two data roots give equal model keys (a store filled in one checkout serves
    another); the training split's fingerprint ignores a one-ulp change of its float pixels (another CPU's kernels
    may round resizing that way) and changes when a file it was read from changes.

    Can fail: with the fingerprint hashing the split's float tensors (this branch's first version) the one-ulp
    change gave another fingerprint; with absolute file names in it the two roots gave other keys."""
    from kdclaims.fingerprint import split_fingerprint

    write_mnist(tmp_path / "a")
    write_mnist(tmp_path / "b")
    claim = claim_at(tmp_path)
    store = CheckpointStore(tmp_path / "cache")
    banks = [Bank(claim, RunContext(store=store, data_root=tmp_path / root)) for root in ("a", "b")]
    assert recipe_key(banks[0].model_key("kl", 0)) == recipe_key(banks[1].model_key("kl", 0))
    spec = claim.setup.data
    split = banks[0].split(spec, "train")
    files = banks[0]._read[f"train:{spec.model_dump_json()}"][2]
    assert {Path(f).name for f in files} == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    before = split_fingerprint(split, files)
    split.x.copy_(torch.nextafter(split.x, torch.full_like(split.x, 2.0)))
    assert split_fingerprint(split, files) == before
    write_mnist(tmp_path / "a", seed=5)
    assert split_fingerprint(split, files) != before


def test_nested_read_recorders_end_cleanly(tmp_path):
    """Nested ``recording_reads`` blocks (a builder that builds another split inside a recorded build) both see a
    file noted inside the inner one and leave no recorder behind. Can fail: with ``list.remove`` (equality, and
    two empty sets are equal) the inner exit removed the outer set and the outer exit raised ValueError, which
    took down the FairFace smoke item."""
    from kdclaims import fingerprint
    from kdclaims.fingerprint import note_read, recording_reads

    with recording_reads() as outer:
        with recording_reads() as inner:
            pass
        with recording_reads() as again:
            note_read(tmp_path / "x.idx")
    assert inner == set() and again == outer == {os.path.realpath(tmp_path / "x.idx")}
    assert fingerprint._recorders == []
