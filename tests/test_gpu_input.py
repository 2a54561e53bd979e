"""The ``tensor`` input pipeline (kdclaims.data.gpu_input) against the ``pil`` one, on the fixture ImageFolder tree.

The CUDA code path (workers read bytes; batched decode, crop and flip in the main process) runs here on the CPU
with ``main_decode=True``; ``KDCLAIMS_INPUT_DEVICE=cuda`` runs the device comparisons on a GPU (bench/gpu_check.sh).
Tolerances: on the CPU, PIL and torchvision decode with the same libjpeg-turbo (identical pixels) and resample with
different rounding, at most one grey level (1/255, measured); nvjpeg rounds its IDCT differently again, so on CUDA a
pixel may differ by a few levels: max 12/255 and mean 1/255 (stated before any measurement on a card).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdclaims.data import build_dataset
from kdclaims.data.folder import FolderSplit, load_rgb, worker_start_method
from kdclaims.data.gpu_input import ImageOps, TensorFolderSplit, decode_batch, read_encoded, unpack
from kdclaims.train import _data_device

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "data"
DEVICE = torch.device(os.environ.get("KDCLAIMS_INPUT_DEVICE", "cpu"))
CPU_TOL = 1 / 255 + 1e-6
TOL_MAX, TOL_MEAN = (CPU_TOL, CPU_TOL) if DEVICE.type == "cpu" else (12 / 255, 1 / 255)


def _split(split: str, pipeline: str, root: Path = FIXTURES, **kw) -> FolderSplit:
    return build_dataset("imagenet", split, root=root, size=kw.pop("size", 32), num_workers=kw.pop("num_workers", 0),
                         pipeline=pipeline, **kw)


def _all(split: FolderSplit, device=DEVICE, batch: int = 16, **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bs = list(split.batches(batch, device=device, **kw))
    return tuple(torch.cat([getattr(b, f).cpu() for b in bs]) for f in ("x", "y", "index"))


@pytest.fixture
def jpeg_root(tmp_path) -> Path:
    """The fixture val tree re-encoded as JPEG at 2x size, plus a grayscale JPEG and a PNG named .JPEG (ImageNet
    has both)."""
    src = FIXTURES / "imagenet" / "val"
    for i, path in enumerate(sorted(src.glob("*/*.png"))):
        out = tmp_path / "imagenet" / "val" / path.parent.name / (path.stem + ".JPEG")
        out.parent.mkdir(parents=True, exist_ok=True)
        img = load_rgb(str(path)).resize((64, 48))
        if i == 0:
            img = img.convert("L")
        img.save(out, format="PNG" if i == 1 else "JPEG", quality=90)
    shutil.copytree(tmp_path / "imagenet" / "val", tmp_path / "imagenet" / "train")
    return tmp_path


def test_eval_images_match_the_pil_pipeline_on_the_fixture_tree():
    """Same files, labels and (within one grey level) pixels from PIL, from torchvision in the workers, and from the
    batched main-process path. Fails without the fix: set ``resize`` in ``ImageOps.apply`` to ``self.size`` (no
    256/224 margin) and the main path's pixels move by far more than 1/255."""
    pil = _split("test", "pil")
    tensor = _split("test", "tensor")
    assert isinstance(tensor, TensorFolderSplit) and tensor.files == pil.files
    x0, y0, i0 = _all(pil, device="cpu")
    x1, y1, i1 = _all(tensor, device="cpu")
    tensor.main_decode = True
    x2, y2, i2 = _all(tensor)
    assert torch.equal(y0, y1) and torch.equal(y0, y2) and torch.equal(i0, i2) and torch.equal(y0, pil.y)
    assert (x0 - x1).abs().max() <= CPU_TOL
    assert (x0 - x2).abs().max() <= TOL_MAX and (x0 - x2).abs().mean() <= TOL_MEAN


