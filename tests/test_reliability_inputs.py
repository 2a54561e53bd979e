"""Bad weights and data files at run time (issue 16, point 5): one clear error naming the file, never a traceback
from deep inside torch, PIL, csv or gzip. Real files on disk."""

from __future__ import annotations

import errno
import gzip
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kdclaims.atomic
from kdclaims.data.fairface import read_labels
from kdclaims.data.folder import load_rgb
from kdclaims.data.idx import encode_idx, read_idx
from kdclaims.errors import DataError, WeightsError
from kdclaims.models.weights import read_state_dict
from kdclaims.store import CheckpointStore, StoreError


def _good_checkpoint(path: Path) -> Path:
    torch.save({"w": torch.zeros(256)}, path)
    return path


@pytest.mark.parametrize("case", ["empty", "truncated", "symlink-to-text"])
def test_unreadable_weights_file_is_one_error_naming_it(tmp_path, case):
    """An empty file, a checkpoint cut in half, and a symlink to a text file each raise ``WeightsError`` whose
    message names the file. Can fail: on the old main they raised EOFError, RuntimeError (PytorchStreamReader) and
    KeyError/IndexError from inside torch.load, none naming the file."""
    path = tmp_path / "teacher.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        raw = _good_checkpoint(tmp_path / "full.pt").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    else:
        (tmp_path / "notes.txt").write_text("these are not weights\n")
        path.symlink_to(tmp_path / "notes.txt")
    with pytest.raises(WeightsError, match=str(path)):
        read_state_dict(path)


def test_truncated_image_is_one_error_naming_it(tmp_path):
    """A JPEG cut after its first third raises ``DataError`` naming the file. Can fail: on the old main PIL's
    ``OSError: image file is truncated`` escaped without the file's name."""
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=f"{path}.*cannot be decoded"):
        load_rgb(str(path))


@pytest.mark.parametrize("pixels", [150, 400])
def test_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch, pixels):
    """With PIL's pixel limit lowered to 100, an image of 150 pixels (PIL only warns, below twice the limit) and
    one of 400 (PIL raises) are both a ``DataError`` naming the file. Can fail: on the old main the first decoded
    silently and the second raised ``DecompressionBombError`` without the file's name."""
    path = tmp_path / "bomb.png"
    Image.new("RGB", (pixels // 10, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=f"{path}.*too large"):
        load_rgb(str(path))


FAIRFACE_HEAD = "file,age,gender,race,service_test\n"


@pytest.mark.parametrize("case, body, where", [
    ("not-utf8", FAIRFACE_HEAD.encode() + b"train/1.jpg,20-29,Male,White,True\ntrain/\xff.jpg,20-29,Male,White,True\n",
     ":3: not UTF-8"),
    ("header-only", FAIRFACE_HEAD.encode(), ": no images listed"),
    ("outside-root", (FAIRFACE_HEAD + "train/1.jpg,3-9,Female,Black,False\n../../etc/passwd,3-9,Female,Black,False\n")
     .encode(), ":3: file '../../etc/passwd' must be a path inside"),
    ("absolute", (FAIRFACE_HEAD + "/etc/passwd,3-9,Female,Black,False\n").encode(), ":2: file '/etc/passwd'"),
], ids=lambda v: v if v in ("not-utf8", "header-only", "outside-root", "absolute") else "")
def test_bad_fairface_csv_is_a_located_error(tmp_path, case, body, where):
    """A FairFace label CSV that is not UTF-8, lists no image, or whose ``file`` leaves the data folder is a
    ``DataError`` at ``file:line``. Can fail: on the old main these raised UnicodeDecodeError, returned an empty
    split (failing later in sampling), or read the file outside the root."""
    path = tmp_path / "fairface_label_train.csv"
    path.write_bytes(body)
    with pytest.raises(DataError) as err:
        read_labels(path)
    assert str(err.value).startswith(str(path)) and where in str(err.value), str(err.value)


def test_idx_gzip_bomb_is_refused_while_streaming(tmp_path):
    """A 70 KB gzip whose header declares 10 images of 28x28 but which holds 64 MB of pixels is refused as
    oversized after reading the declared bytes plus one: peak memory stays far below 64 MB. Can fail: on the old
    main ``gzip.decompress`` expanded the whole 64 MB before the size check (peak > 64 MB)."""
    payload = bytes(64 << 20)
    head = encode_idx(np.zeros((10, 28, 28), dtype=np.uint8))[:16]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(head + payload, compresslevel=1))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="oversized"):  # IdxFormatError, a DataError
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_disk_full_inside_torch_save_is_a_store_error(tmp_path, monkeypatch):
    """``torch.save`` writing into a full disk (the temporary file opened on /dev/full, which fails every write
    with ENOSPC) gives ``OSError(ENOSPC)`` naming the checkpoint from ``atomic_save``, and a ``StoreError`` that
    says to free space from the store. Can fail: on the old main torch's ``RuntimeError: [enforce fail at
    inline_container.cc]`` escaped both."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        return real_open("/dev/full", mode, *args, **kwargs) if "w" in mode and "b" in mode else \
            real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(kdclaims.atomic, "open", full_open, raising=False)
    target = tmp_path / "model.pt"
    with pytest.raises(OSError) as err:
        kdclaims.atomic.atomic_save({"w": torch.zeros(100_000)}, target)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    store = CheckpointStore(tmp_path / "cache")
    with pytest.raises(StoreError, match="free space"):
        store.get_or_train({"k": "full"}, lambda w: {"w": torch.zeros(100_000)})
