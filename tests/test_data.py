"""Dataset registry: IDX reader, Fashion-MNIST/MNIST/digits/synthetic, domains, selection, folder datasets."""

from __future__ import annotations

import csv
import gzip
import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdclaims.data import DATASETS, DataNotFound, FolderSplit, Split, build_dataset, dataset_params
from kdclaims.data import domains as dom
from kdclaims.data import idx, mnist, mvh
from kdclaims.data.sampling import composition_indices, stratified_indices
from kdclaims.registry import UnknownName

torch.set_num_threads(1)
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {FMNIST} (apt-get install dataset-fashion-mnist)",
)


# ------------------------------------------------------------------------------------------------ IDX reader


def _write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_idx_round_trip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 5) * 3 - 7).astype(dtype).reshape(2, 3, 5)
    out = idx.read_idx(_write(tmp_path / "a.idx", idx.encode_idx(arr), gz))
    np.testing.assert_array_equal(out.numpy(), arr)


def test_idx_header_fields(tmp_path):
    data = idx.encode_idx(np.zeros((4, 7), dtype=np.uint8))
    assert data[:4] == bytes([0, 0, 0x08, 2]) and data[4:12] == bytes([0, 0, 0, 4, 0, 0, 0, 7])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "truncated payload"),
        (lambda b: b + b"\x00", "oversized payload"),
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x0a" + b[3:], "unknown IDX dtype code 0x0A"),
        (lambda b: b[:6], "truncated header"),
        (lambda b: b[:3], "too short"),
        (lambda b: b[:3] + b"\x00", "0 dimensions"),
    ],
)
def test_idx_rejects_malformed(tmp_path, mutate, message):
    good = idx.encode_idx(np.ones((3, 4, 4), dtype=np.uint8))
    path = _write(tmp_path / "bad.idx", mutate(good), gz=False)
    with pytest.raises(idx.IdxFormatError, match=message) as err:
        idx.read_idx(path)
    assert str(path.resolve()) in str(err.value)