def test_jpeg_batches_decode_together_with_png_and_grayscale_files(jpeg_root):
    """JPEGs go to ``decode_jpeg`` as one batch; a PNG named .JPEG is decoded by the worker; a grayscale JPEG
    becomes RGB; pixels match PIL's within tolerance; 2 worker processes hand the bytes over. Fails without the fix:
    drop ``mode=RGB`` from the batched ``decode_jpeg`` call and the grayscale image comes back with one channel
    (stack fails); return one tensor per image from ``collate_encoded`` and the workers' queue feeder dies on
    ``os.dup`` (EBADF), so the pass hangs (seen under ``timeout``)."""
    pil = _split("test", "pil", jpeg_root)
    tensor = _split("test", "tensor", jpeg_root, num_workers=2)
    tensor.main_decode = True
    kinds = [read_encoded(f).ndim for f in tensor.files]
    assert kinds.count(3) == 1 and kinds.count(1) == len(kinds) - 1  # one PNG, the rest JPEG bytes
    x0, y0, _ = _all(pil, device="cpu")
    try:
        x2, y2, _ = _all(tensor)
    finally:
        tensor.close()
    assert torch.equal(y0, y2)
    assert (x0 - x2).abs().max() <= TOL_MAX and (x0 - x2).abs().mean() <= TOL_MEAN


def test_random_crops_and_flips_draw_as_the_v2_transform_does(jpeg_root):
    """With one seed, ``ImageOps.apply`` on a batch gives the images the ``pil`` pipeline's v2 transform gives
    image by image (same crop boxes, same flips). Fails without the fix: draw the flip before the crop box in
    ``apply`` and the crops no longer match."""
    ops = ImageOps(24, "crop_flip", (0.2, 1.0))
    files = sorted(str(p) for p in (jpeg_root / "imagenet" / "val").glob("*/*.JPEG"))
    images = decode_batch([read_encoded(f) for f in files], files, DEVICE)
    compose = ops.compose()
    torch.manual_seed(7)
    expected = torch.stack([compose(load_rgb(f)) for f in files])
    torch.manual_seed(7)
    got = ops.apply(images).cpu()
    assert got.shape == expected.shape == (len(files), 3, 24, 24)
    assert (got - expected).abs().max() <= TOL_MAX and (got - expected).abs().mean() <= TOL_MEAN
    torch.manual_seed(8)
    assert (ops.apply(images).cpu() - expected).abs().mean() > 0.02  # another seed, other crops


