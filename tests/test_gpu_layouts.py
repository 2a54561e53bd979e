"""The gpu tier's code paths on the fixtures' stand-in trees: ImageFolder training and evaluation, consensus on
the model-vs-human sets, and the shape bias with the 16-category mapping of a 1000-way model.

Each claim is written under ``tmp/claims/``, resolved at its gpu tier (``needs: []`` so that the CPU is allowed)
and run through ``kdclaims.runner.run_claim`` with the fixtures as ``--kd-data`` and ``--kd-weights``. The stand-in
data verify nothing about the paper: these tests check plumbing and compare the probes' rows with predictions
recomputed here. ``KDCLAIMS_LAYOUT_DEVICE=cuda`` runs the same checks on a GPU (AMP, channels-last, pinned memory).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kdclaims.bank import Bank, RunContext
from kdclaims.data import build_dataset
from kdclaims.data.mvh import CATEGORIES as MVH_CATEGORIES
from kdclaims.probes.common import predict
from kdclaims.probes.imagenet16 import CATEGORIES as IMAGENET16, IMAGENET16_INDICES
from kdclaims.runner import run_claim
from kdclaims.spec.loader import load_claim_file
from kdclaims.store import CheckpointStore, recipe_key

FIX = Path(__file__).resolve().parent.parent / "fixtures"
DATA, WEIGHTS = FIX / "data", FIX / "weights"
DEVICE = torch.device(os.environ.get("KDCLAIMS_LAYOUT_DEVICE", "cpu"))
MVH_SETS = ("mvh_edge", "mvh_silhouette", "mvh_cue_conflict", "mvh_sketch", "mvh_stylized")

if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("KDCLAIMS_LAYOUT_DEVICE=cuda but no CUDA device", allow_module_level=True)

HEAD = """\
id: {id}
title: Stand-in layout check
paper: {{section: "4"}}
statement: Runs the gpu-tier code path on the fixtures' stand-in data; it verifies nothing about the paper.
significance: {{resamples: 200}}
tiers:
  gpu: {{needs: []}}
"""

ARMS = {
    "independent": "independent",
    "kl": "{name: kl, params: {gamma: 0.5, alpha: 0.5, tau: 4.0}}",
    "hint": "{name: hint, params: {gamma: 1.0, beta: 2.0}}",
    "crd": "{name: crd, params: {gamma: 1.0, beta: 0.1, nce_t: 0.1, N: 16}}",
}


def imagenet_setup(arms) -> str:
    """The stand-in teacher from ``fixtures/weights``; students trained on the ImageFolder tree with its default
    train augmentation (RandomResizedCrop + flip) read by two DataLoader worker processes."""
    methods = "".join(f"    - {ARMS[a]}\n" for a in arms)
    return f"""\
setup:
  teacher: {{arch: tiny_cnn_wide, weights: "file:tiny_cnn_wide_imagenet_standin.pt"}}
  student: {{arch: tiny_cnn}}
  methods:
{methods}  data: {{name: imagenet, size: 32, num_workers: 2}}
  seeds: [0]
  recipe: {{epochs: 2, batch_size: 16, optimizer: adam, lr: 0.01, weight_decay: 0.0}}
"""


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    """One store for the module: the consensus claim reuses the students the accuracy claim trained."""
    store = CheckpointStore(tmp_path_factory.mktemp("store"))
    return RunContext(store=store, tier="gpu", data_root=DATA, weights_dir=WEIGHTS, device=DEVICE)


def gpu_claim(folder: Path, claim_id: str, body: str):
    path = folder / "claims" / f"{claim_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD.format(id=claim_id) + body)
    (item,) = [i for i in load_claim_file(path).items if i.tier == "gpu"]
    assert item.claim is not None and item.claim.needs == []
    return item.claim


def _sources(result) -> dict[str, str]:
    return {e["model"]: e["source"] for e in result.events}


def test_imagenet_folder_claim_trains_and_evaluates(tmp_path, ctx):
    claim = gpu_claim(tmp_path, "layout-imagenet", imagenet_setup(ARMS) + """\
probe: {name: accuracy}
expect:
  - {metric: accuracy, compare: "kl > independent"}
