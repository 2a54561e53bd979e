"""The agreement probe (§4.3, C.4, C.5) and the consensus probe (§4.4) on tiny CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import FakeBank, constant_classifier, hooks_left, image_split, trained_classifier

from kdclaims.probes.agreement import agreement
from kdclaims.probes.consensus import consensus

torch.set_num_threads(1)
STRONG = {"color": {"strength": 0.9, "hue": 0.5}, "crop": {"scale": 0.2}, "shift": {"max_shift": 8}}


def _bank(n: int = 48) -> FakeBank:
    teacher = trained_classifier(100)
    models = {"teacher": teacher, "tstar": constant_classifier()}
    for s in (0, 1):
        models[("independent", s)] = trained_classifier(s)
        models[("kl", s)] = teacher
        models[("const", s)] = constant_classifier()
    return FakeBank(models, [0, 1], ["independent", "kl", "const"], ["teacher", "tstar"], {None: image_split(n)})


@pytest.mark.parametrize("transform", ["color", "crop", "shift"])
def test_constant_model_always_agrees_and_pairs_are_shared(transform: str) -> None:
    bank = _bank()
    m = agreement(bank, {"transform": transform, **STRONG[transform]})
    a = m.values["agreement"]
    assert a["independent"].shape == (2, 48) and a["teacher"].shape == (1, 48)
    assert np.all(a["const"] == 1.0) and np.all(a["tstar"] == 1.0)
    # kl is the teacher itself: on shared pairs its rows equal the teacher's row exactly
    np.testing.assert_array_equal(a["kl"], np.repeat(a["teacher"], 2, axis=0))
    # the transform does something: a trained model changes its mind on some pairs
    assert min(a["teacher"].mean(), a["independent"].mean()) < 1.0
    assert m.extras["transform"] == transform
    assert not hooks_left(bank.all_models())


@pytest.mark.parametrize(
    "transform,params",
    [
        ("color", {"strength": 0.0}),
        ("shift", {"max_shift": 0}),
        ("crop", {"scale": 1.0}),
    ],
)
def test_identity_transform_gives_full_agreement(transform: str, params: dict) -> None:
    m = agreement(_bank(), {"transform": transform, **params})
    for arm, rows in m.values["agreement"].items():
        assert np.all(rows == 1.0), arm


def test_seed_reproduces_and_batch_size_does_not_matter() -> None:
    bank = _bank(n=300)  # more than one pair chunk
    params = {"transform": "color", "strength": 0.8, "hue": 0.3, "seed": 3}
    a = agreement(bank, {**params, "batch_size": 7}).values["agreement"]
    b = agreement(bank, {**params, "batch_size": 256}).values["agreement"]
    for arm in a:
        np.testing.assert_array_equal(a[arm], b[arm])
    c = agreement(bank, {**params, "seed": 4}).values["agreement"]
    assert any(not np.array_equal(a[arm], c[arm]) for arm in a)


def test_sweep_adds_submetrics() -> None:
    bank = _bank()
    m = agreement(bank, {"transform": "shift", "max_shift": 4, "sweep": [0, 4, 8]})
    assert {"agreement", "agreement/0", "agreement/4", "agreement/8"} <= set(m.values)
    np.testing.assert_array_equal(m.values["agreement/4"]["teacher"], m.values["agreement"]["teacher"])
    assert np.all(m.values["agreement/0"]["independent"] == 1.0)
    assert m.extras["sweep"] == {"param": "max_shift", "values": [0, 4, 8]} and m.extras["max_shift"] == 4


def test_agreement_params_are_checked() -> None:
    bank = _bank()
    with pytest.raises(ValueError, match=r"needs parameter\(s\) \['strength'\]"):
        agreement(bank, {"transform": "color"})
    with pytest.raises(ValueError, match="transform must be one of"):
        agreement(bank, {"transform": "blur", "strength": 1})
    with pytest.raises(ValueError, match="unknown.*scale"):
        agreement(bank, {"transform": "color", "strength": 0.4, "scale": 0.5})
    with pytest.raises(ValueError, match="scale must be in"):
        agreement(bank, {"transform": "crop", "scale": 1.5})


# ------------------------------------------------------------------------------------------------ consensus


def test_consensus_per_domain_and_dataset() -> None:
    bank = _bank()
    split = bank.eval_split()
    split.groups = torch.arange(48) % 2
    split.group_names = ["a", "b"]
    other = image_split(20, seed=7, name="other")
    bank._splits["other"] = other
    m = consensus(bank, {"domains": ["a", "b", "other"]})
    assert set(m.values) == {"consensus/a", "consensus/b", "consensus/other"}
    assert m.values["consensus/a"]["kl"].shape == (2, 24) and m.values["consensus/other"]["kl"].shape == (2, 20)
    for metric in m.values:
        assert np.all(m.values[metric]["kl"] == 1.0)  # the student is the teacher
    teacher, ind0 = bank.model("teacher"), bank.model("independent", 0)
    with torch.no_grad():
        expect = (teacher(other.x).argmax(1) == ind0(other.x).argmax(1)).numpy()
        const = (teacher(other.x).argmax(1) == 2).numpy()  # the constant model always says class 2
    np.testing.assert_array_equal(m.values["consensus/other"]["independent"][0], expect)
    np.testing.assert_array_equal(m.values["consensus/other"]["const"][0], const)
    assert "teacher" not in m.values["consensus/a"]
    whole = consensus(bank, {"teacher": "tstar"})
    assert set(whole.values) == {"consensus"}
    np.testing.assert_array_equal(whole.values["consensus"]["const"], np.ones((2, 48)))


def test_consensus_params_are_checked() -> None:
    bank = _bank()
    with pytest.raises(ValueError, match="domains must be"):
        consensus(bank, {"domains": "sketch"})
    with pytest.raises(ValueError, match="unknown teacher"):
        consensus(bank, {"teacher": "nobody"})
    with pytest.raises(ValueError, match="unknown.*domain'"):
        consensus(bank, {"domain": ["a"]})


@pytest.mark.parametrize("transform,params", [("color", {"strength": 0.4, "hue": 0.2, "sweep": [0.3, 0.4]}),
                                              ("shift", {"max_shift": 2, "sweep": [1, 2]})])
def test_probe_matches_a_direct_computation_of_each_pair(transform: str, params: dict) -> None:
    """The probe shares the colour pair's clean predictions across strengths and measures a repeated value once;
    both shortcuts must give what pairing each image by hand gives. Checked to fail: with the clean predictions
    taken from the jittered view, or the sweep's repeated value drawn from a generator not reseeded, this fails."""
    from kdclaims.probes.agreement import PAIR_CHUNK, pair_fn
    from kdclaims.probes.common import predict

    bank = _bank(n=PAIR_CHUNK + 40)  # two chunks: the generator runs on across chunks
    m = agreement(bank, {"transform": transform, "seed": 3, **params})
    key = "strength" if transform == "color" else "max_shift"
    make_pair = pair_fn(transform, params.get("hue", 0.0))
    split = bank.eval_split()
    for metric, v in [("agreement", params[key]), *((f"agreement/{s:g}", s) for s in params["sweep"])]:
        gen = torch.Generator().manual_seed(3)
        pairs = [make_pair(split.x[i:i + PAIR_CHUNK], v, gen) for i in range(0, len(split), PAIR_CHUNK)]
        for arm, row, seed in [("independent", 0, 0), ("kl", 1, 1)]:
            model = bank.model(arm, seed)
            want = torch.cat([predict(model, a) == predict(model, b) for a, b in pairs]).numpy()
            np.testing.assert_array_equal(m.values[metric][arm][row], want.astype(float), err_msg=f"{metric} {arm}")
        teacher = bank.model("teacher")
        want = torch.cat([predict(teacher, a) == predict(teacher, b) for a, b in pairs]).numpy()
        np.testing.assert_array_equal(m.values[metric]["teacher"][0], want.astype(float))
    assert not np.all(m.values["agreement"]["independent"] == 1), "every pair agrees: the comparison is empty"
