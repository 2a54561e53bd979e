"""I-FGSM and the adversarial-transfer probe of §4.2 on tiny CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes import FakeBank, constant_classifier, hooks_left, image_split, trained_classifier

from kdclaims.probes.adversarial import adversarial_transfer, ifgsm

torch.set_num_threads(1)
ATTACK = {"eps": 0.05, "step": 0.02, "steps": 5}


def test_ifgsm_stays_in_the_ball_and_raises_the_loss() -> None:
    model = trained_classifier(0)
    split = image_split(32, size=16)
    x = split.x.clone()
    x[:4] = 0.0  # images at the border of [0, 1]: the clamp must act
    x[4:8] = 1.0
    xa = ifgsm(model, x, split.y, **ATTACK)
    assert xa.shape == x.shape and not xa.requires_grad
    assert (xa - x).abs().max() <= ATTACK["eps"] + 1e-6
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    assert (xa - x).abs().max() > ATTACK["eps"] / 2  # it moved
    with torch.no_grad():
        before = F.cross_entropy(model(x), split.y, reduction="none")
        after = F.cross_entropy(model(xa), split.y, reduction="none")
    assert after.sum() > before.sum()
    assert (after >= before - 1e-6).float().mean() >= 0.9
    assert torch.equal(x, split.x.clone().index_put_((torch.arange(8),), x[:8]))  # input left untouched
    assert all(p.grad is None for p in model.parameters())


def test_ifgsm_under_inference_mode_still_attacks() -> None:
    model = trained_classifier(0)
    split = image_split(8, size=16)
    with torch.inference_mode():
        xa = ifgsm(model, split.x, split.y, **ATTACK)
    assert (xa - split.x).abs().max() > 0


def _bank(seeds=(0, 1)) -> FakeBank:
    teacher = trained_classifier(100)
    models = {"teacher": teacher, "foreign": trained_classifier(200), "const_teacher": constant_classifier()}
    for s in seeds:
        models[("independent", s)] = trained_classifier(s)
        models[("kl", s)] = teacher  # a student identical to the teacher
        models[("const", s)] = constant_classifier()
    split = image_split(48, size=16)
    return FakeBank(models, list(seeds), ["independent", "kl", "const"], ["teacher", "foreign", "const_teacher"],
                    {None: split})


def test_probe_identical_student_always_fooled_constant_never() -> None:
    bank = _bank()
    m = adversarial_transfer(bank, {**ATTACK, "batch_size": 20})
    n_fool = m.extras["n_fooling"]
    assert n_fool >= 2 and m.extras["source_fooling_rate"] == pytest.approx(n_fool / 48)
    fooled = m.values["fooled"]
    assert fooled["kl"].shape == (2, n_fool)
    assert np.all(fooled["kl"] == 1.0)
    assert np.all(fooled["const"] == 0.0)
    assert fooled["const_teacher"].shape == (1, n_fool) and np.all(fooled["const_teacher"] == 0.0)
    assert "teacher" not in fooled  # the source is not measured on its own images
    # ... but its own fooling rate is a per-image metric over all attacked images (Table 6's teacher column)
    assert m.values["source_fooled"]["teacher"].shape == (1, 48)
    assert m.values["source_fooled"]["teacher"].sum() == n_fool
    assert set(np.unique(fooled["independent"])) <= {0.0, 1.0}
    assert m.extras["eps"] == ATTACK["eps"]
    assert not hooks_left(bank.all_models())


def test_foreign_source_and_eps_sweep() -> None:
    bank = _bank(seeds=(0,))
    m = adversarial_transfer(bank, {**ATTACK, "source": "foreign", "eps_sweep": [0.02, 0.05, 0.1]})
    assert m.extras["source"] == "foreign"
    assert "teacher" in m.values["fooled"] and "foreign" not in m.values["fooled"]
    assert list(m.values["source_fooled"]) == ["foreign"]
    # the sweep's eps=0.05 is the main attack: same units, same values
    for arm in m.values["fooled"]:
        np.testing.assert_array_equal(m.values["fooled/eps=0.05"][arm], m.values["fooled"][arm])
    sweep = m.extras["eps_sweep"]
    assert sweep["eps"] == [0.02, 0.05, 0.1]
    assert sweep["step"] == pytest.approx([0.008, 0.02, 0.04])
    assert sweep["n_fooling"][0] <= sweep["n_fooling"][2]  # a larger ball fools at least as many here


def test_required_params_and_too_few_fooling_images() -> None:
    bank = _bank(seeds=(0,))
    with pytest.raises(ValueError, match=r"adversarial_transfer.*\['eps'\]"):
        adversarial_transfer(bank, {"step": 0.01, "steps": 5})
    with pytest.raises(ValueError, match="unknown.*epsilon"):
        adversarial_transfer(bank, {**ATTACK, "epsilon": 0.1})
    with pytest.raises(ValueError, match="unknown teacher"):
        adversarial_transfer(bank, {**ATTACK, "source": "nobody"})
    with pytest.raises(ValueError, match="fool the source 'const_teacher'"):
        adversarial_transfer(bank, {**ATTACK, "source": "const_teacher"})