""")
    result = run_claim(claim, ctx, use_probe_cache=False)
    assert result.problems() == []
    assert _sources(result) == {"teacher": "weights file:tiny_cnn_wide_imagenet_standin.pt", "independent": "trained",
                                "kl": "trained", "hint": "trained", "crd": "trained"}
    rows = result.measurements.values["accuracy"]
    assert {k: v.shape for k, v in rows.items()} == {k: (1, 40) for k in (*ARMS, "teacher")}
    test = build_dataset("imagenet", "test", root=DATA, size=32, num_workers=0)
    teacher = Bank(claim, ctx).model("teacher")
    recomputed = (predict(teacher, test.x) == test.y).double().numpy()
    np.testing.assert_array_equal(rows["teacher"][0], recomputed)
    assert recomputed.mean() > 0.5  # the stand-in teacher, evaluated through the folder loader


@pytest.mark.slow  # seconds of subprocesses or large models: CI runs it in its `-m slow` step
def test_consensus_on_the_mvh_standins(tmp_path, ctx):
    claim = gpu_claim(tmp_path, "layout-consensus", imagenet_setup(["independent", "kl"]) + f"""\
probe: {{name: consensus, domains: [{", ".join(MVH_SETS)}]}}
expect:
  - {{metric: consensus/mvh_edge, compare: "kl > independent"}}
""")
    bank = Bank(claim, ctx)
    stored = {arm: ctx.store.is_complete(recipe_key(bank.model_key(arm, 0))) for arm in bank.arms}
    result = run_claim(claim, ctx, use_probe_cache=False)
    assert result.problems() == []
    # the accuracy claim's students, when it ran first: the same recipe keys find them in the store
    assert _sources(result) == {"teacher": "weights file:tiny_cnn_wide_imagenet_standin.pt",
                                **{arm: "cache" if hit else "trained" for arm, hit in stored.items()}}
    m = result.measurements.values
    assert sorted(m) == sorted(f"consensus/{d}" for d in MVH_SETS)
    teacher, student = bank.model("teacher"), bank.model("kl", 0)
    for d in MVH_SETS:
        split = build_dataset(d, "test", root=DATA, num_workers=0)  # the probe's default: 224 px
        assert m[f"consensus/{d}"]["kl"].shape == (1, len(split))
        agree = (predict(teacher, split.x) == predict(student, split.x)).double().numpy()
        np.testing.assert_array_equal(m[f"consensus/{d}"]["kl"][0], agree)


def test_shape_bias_maps_1000_way_outputs_to_16_categories(tmp_path, ctx):
    """The 1000-way silhouette teacher from ``fixtures/weights`` and a student distilled from it on synthetic
    images (pure KL, so its mass sits on the teacher's classes). Their shape bias on the stand-ins means nothing;
    the test checks the cue-conflict loader, the dropping of same-cue images, the 1000 -> 16 decision mapping and
    NaN-aware statistics, against decisions recomputed here."""
    claim = gpu_claim(tmp_path, "layout-shape-bias", """\
setup:
  teacher: {arch: tiny_cnn, weights: "file:tiny_cnn_1000_mvh_silhouettes.pt"}
  student: {arch: tiny_cnn}
  methods: [{name: kl, params: {gamma: 0.0, alpha: 1.0, tau: 4.0}}]
  data: {name: synthetic, num_classes: 1000, n: 200, size: 32, channels: 3}
  seeds: [0]
  recipe: {epochs: 2, batch_size: 50, optimizer: adam, lr: 0.01, weight_decay: 0.0}
probe: {name: shape_bias, data: {name: mvh_cue_conflict, size: 32, num_workers: 0}}
expect:
  - {metric: shape_hit, compare: "kl > teacher"}
""")
    result = run_claim(claim, ctx, use_probe_cache=False)
    assert result.problems() == []
    split = build_dataset("mvh_cue_conflict", "test", root=DATA, size=32, num_workers=0)
    keep = split.y != split.meta["texture"]
    assert result.measurements.extras["shape_bias_images"] == int(keep.sum()) == 12
    assert MVH_CATEGORIES == tuple(IMAGENET16)
    bank = Bank(claim, ctx)
    x, shape, texture = split.x[keep], split.y[keep].numpy(), split.meta["texture"][keep].numpy()
    for arm, model in (("kl", bank.model("kl", 0)), ("teacher", bank.model("teacher"))):
        with torch.inference_mode():
            probs = model(x.to(DEVICE)).float().softmax(1).cpu().numpy()
        assert probs.shape[1] == 1000
        scores = np.stack([probs[:, IMAGENET16_INDICES[c]].mean(1) for c in IMAGENET16], 1)
        decision = scores.argmax(1)
        expected = np.where(decision == shape, 1.0, np.where(decision == texture, 0.0, np.nan))
        np.testing.assert_array_equal(result.measurements.values["shape_hit"][arm][0], expected)
