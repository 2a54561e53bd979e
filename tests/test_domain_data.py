"""The gpu-tier loaders of the NeurIPS version's new experiments on their fixture trees: VLCS and PACS (multi-domain
folders) and CIFAR-100 (python release). The trees are stand-ins in the real layouts (fixtures/README.md)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kdclaims.data import build_dataset
from kdclaims.data.domainfolders import LAYOUTS
from kdclaims.data.paths import DataNotFound

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"


@pytest.mark.parametrize("name", ["vlcs", "pacs"])
def test_domain_folders_split_every_domain_and_class_once(name: str) -> None:
    """Each (domain, class) folder of the fixture holds 2 images: one goes to train and one to test, whatever the
    run seed; labels follow the class folder and groups the domain folder."""
    top, domains, classes = LAYOUTS[name]
    tr = build_dataset(name, "train", DATA, seed=0, size=8)
    te = build_dataset(name, "test", DATA, seed=5, size=8)
    assert len(tr) == len(te) == len(domains) * len(classes)
    assert not set(tr.files) & set(te.files)
    assert te.group_names == list(domains) and te.num_classes == len(classes)
    for split in (tr, te):
        for f, y, g in zip(split.files, split.y.tolist(), split.groups.tolist()):
            parts = Path(f).parts
            assert parts[-4:-1] == (top, domains[g], classes[y])
    assert build_dataset(name, "test", DATA, seed=9, size=8).files == te.files  # the run seed does not move it
    assert te.x.shape == (len(te), 3, 8, 8) and 0 <= float(te.x.min()) and float(te.x.max()) <= 1


def test_domains_select_and_name_groups() -> None:
    seen = ["LabelMe", "SUN09", "VOC2007"]
    tr = build_dataset("vlcs", "train", DATA, domains=seen, size=8)
    assert tr.group_names == seen and set(tr.groups.tolist()) == {0, 1, 2}
    assert not any("/Caltech101/" in f for f in tr.files)
    with pytest.raises(ValueError, match="unknown domain"):
        build_dataset("vlcs", "train", DATA, domains=["Caltech"], size=8)


@pytest.mark.parametrize("name", ["vlcs", "pacs", "cifar100"])
def test_missing_data_names_the_layout(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataNotFound, match="--kd-data"):
        build_dataset(name, "test", None)
    with pytest.raises(DataNotFound, match="does not exist"):
        build_dataset(name, "test", tmp_path)
    if name != "cifar100":
        top, domains, _ = LAYOUTS[name]
        (tmp_path / top / domains[0]).mkdir(parents=True)
        with pytest.raises(DataNotFound, match=r"expected the layout ROOT/" + top):
            build_dataset(name, "test", tmp_path)


def test_cifar100_reads_the_python_release() -> None:
    te = build_dataset("cifar100", "test", DATA)
    with open(DATA / "cifar-100-python" / "test", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")  # the fixture we wrote ourselves
    assert te.num_classes == 100 and te.y.tolist() == raw[b"fine_labels"]
    want = torch.from_numpy(np.asarray(raw[b"data"]).reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(te.x, want)
    assert len(build_dataset("cifar100", "train", DATA, n=2)) == 2


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar100_refuses_a_pickle_with_code(tmp_path: Path) -> None:
    """A data file whose pickle calls a function is refused before the call (fails with plain ``pickle.load``)."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps({b"data": _Sneaky(), b"fine_labels": [0]}))
    with pytest.raises(ValueError, match="refusing global posix.getcwd|refusing global os.getcwd"):
        build_dataset("cifar100", "test", tmp_path)


@pytest.mark.parametrize("claim_file,needle", [
    ("adversarial/cifar100-fooling.yaml", "ROOT/cifar-100-python/{train,test}"),
    ("domains/real-domain-transfer.yaml", "ROOT/VLCS/{Caltech101,LabelMe,SUN09,VOC2007}/"),
])
def test_gpu_skip_message_names_the_data_layout(tmp_path: Path, claim_file: str, needle: str) -> None:
    """Without CUDA and without data, the skip reason names both, the data with its layout (fails when only the
    first missing thing, CUDA, is named)."""
    from kdclaims.bank import RunContext
    from kdclaims.runner import missing_requirements
    from kdclaims.spec.loader import load_claim_file
    from kdclaims.store import CheckpointStore

    items = load_claim_file(Path(__file__).resolve().parent.parent / "claims" / claim_file).items
    claim = next(i.claim for i in items if i.tier == "gpu" and i.claim is not None)
    why = missing_requirements(claim, RunContext(store=CheckpointStore(tmp_path), tier="gpu", data_root=None))
    assert any(w.startswith("CUDA") for w in why) and any(needle in w for w in why), why