def test_idx_truncated_gzip(tmp_path):
    blob = gzip.compress(idx.encode_idx(np.ones((50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(idx.IdxFormatError, match="gzip"):
        idx.read_idx(path)


def test_idx_cached_per_process(tmp_path):
    path = _write(tmp_path / "c.idx", idx.encode_idx(np.ones((2, 2), dtype=np.uint8)), gz=True)
    assert idx.read_idx(path) is idx.read_idx(path)


# ------------------------------------------------------------------------------------------------ Fashion-MNIST / MNIST


@needs_fmnist
def test_fashion_mnist_real_files():
    train = build_dataset("fashion_mnist", "train")
    test = build_dataset("fashion_mnist", "test")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and 0 <= float(train.x.min()) and float(train.x.max()) <= 1
    assert torch.equal(train.y.bincount(), torch.full((10,), 6000))
    assert torch.equal(test.y.bincount(), torch.full((10,), 1000))
    # the published per-pixel statistics of the training set
    assert train.mean[0] == pytest.approx(0.2860, abs=1e-3) and train.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert test.mean == train.mean  # normalise with the training statistics
    before = idx._read_idx_cached.cache_info().hits
    start = time.perf_counter()
    again = build_dataset("fashion_mnist", "test")
    assert idx._read_idx_cached.cache_info().hits >= before + 2  # images and labels came from the cache
    assert time.perf_counter() - start < 2.0
    assert torch.equal(again.x, test.x)
    again.x.zero_()  # a caller's split is its own: the cache is untouched
    assert float(build_dataset("fashion_mnist", "test").x.sum()) > 0


@needs_fmnist
def test_fashion_mnist_domains_subsample():
    s = build_dataset("fashion_mnist", "test", seed=3, domains=["orig", "color", "m"], n=300)
    assert s.x.shape == (300, 3, 28, 28) and s.group_names == ["orig", "color", "m"]
    assert torch.equal(s.groups.bincount(), torch.tensor([100, 100, 100]))  # stratified by domain and label
    assert torch.equal(s.group("m").y.bincount(), torch.full((10,), 10))
    orig = s.group("orig")
    base = build_dataset("fashion_mnist", "test").x[orig.meta["source_index"]]
    assert torch.equal(orig.x, base.expand(-1, 3, -1, -1))


def test_fashion_mnist_missing_names_paths_and_package(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DataNotFound) as err:
        build_dataset("fashion_mnist", "train", root=tmp_path)
    text = str(err.value)
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") in text
    assert str(tmp_path / "system" / "train-images-idx3-ubyte.gz") in text
    assert "apt-get install dataset-fashion-mnist" in text and "--kd-data ROOT" in text
    assert isinstance(err.value, FileNotFoundError)


def _fake_mnist(folder: Path, n: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        suffix = ".gz" if gz else ""
        _write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx.encode_idx(x), gz)
        _write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx.encode_idx(y), gz)
    return x, y


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_root(tmp_path, gz):
    x, y = _fake_mnist(tmp_path / "mnist", 40, gz)
    s = build_dataset("mnist", "test", root=tmp_path)
    assert torch.allclose(s.x[:, 0], torch.from_numpy(x).float() / 255) and torch.equal(s.y, torch.from_numpy(y).long())
    assert s.mean[0] == pytest.approx(x.mean() / 255, rel=1e-6) and s.std[0] == pytest.approx(x.std() / 255, rel=1e-6)


def test_mnist_without_root_names_the_option():
    with pytest.raises(DataNotFound, match=r"--kd-data ROOT"):
        build_dataset("mnist", "train")


def test_mnist_rejects_mismatched_files(tmp_path):
    _fake_mnist(tmp_path / "mnist", 20, gz=True)
    _write(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", idx.encode_idx(np.zeros(19, dtype=np.uint8)), True)
    with pytest.raises(ValueError, match="expected"):
        build_dataset("mnist", "test", root=tmp_path)


# ------------------------------------------------------------------------------------------------ digits


def test_digits_split_shapes_and_labels():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert train.x.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1 and float(train.x.max()) == 1.0
    for s in (train, test):
        assert s.y.min() == 0 and s.y.max() == 9 and s.num_classes == 10
    share = train.y.bincount().double() / (train.y.bincount() + test.y.bincount()).double()
    assert torch.all((share - 0.7).abs() < 0.01)
    # the split is fixed: independent of the seed argument
    assert torch.equal(build_dataset("digits", "train", seed=5).x, train.x)


def test_bundled_files_match_scikit_learn_loaders():
    from sklearn.datasets import load_digits, load_sample_images

    photos = torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(dom.sample_photos(), photos)

    ref = load_digits()
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    ours = torch.cat([train.x, test.x]).flatten(1).double() * 16
    theirs = torch.from_numpy(ref.data)
    # same multiset of (image, label) rows
    key = lambda x, y: sorted(map(tuple, torch.cat([x, y[:, None].double()], 1).tolist()))  # noqa: E731
    assert key(ours, torch.cat([train.y, test.y])) == key(theirs, torch.from_numpy(ref.target))


@pytest.mark.parametrize("size", [16, 28])
def test_digits_resize(size):
    s = build_dataset("digits", "test", size=size)
    assert s.x.shape[1:] == (1, size, size) and 0 <= float(s.x.min()) and float(s.x.max()) <= 1
    small = build_dataset("digits", "test").x
    up = torch.nn.functional.interpolate(small, size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(s.x, up.clamp(0, 1), atol=1e-6)  # bilinear, image for image


# ------------------------------------------------------------------------------------------------ domains


def test_domain_renderings_follow_their_formulas():
    gray = build_dataset("digits", "test", size=28)
    s = build_dataset("digits", "test", size=28, domains=["orig", "inverted", "color", "m"], seed=1)
    assert s.x.shape == (4 * len(gray), 3, 28, 28) and s.group_names == ["orig", "inverted", "color", "m"]
    assert 0 <= float(s.x.min()) and float(s.x.max()) <= 1
    g = gray.x.expand(-1, 3, -1, -1)
    orig, inv, col, m = (s.group(d) for d in s.group_names)
    assert torch.equal(orig.x, g) and torch.allclose(inv.x, 1 - g)
    for part in (orig, inv, col, m):
        assert torch.equal(part.y, gray.y) and torch.equal(part.meta["source_index"], torch.arange(len(gray)))
    fg = gray.x[:, 0] >= dom.FAINT
    assert torch.equal(col.x.permute(0, 2, 3, 1)[fg], g.permute(0, 2, 3, 1)[fg])  # foreground kept
    bg = gray.x[:, 0] == 0
    for i in range(5):  # background one colour per image
        colours = col.x[i].permute(1, 2, 0)[bg[i]]
        assert torch.allclose(colours, colours[:1].expand_as(colours))
    assert col.x[:20].permute(0, 2, 3, 1)[bg[:20]].std(0).min() > 0.1  # ... and a different colour per image
    off = gray.x[:, 0] == 0
    assert m.x.permute(0, 2, 3, 1)[off].std(0).min() > 0.05  # background: natural-image texture, in colour


def test_m_domain_is_difference_blend_of_a_photo_patch():
    x = torch.rand(6, 1, 28, 28)
    params = dom._draw("m", 6, 28, torch.Generator().manual_seed(0))
    out = dom.render("m", x, params)
    photos = dom.sample_photos()
    for i in range(6):
        t, l, k = (int(params[key][i]) for key in ("top", "left", "photo"))
        patch = photos[k, :, t:t + 28, l:l + 28]
        assert torch.allclose(out[i], (patch - x[i]).abs(), atol=1e-6)


@pytest.mark.parametrize("domain", ["color", "m"])
def test_domains_deterministic_and_seeded(domain):
    a = build_dataset("digits", "train", domain=domain, seed=0)
    b = build_dataset("digits", "train", domain=domain, seed=0)
    c = build_dataset("digits", "train", domain=domain, seed=1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.group_names == [domain] and a.channels == 3


@pytest.mark.parametrize("domain", ["color", "m"])
def test_domain_streams_differ_between_train_and_test(domain):
    n = 50
    train = dom._draw(domain, n, 8, dom.stream(0, "train", "digits", domain))
    test = dom._draw(domain, n, 8, dom.stream(0, "test", "digits", domain))
    again = dom._draw(domain, n, 8, dom.stream(0, "test", "digits", domain))
    key = next(iter(train))
    assert not torch.equal(train[key], test[key]) and torch.equal(test[key], again[key])


def test_rendering_independent_of_subset():
    full = build_dataset("digits", "test", domain="color", seed=2)
    part = build_dataset("digits", "test", domain="color", seed=2, n=100)
    assert torch.equal(part.x, full.x[part.meta["source_index"]])


def test_colorize_paints_foreground_and_background():
    gray = build_dataset("digits", "train")
    s = build_dataset("digits", "train", colorize=True, seed=4)
    assert s.channels == 3 and len(s.mean) == 3 and s.groups is None
    on, off = gray.x[:, 0] == 1, gray.x[:, 0] == 0
    for i in range(5):
        fg, bg = s.x[i].permute(1, 2, 0)[on[i]], s.x[i].permute(1, 2, 0)[off[i]]
        assert torch.allclose(fg, fg[:1].expand_as(fg)) and torch.allclose(bg, bg[:1].expand_as(bg))
    assert s.x.permute(0, 2, 3, 1)[on].std(0).min() > 0.1  # foreground colour varies across images


def test_domain_argument_errors():
    with pytest.raises(ValueError, match="unknown domain 'sepia'; known: orig, color, m, inverted"):
        build_dataset("digits", "train", domain="sepia")
    with pytest.raises(ValueError, match="not both"):
        build_dataset("digits", "train", domain="m", domains=["orig"])
    with pytest.raises(ValueError, match="colorize"):
        build_dataset("digits", "train", domain="m", colorize=True)


# ------------------------------------------------------------------------------------------------ selection


def test_composition_exact_counts_and_errors():
    s = build_dataset("digits", "train", domains=["orig", "color", "m"], composition={"orig": 30, "m": 5}, seed=0)
    assert len(s) == 35 and s.groups.bincount(minlength=3).tolist() == [30, 0, 5]
    again = build_dataset("digits", "train", domains=["orig", "color", "m"], composition={"orig": 30, "m": 5}, seed=0)
    other = build_dataset("digits", "train", domains=["orig", "color", "m"], composition={"orig": 30, "m": 5}, seed=1)
    assert torch.equal(s.meta["source_index"], again.meta["source_index"])
    assert not torch.equal(s.meta["source_index"], other.meta["source_index"])
    with pytest.raises(ValueError, match="asks 5000 images of group 'orig' but only 1258 exist"):
        build_dataset("digits", "train", domains=["orig"], composition={"orig": 5000})
    with pytest.raises(KeyError, match="groups: \\['orig'\\]"):
        build_dataset("digits", "train", domains=["orig"], composition={"color": 1})
    with pytest.raises(ValueError, match="needs a split with groups"):
        build_dataset("digits", "train", composition={"orig": 1})
    with pytest.raises(ValueError, match="not both"):
        build_dataset("digits", "train", domains=["orig"], composition={"orig": 1}, n=3)


def test_n_is_a_seeded_stratified_cap():
    full = build_dataset("digits", "train")
    s = build_dataset("digits", "train", n=200, seed=0)
    assert len(s) == 200
    expected = full.y.bincount().double() * 200 / len(full)
    assert torch.all((s.y.bincount().double() - expected).abs() < 1)
    assert torch.equal(build_dataset("digits", "train", n=200, seed=0).x, s.x)
    assert not torch.equal(build_dataset("digits", "train", n=200, seed=1).x, s.x)
    assert len(build_dataset("digits", "train", n=10**6)) == len(full)


def test_selection_helpers():
    labels = torch.tensor([0] * 90 + [1] * 10)
    g = torch.Generator().manual_seed(0)
    pick = stratified_indices(labels, 20, g)
    assert len(pick) == 20 and labels[pick].bincount().tolist() == [18, 2] and len(set(pick.tolist())) == 20
    groups = torch.tensor([0, 1, 1, 2, 2, 2])
    pick = composition_indices(groups, ["a", "b", "c"], {"c": 3, "a": 1}, g)
    assert pick.tolist() == [0, 3, 4, 5]


# ------------------------------------------------------------------------------------------------ synthetic + registry


def test_synthetic_is_seeded_and_learnable():
    train = build_dataset("synthetic", "train", seed=0, n=256, size=12, num_classes=4)
    test = build_dataset("synthetic", "test", seed=0, n=128, size=12, num_classes=4)
    assert train.x.shape == (256, 1, 12, 12) and torch.equal(train.y.bincount(), torch.full((4,), 64))
    assert torch.equal(build_dataset("synthetic", "train", seed=0, n=256, size=12).x, train.x)
    assert not torch.equal(build_dataset("synthetic", "train", seed=1, n=256, size=12).x, train.x)
    assert not torch.equal(test.x[:10], train.x[:10])
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
        torch.nn.Linear(128, 4),
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):  # plain SGD by hand: torch.optim would import torch._dynamo (seconds) for nothing here
        for b in train.batches(32, shuffle=True, generator=gen):
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(b.x), b.y).backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.2 * p.grad
    with torch.no_grad():
        acc = (net(test.x).argmax(1) == test.y).float().mean()
    assert acc > 0.9


def test_build_dataset_errors():
    with pytest.raises(UnknownName, match="known: .*digits"):
        build_dataset("cifar", "train")
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) \\['colour'\\]; accepted: size, domain"):
        build_dataset("digits", "train", colour=True)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("digits", "val")


def test_registry_lists_all_builders():
    expected = {"fashion_mnist", "mnist", "digits", "synthetic", "imagenet", "fairface", "mvh_edge", "mvh_silhouette",
                "mvh_cue_conflict", "mvh_sketch", "mvh_stylized"}
    assert expected <= set(DATASETS)
    for name in DATASETS:  # every builder takes (split, root, seed, ...)
        first = list(inspect.signature(DATASETS.get(name)).parameters)[:3]
        assert first == ["split", "root", "seed"], name
    assert dataset_params("mvh_edge") == ["size", "num_workers"]


# ------------------------------------------------------------------------------------------------ image folders


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


COLOURS = {"n01": (255, 0, 0), "n02": (0, 255, 0), "n03": (0, 0, 255)}


@pytest.fixture
def imagenet_root(tmp_path):
    for sub, per in (("train", 4), ("val", 2)):
        for wnid, colour in COLOURS.items():
            for i in range(per):
                _png(tmp_path / "imagenet" / sub / wnid / f"{wnid}_{i}.JPEG", colour)
    (tmp_path / "imagenet" / "train" / "n01" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagenet_folder_split(imagenet_root):
    test = build_dataset("imagenet", "test", root=imagenet_root, size=32, num_workers=0)
    assert isinstance(test, FolderSplit) and len(test) == 6 and test.num_classes == 3
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.channels == 3 and test.image_size == 32
    batches = list(test.batches(4))
    assert [len(b.y) for b in batches] == [4, 2]
    x = torch.cat([b.x for b in batches])
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    for img, label in zip(x, test.labels):  # solid colours survive resize + crop (up to JPEG rounding)
        expected = torch.tensor(COLOURS[f"n0{label + 1}"], dtype=torch.float32) / 255
        assert torch.allclose(img.mean((1, 2)), expected, atol=0.02) and float(img.std((1, 2)).max()) < 0.01
    assert torch.cat([b.index for b in batches]).tolist() == list(range(6))
    def order() -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(3)
        return [b.index for b in test.batches(4, shuffle=True, generator=gen, drop_last=True)]

    shuffled, again = order(), order()
    assert len(shuffled) == 1 and torch.equal(shuffled[0], again[0])
    assert test.mean == (0.485, 0.456, 0.406)
    split = test.to_split()
    assert isinstance(split, Split) and torch.equal(split.x, x) and torch.equal(test.x, x)
    assert torch.equal(test.subset([5, 0]).x, x[[5, 0]])


def test_imagenet_train_augmentation_and_subsets(imagenet_root):
    train = build_dataset("imagenet", "train", root=imagenet_root, size=24, num_workers=0)
    assert len(train) == 12 and train.labels.bincount().tolist() == [4, 4, 4]
    b = next(train.batches(12))
    assert b.x.shape == (12, 3, 24, 24) and 0 <= float(b.x.min()) and float(b.x.max()) <= 1
    sub = train.subset([1, 5, 9], name="few")
    assert sub.name == "few" and sub.labels.tolist() == [0, 1, 2] and len(sub) == 3
    assert len(train.sample(5, seed=0)) == 5 and train.sample(None, seed=0) is train
    small = build_dataset("imagenet", "train", root=imagenet_root, size=24, n=6, num_workers=0)
    assert small.labels.bincount().tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="transform is random"):
        train.x
    with pytest.raises(ValueError, match="augment must be one of"):
        build_dataset("imagenet", "train", root=imagenet_root, augment="blur", num_workers=0)


def test_folder_split_with_persistent_workers(imagenet_root):
    train = build_dataset("imagenet", "train", root=imagenet_root, size=16, augment="none", num_workers=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # the same worker processes serve both passes
        seen = [b for b in train.batches(5, shuffle=True, generator=gen)]
        index = torch.cat([b.index for b in seen])
        assert sorted(index.tolist()) == list(range(12))
        labels = torch.cat([b.y for b in seen])
        assert torch.equal(labels, train.labels[index])
    assert len(train._loaders) == 1
    train.close()


def test_imagenet_missing_root(tmp_path):
    with pytest.raises(DataNotFound, match="--kd-data ROOT"):
        build_dataset("imagenet", "train")
    with pytest.raises(DataNotFound, match=str(tmp_path / "imagenet" / "val")):
        build_dataset("imagenet", "test", root=tmp_path)


# ------------------------------------------------------------------------------------------------ model-vs-human


def test_mvh_categories_sorted_and_shared_with_the_probes():
    assert list(mvh.CATEGORIES) == sorted(mvh.CATEGORIES) and len(set(mvh.CATEGORIES)) == 16
    imagenet16 = pytest.importorskip("kdclaims.probes.imagenet16")
    assert list(mvh.CATEGORIES) == list(imagenet16.CATEGORIES)  # label i means the same category on both sides


def test_mvh_category_tree_and_cue_conflict(tmp_path):
    base = tmp_path / "model-vs-human"
    _png(base / "edge" / "cat" / "a.png", (0, 0, 0), (224, 224))
    _png(base / "edge" / "airplane" / "b.png", (255, 255, 255), (224, 224))
    _png(base / "cue-conflict" / "airplane" / "airplane1-bicycle2.png", (9, 9, 9), (224, 224))
    _png(base / "cue-conflict" / "knife" / "knife10-truck3.png", (9, 9, 9), (224, 224))
    edge = build_dataset("mvh_edge", "test", root=tmp_path, num_workers=0)
    assert edge.num_classes == 16 and edge.labels.tolist() == [0, 7]
    assert next(edge.batches(2)).x.shape == (2, 3, 224, 224)
    cue = build_dataset("mvh_cue_conflict", "test", root=tmp_path, num_workers=0)
    cats = mvh.CATEGORIES
    assert cue.labels.tolist() == [cats.index("airplane"), cats.index("knife")]
    assert cue.meta["texture"].tolist() == [cats.index("bicycle"), cats.index("truck")]
    assert cue.subset([1]).meta["texture"].tolist() == [cats.index("truck")]
    with pytest.raises(ValueError, match="only a 'test' split"):
        build_dataset("mvh_edge", "train", root=tmp_path)
    with pytest.raises(DataNotFound, match="model-vs-human/silhouette"):
        build_dataset("mvh_silhouette", "test", root=tmp_path)
    _png(base / "edge" / "zebra" / "c.png", (0, 0, 0))
    with pytest.raises(ValueError, match="'zebra' is not one of the 16 categories"):
        build_dataset("mvh_edge", "test", root=tmp_path)


def test_mvh_session_layout(tmp_path):
    session = tmp_path / "model-vs-human" / "sketch" / "dnn" / "session-1"
    _png(session / "0001_sk_dnn_0_dog_00_n02085620_1.png", (1, 2, 3), (224, 224))
    _png(session / "0002_sk_dnn_0_oven_00_n03000000_2.png", (1, 2, 3), (224, 224))
    s = build_dataset("mvh_sketch", "test", root=tmp_path, size=64, num_workers=0)
    assert s.labels.tolist() == [mvh.CATEGORIES.index("dog"), mvh.CATEGORIES.index("oven")]
    assert next(s.batches(8)).x.shape == (2, 3, 64, 64)
    _png(session / "0003_sk.png", (1, 2, 3))
    with pytest.raises(ValueError, match="category is field 4"):
        build_dataset("mvh_sketch", "test", root=tmp_path)
    with pytest.raises(DataNotFound, match="dnn/session-1"):
        (tmp_path / "model-vs-human" / "stylized").mkdir()
        build_dataset("mvh_stylized", "test", root=tmp_path)


# ------------------------------------------------------------------------------------------------ FairFace


@pytest.fixture
def fairface_root(tmp_path):
    folder = tmp_path / "fairface"
    races = ["White", "Black", "East Asian", "Indian"]
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        rows = []
        for i in range(n):
            rel = f"{split}/{i + 1}.jpg"
            (folder / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)).save(folder / rel)
            rows.append({"file": rel, "age": "20-29", "gender": ["Male", "Female"][i % 2], "race": races[i % 4],
                         "service_test": "True"})
        with open(folder / f"fairface_label_{split}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file", "age", "gender", "race", "service_test"])
            writer.writeheader()
            writer.writerows(rows)
    return tmp_path


def test_fairface_labels_groups_and_size(fairface_root):
    s = build_dataset("fairface", "train", root=fairface_root, size=16)
    assert s.x.shape == (24, 3, 16, 16) and s.num_classes == 2
    assert s.y.tolist() == [1, 0] * 12  # Male, Female -> index in (Female, Male)
    assert s.group_names[:2] == ["White", "Black"] and len(s.group_names) == 7
    assert s.groups.bincount(minlength=7).tolist() == [6, 6, 0, 6, 0, 6, 0]
    img = Image.open(fairface_root / "fairface" / "train" / "1.jpg").convert("RGB").resize((16, 16), Image.BILINEAR)
    assert torch.allclose(s.x[0], torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    assert len(build_dataset("fairface", "test", root=fairface_root)) == 8
    assert build_dataset("fairface", "test", root=fairface_root).x.shape[-1] == 32  # the default size


def test_fairface_composition(fairface_root):
    s = build_dataset("fairface", "train", root=fairface_root, composition={"White": 4, "Indian": 2}, seed=0)
    assert s.groups.bincount(minlength=7).tolist() == [4, 0, 0, 0, 0, 2, 0]
    with pytest.raises(ValueError, match="asks 7 images of group 'Black' but only 6 exist"):
        build_dataset("fairface", "train", root=fairface_root, composition={"Black": 7})


def test_fairface_errors(fairface_root, tmp_path):
    (fairface_root / "fairface" / "train" / "3.jpg").unlink()
    with pytest.raises(DataNotFound, match="3.jpg"):
        build_dataset("fairface", "train", root=fairface_root)
    with pytest.raises(DataNotFound, match="--kd-data ROOT"):
        build_dataset("fairface", "train")
    path = fairface_root / "fairface" / "fairface_label_val.csv"
    path.write_text(path.read_text().replace("Black", "Martian"))
    with pytest.raises(ValueError, match="race 'Martian'"):
        build_dataset("fairface", "test", root=fairface_root)
