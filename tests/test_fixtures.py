"""fixtures/: the script rebuilds the committed files exactly, every loader reads its stand-in tree, and the
committed teachers load through ``load_weights`` and classify well."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from kdclaims.data import build_dataset
from kdclaims.data.fairface import GENDERS, RACES
from kdclaims.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderSplit
from kdclaims.data.mvh import CATEGORIES
from kdclaims.models import create_model, load_weights

FIX = Path(__file__).resolve().parent.parent / "fixtures"
DATA, WEIGHTS = FIX / "data", FIX / "weights"
MAX_BYTES = 2 * 1024 * 1024


def _script():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIX / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mf = _script()


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _version_gap(keys: tuple[str, ...]) -> str | None:
    """Why bytes may legitimately differ here: a package or CPU kernel level other than the recorded one."""
    made = json.loads((FIX / mf.PROVENANCE).read_text())
    here = mf.provenance()
    gaps = [f"{k} {made.get(k)} (here {here[k]})" for k in keys if made.get(k) != here[k]]
    return "fixtures were made with " + ", ".join(gaps) + "; rerun fixtures/make_fixtures.py" if gaps else None


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures")
    mf.make_all(out, parts=("data",))
    return out


# ------------------------------------------------------------------------------------------------ the script


STORE_MAX_BYTES = 8 * 1024 * 1024  # the pre-trained smoke models (fixtures/store, ~90 tiny CNNs)


def test_everything_under_fixtures_is_small():
    """Data and weights stay under 2 MB; the shipped smoke store has its own bound (it holds every smoke model)."""
    files = [p for p in FIX.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    store = [p for p in files if "store" in p.relative_to(FIX).parts[:1]]
    assert sum(p.stat().st_size for p in files if p not in store) < MAX_BYTES
    assert sum(p.stat().st_size for p in store) < STORE_MAX_BYTES


def test_data_regenerates_byte_identical(regenerated):
    gap = _version_gap(("pillow", "numpy", "scikit-learn"))
    if gap:
        pytest.skip(gap)
    for name in mf.DATASETS:
        fresh, committed = _tree(regenerated / "data" / name), _tree(DATA / name)
        assert sorted(fresh) == sorted(committed), f"{name}: file lists differ"
        changed = [f for f in fresh if fresh[f] != committed[f]]
        assert not changed, f"{name}: {len(changed)} files differ from the script's output, e.g. {changed[:3]}"


def test_weights_regenerate_byte_identical(regenerated):
    """Byte identity is only expected where every kernel library picks the same kernels: the same torch, the same
    dispatched level and the same CPU instruction sets (oneDNN/MKL choose from the CPU, not from
    ``ATEN_CPU_CAPABILITY``). Issue 12 saw the failure this prevents: with the capability alone compared,
    ``ATEN_CPU_CAPABILITY=avx2`` on an AVX512 machine ran the comparison and failed."""
    gap = _version_gap(("torch", "cpu_capability", "cpu_isa"))
    if gap:
        pytest.skip(gap)
    mf.write_weights(regenerated / "weights", regenerated / "data")
    for name in mf.WEIGHTS.values():
        assert (regenerated / "weights" / name).read_bytes() == (WEIGHTS / name).read_bytes(), name


def test_png_and_gzip_writers_embed_no_time(tmp_path):
    from PIL import Image

    png = tmp_path / "a.png"
    mf.save_png(Image.new("L", (4, 4), 7), png)
    chunks, data, pos = [], png.read_bytes(), 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos + 4:pos + 8].decode())
        pos += 12 + length
    assert chunks == ["IHDR", "IDAT", "IEND"]
    mf.save_gzip(b"abc", tmp_path / "a.gz")
    head = (tmp_path / "a.gz").read_bytes()[:10]
    assert head[4:8] == b"\0\0\0\0" and head[3] & 0x08 == 0  # mtime 0, no FNAME field


# ------------------------------------------------------------------------------------------------ loaders


def test_imagenet_folder_tree():
    train = build_dataset("imagenet", "train", root=DATA, size=32, num_workers=0)
    test = build_dataset("imagenet", "test", root=DATA, size=32, num_workers=0)
    assert isinstance(train, FolderSplit) and (len(train), len(test)) == (80, 40)
    assert train.num_classes == test.num_classes == 4 and not train.deterministic and test.deterministic
    wnids = sorted(mf.IMAGENET_WNIDS)
    for split in (train, test):
        folders = [Path(f).parent.name for f in split.files]
        assert [wnids[c] for c in split.y.tolist()] == folders
    batches = list(train.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [tuple(b.x.shape) for b in batches] == [(32, 3, 32, 32), (32, 3, 32, 32), (16, 3, 32, 32)]
    for b in batches:
        assert b.x.dtype == torch.float32 and 0 <= float(b.x.min()) and float(b.x.max()) <= 1
        assert torch.equal(b.y, train.y[b.index])
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(80))
    x = test.x
    assert tuple(x.shape) == (40, 3, 32, 32) and torch.equal(test.x, x)  # decoded once, kept
    sub = build_dataset("imagenet", "train", root=DATA, size=32, n=8, num_workers=0)
    assert Counter(sub.y.tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}


def _mvh_label(path: Path, name: str) -> str:
    return path.stem.split("_")[4] if name in ("sketch", "stylized") else path.parent.name


@pytest.mark.parametrize("name,count", [("edge", 12), ("silhouette", 12), ("cue-conflict", 16), ("sketch", 12),
                                        ("stylized", 12)])
def test_mvh_sets(name, count):
    split = build_dataset(f"mvh_{name.replace('-', '_')}", "test", root=DATA, size=32, num_workers=0)
    assert len(split) == count and split.num_classes == 16 and len(CATEGORIES) == 16
    expected = [CATEGORIES.index(_mvh_label(Path(f), name)) for f in split.files]
    assert split.y.tolist() == expected
    assert set(split.y.tolist()) == {CATEGORIES.index(c) for c in mf.MVH_CATEGORIES}
    assert tuple(split.x.shape) == (count, 3, 32, 32)
    if name == "cue-conflict":
        textures = [CATEGORIES.index(Path(f).stem.split("-")[1].rstrip("0123456789")) for f in split.files]
        assert split.meta["texture"].tolist() == textures
        assert int((split.y == split.meta["texture"]).sum()) == len(mf.MVH_CATEGORIES)  # one same-cue image each
    with pytest.raises(ValueError, match="only a 'test' split"):
        build_dataset(f"mvh_{name.replace('-', '_')}", "train", root=DATA)


@pytest.mark.parametrize("split,csv_name,per_cell", [("train", "fairface_label_train.csv", 2),
                                                     ("test", "fairface_label_val.csv", 1)])
def test_fairface_csv_and_images(split, csv_name, per_cell):
    with open(DATA / "fairface" / csv_name, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "age", "gender", "race", "service_test"]
    data = build_dataset("fairface", split, root=DATA, size=32)
    assert len(data) == len(rows) == 14 * per_cell
    assert data.y.tolist() == [GENDERS.index(r["gender"]) for r in rows]
    assert data.groups.tolist() == [RACES.index(r["race"]) for r in rows]
    assert data.group_names == list(RACES) and tuple(data.x.shape) == (len(rows), 3, 32, 32)
    assert set(Counter(zip(data.y.tolist(), data.groups.tolist())).values()) == {per_cell}
    assert all((DATA / "fairface" / r["file"]).is_file() and r["file"].endswith(".jpg") for r in rows)
    picked = build_dataset("fairface", split, root=DATA, size=16, composition={"White": per_cell, "Indian": 1})
    assert Counter(picked.group_names[g] for g in picked.groups.tolist()) == {"White": per_cell, "Indian": 1}


def _read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    assert raw[:3] == b"\0\0\x08"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.parametrize("split,prefix,n", [("train", "train", 600), ("test", "t10k", 200)])
def test_mnist_idx_files(split, prefix, n):
    from kdclaims.data.sklearn_assets import digits_arrays

    data = build_dataset("mnist", split, root=DATA)
    images = _read_idx_gz(DATA / "mnist" / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx_gz(DATA / "mnist" / f"{prefix}-labels-idx1-ubyte.gz")
    assert tuple(data.x.shape) == (n, 1, 28, 28) and images.shape == (n, 28, 28)
    assert torch.equal(data.x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
    _, targets = digits_arrays()  # scikit-learn's digits.csv.gz, as load_digits reads it
    assert data.y.tolist() == labels.tolist() == targets[mf.mnist_selection()[prefix]].tolist()
    assert images[:, :4].max() == 0 and images[:, :, -4:].max() == 0  # the 4-pixel MNIST border
    assert len(set(data.y.tolist())) == 10
    colored = build_dataset("mnist", split, root=DATA, domain="color", n=20)
    assert tuple(colored.x.shape) == (20, 3, 28, 28)


# ------------------------------------------------------------------------------------------------ teachers


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def test_digits_teacher_loads_with_weights_only_and_is_accurate():
    state = torch.load(WEIGHTS / mf.WEIGHTS["digits"], map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith(("net.", "module.")) for k in state)
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    model = create_model("tiny_cnn_wide", 10, in_chans=1, mean=train.mean, std=train.std)
    load_weights(model, f"file:{mf.WEIGHTS['digits']}", WEIGHTS)
    assert _accuracy(model, test.x, test.y) > 0.8


def test_standin_teacher_beats_chance_on_the_standin_val_split():
    test = build_dataset("imagenet", "test", root=DATA, size=32, num_workers=0)
    model = create_model("tiny_cnn_wide", 4, in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    load_weights(model, f"file:{mf.WEIGHTS['imagenet']}", WEIGHTS)
    assert _accuracy(model, test.x, test.y) > 0.5  # 4 balanced classes: chance is 0.25


def test_silhouette_teacher_maps_through_the_16_categories():
    """The 1000-way teacher was trained on fresh silhouettes labelled with ImageNet indices; through the
    16-category mapping it must name the categories of the committed silhouette stand-ins."""
    from kdclaims.probes.imagenet16 import probabilities_to_16

    stats = build_dataset("synthetic", "test", n=2, size=4, channels=3, num_classes=1000)
    model = create_model("tiny_cnn", 1000, in_chans=3, mean=stats.mean, std=stats.std)
    load_weights(model, f"file:{mf.WEIGHTS['mvh_silhouettes']}", WEIGHTS)
    split = build_dataset("mvh_silhouette", "test", root=DATA, size=32, num_workers=0)
    with torch.inference_mode():
        decision = probabilities_to_16(model.eval()(split.x).softmax(1)).argmax(1)
    assert float((decision == split.y).float().mean()) > 0.5  # 4 categories present: chance is 0.25