def test_training_batches_repeat_with_the_generator_and_keep_labels():
    """A pass of the main-process path is a function of the order generator's state, and another state crops the
    same images differently; each batch's labels are those of its indices. Fails without the fix: drop the
    ``manual_seed`` inside ``fork_rng`` and every pass draws the same crops."""
    train = _split("train", "tensor", size=24)
    train.main_decode = True
    a = _all(train, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)
    b = _all(train, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)
    c = _all(train, shuffle=True, generator=torch.Generator().manual_seed(4), drop_last=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert torch.equal(a[1], train.y[a[2]]) and not torch.equal(a[2], c[2])
    assert a[0].min() >= 0 and a[0].max() <= 1 and a[0].shape[1:] == (3, 24, 24)
    d = _all(train, generator=torch.Generator().manual_seed(3))  # no shuffle: the same images in the same order
    e = _all(train, generator=torch.Generator().manual_seed(4))
    assert torch.equal(d[2], e[2]) and (d[0] - e[0]).abs().mean() > 0.02


def test_an_undecodable_file_is_named(jpeg_root):
    """Fails without the fix: without the per-file fallback in ``decode_batch`` the error is torch's, without the
    file name."""
    bad = jpeg_root / "imagenet" / "val" / "n01440764" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.JPEG: cannot decode"):
        decode_batch([read_encoded(str(bad))], [str(bad)], DEVICE)


def test_pipeline_parameter_is_checked_and_the_trainer_feeds_its_device():
    """Fails without the fix: without ``decodes_on_device`` in ``kdclaims.train._data_device`` a tensor-pipeline
    split would be asked for CPU batches while training on CUDA."""
    with pytest.raises(ValueError, match="pipeline must be 'pil' or 'tensor', got 'gpu'"):
        _split("test", "gpu")
    cuda = torch.device("cuda")
    assert _data_device(_split("test", "tensor"), cuda) == cuda
    assert _data_device(_split("test", "pil"), cuda) == torch.device("cpu")


def test_workers_where_cuda_is_in_use_come_from_a_fork_server(monkeypatch):
    """Fails without the fix: ``worker_start_method`` returning None (fork of this process) for CUDA, or for CPU
    batches (a probe's ``split.x``) in a process that has started CUDA."""
    assert worker_start_method(2, torch.device("cuda")) == "forkserver"
    assert worker_start_method(2, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert worker_start_method(2, torch.device("cpu")) == "forkserver"
    assert worker_start_method(0, torch.device("cuda")) is None
    assert worker_start_method(2, torch.device("cpu"), "forkserver") == "forkserver"


@pytest.mark.slow  # seconds of subprocesses (spawned workers import torch): CI runs it in its `-m slow` step
def test_split_and_transforms_load_in_spawned_workers():
    """The ``pil`` training split (random v2 transform) and the tensor path's byte reader pickle, load and run in 2
    spawned workers (the strictest start method: a fork server's workers unpickle the same objects), giving the
    batches forked workers give (workers are seeded alike). Fails without the fix: a lambda in the transform (e.g.
    ``v2.Lambda(lambda x: x)`` appended in ``train_transform``) cannot be pickled."""
    spawned = _split("train", "pil", size=16, num_workers=2)
    spawned.start_method = "spawn"
    forked = _split("train", "pil", size=16, num_workers=2)
    try:
        order = dict(shuffle=True, generator=torch.Generator().manual_seed(0))
        xs, ys, _ = _all(spawned, device="cpu", **order)
        order = dict(shuffle=True, generator=torch.Generator().manual_seed(0))
        xf, yf, _ = _all(forked, device="cpu", **order)
        assert spawned._loaders and next(iter(spawned._loaders.values())).multiprocessing_context.get_start_method() \
            == "spawn"
        assert torch.equal(ys, yf) and torch.equal(xs, xf)
    finally:
        spawned.close()
        forked.close()
    tensor = _split("test", "tensor")
    dataset, collate = tensor._dataset(torch.device("cuda"))
    clone, collate2 = pickle.loads(pickle.dumps((dataset, collate)))
    flat, shapes, y, _ = collate2([clone[0], clone[1]])
    assert y.tolist() == tensor.y[:2].tolist()
    assert np.array_equal(unpack(flat, shapes)[1].numpy(), read_encoded(tensor.files[1]).numpy())


def test_bench_jpeg_tree_is_repeatable_imagenet_sized_and_readable(tmp_path):
    """bench/jpeg_tree.py: the same arguments write the same bytes; images are ~500x375 (either orientation, ±15 %);
    the ``imagenet`` dataset reads the tree. Fails without the fix: seed each image's generator from anything but
    ``(seed, split, i)`` (e.g. ``np.random.default_rng()``) and two trees differ."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from jpeg_tree import make_tree

    for name in ("a", "b"):
        info = make_tree(tmp_path / name, files=8, classes=2, workers=1)
        assert info["train"] == 8 and info["val"] == 2
    files_a = sorted((tmp_path / "a").rglob("*.JPEG"))
    assert len(files_a) == 10
    for fa in files_a:
        assert fa.read_bytes() == (tmp_path / "b" / fa.relative_to(tmp_path / "a")).read_bytes()
        w, h = Image.open(fa).size
        assert sorted((w, h))[0] in range(318, 432) and sorted((w, h))[1] in range(425, 576)
    train = _split("train", "tensor", tmp_path / "a", size=32)
    assert len(train) == 8 and train.num_classes == 2 and all(read_encoded(f).ndim == 1 for f in train.files)