def test_real_domain_transfer_runs_on_the_fixture_tree(tmp_path: Path) -> None:
    """The VLCS setting of real-domain-transfer end to end on the fixture tree, its models shrunk (tiny CNNs at 8 px,
    one seed, independent and KL): the teacher sees four domains, the students three, and the probe scores each
    domain's held-out images, Caltech101 included. Checks plumbing only; the stand-in data verify nothing."""
    from kdclaims.bank import RunContext
    from kdclaims.recipe import Recipe
    from kdclaims.runner import run_claim
    from kdclaims.spec.loader import load_claim_file
    from kdclaims.spec.schema import ModelSpec
    from kdclaims.store import CheckpointStore

    torch.set_num_threads(1)
    path = Path(__file__).resolve().parent.parent / "claims" / "domains" / "real-domain-transfer.yaml"
    c = next(i.claim for i in load_claim_file(path).items if i.tier == "gpu" and i.setting == "vlcs")
    small = lambda d: d.model_copy(update={"params": {**d.params, "size": 8, "num_workers": 0}})  # noqa: E731
    recipe = Recipe(epochs=2, batch_size=8, optimizer="adam", lr=0.01, weight_decay=0.0)
    s = c.setup
    assert s.data.params["domains"] == ["LabelMe", "SUN09", "VOC2007"] and "domains" not in s.teacher.data.params
    setup = s.model_copy(update={
        "teacher": s.teacher.model_copy(update={"arch": "tiny_cnn_wide", "data": small(s.teacher.data),
                                                "recipe": recipe}),
        "student": ModelSpec(arch="tiny_cnn"), "data": small(s.data), "seeds": [0], "recipe": recipe,
        "methods": [m for m in s.methods if m.name in ("independent", "kl")]})
    claim = c.model_copy(update={"setup": setup, "probe": c.probe.model_copy(update={"data": small(c.probe.data)}),
                                 "needs": [], "significance": c.significance.model_copy(update={"resamples": 200})})
    ctx = RunContext(store=CheckpointStore(tmp_path), tier="gpu", data_root=DATA)
    result = run_claim(claim, ctx, use_probe_cache=False)
    assert result.problems() == []
    got = result.measurements.values
    for d in LAYOUTS["vlcs"][1]:
        assert got[f"accuracy/{d}"]["kl"].shape == (1, 5)  # one held-out image per class
    assert {e.label for e in result.outcome.expectations} >= {
        "kl[Caltech101] > independent[Caltech101]", "premise: the teacher is better than the independent student on Caltech101"}


def test_cifar100_fooling_arms_build_for_every_pair() -> None:
    """Every pair of cifar100-fooling builds at 32 px and every arm's loss (CE + its distillation term) is finite on
    one batch: the Hint taps chosen in its notes fit (ShuffleNet's F2 against WRN-40-2's hint, both 16 x 16)."""
    from kdclaims.data.base import Split
    from kdclaims.models import create_model
    from kdclaims.registries import METHODS
    from kdclaims.spec.loader import load_claim_file

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = Path(__file__).resolve().parent.parent / "claims" / "adversarial" / "cifar100-fooling.yaml"
    items = [i.claim for i in load_claim_file(path).items if i.tier == "gpu"]
    assert {c.setting for c in items} == {"wrn40_2-shufflenet_v1", "vgg13-vgg8", "resnet50-mobilenetv2"}
    split = Split("tiny", torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), num_classes=100)
    for c in items:
        teacher = create_model(c.setup.teacher.arch, 100, **c.setup.teacher.params).eval()
        for arm in c.setup.methods:
            if arm.method in ("independent", "crd"):  # no teacher term / a memory bank of 50,000 images
                continue
            student = create_model(c.setup.student.arch, 100, **c.setup.student.params)
            distiller = METHODS.get(arm.method)(student, teacher, split, **arm.params)
            _, losses = distiller.forward_train(split.x, split.y)
            assert all(torch.isfinite(v).all() for v in losses.values()), (c.setting, arm.name, losses)
