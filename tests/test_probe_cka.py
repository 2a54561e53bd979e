"""Linear CKA, the unbiased minibatch estimator, and the cka probe on a bank of tiny conv nets."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.probes.cka import (
    centred_gram,
    cka_from_grams,
    cka_probe,
    hsic1,
    layer_grams,
    linear_cka,
    minibatch_cka,
    minibatch_indices,
)

torch.set_num_threads(1)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s feature form, written independently in numpy float64."""
    x = x.astype(np.float64) - x.astype(np.float64).mean(0)
    y = y.astype(np.float64) - y.astype(np.float64).mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def orthogonal(p: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng(seed).standard_normal((p, p)))
    return q


# --- linear CKA --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, p", [(60, 12), (20, 150)])  # feature form, then the n x n Gram form
def test_invariant_to_rotation_scale_and_shift(n, p):
    x = rng(0).standard_normal((n, p))
    y = 3.7 * x @ orthogonal(p, 1) + rng(2).standard_normal(p) * 50
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-6)
    assert minibatch_cka([(x[:n // 2], y[:n // 2]), (x[n // 2:], y[n // 2:])]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("n, p1, p2", [(50, 8, 5), (16, 40, 90)])
def test_matches_an_independent_reference_in_both_forms(n, p1, p2):
    x = rng(3).standard_normal((n, p1))
    y = np.tanh(x @ rng(4).standard_normal((p1, p2))) + 0.5 * rng(5).standard_normal((n, p2))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10)


def test_symmetric():
    x, y = rng(6).standard_normal((40, 30)), rng(7).standard_normal((40, 9)) + rng(6).standard_normal((40, 1))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
    kx, ky = centred_gram(x), centred_gram(y)
    for est in ("unbiased", "biased"):
        assert cka_from_grams(kx, ky, est) == pytest.approx(cka_from_grams(ky, kx, est), rel=1e-12)
    assert minibatch_cka([(x, y)]) == pytest.approx(minibatch_cka([(y, x)]), rel=1e-12)


def test_float32_uncentred_features_give_the_float64_value():
    # Features with a mean 10^4 times their spread: centring in float32 after a float32 Gram would lose them.
    base = rng(8).standard_normal((64, 20))
    x32 = torch.tensor(1e4 + base, dtype=torch.float32)
    y32 = torch.tensor(1e4 + np.tanh(base @ rng(9).standard_normal((20, 30))), dtype=torch.float32)
    want = reference_cka(x32.numpy().astype(np.float64), y32.numpy().astype(np.float64))
    assert 0.1 < want < 0.99
    assert linear_cka(x32, y32) == pytest.approx(want, rel=1e-9)
    wide = torch.cat([x32] * 8, 1)  # 160 > 64 features: the Gram form
    assert linear_cka(wide, y32) == pytest.approx(want, rel=1e-9)
    # The same CKA computed naively in float32 (Gram, then centring) is far off: the test above could fail.
    k, l_ = x32 @ x32.T, y32 @ y32.T
    h = torch.eye(64) - 1 / 64
    k, l_ = h @ k @ h, h @ l_ @ h
    naive = float((k * l_).sum() / (k.norm() * l_.norm()))
    assert abs(naive - want) > 0.1


def test_independent_features_biased_vs_unbiased():
    # For independent Gaussian X, Y (n x p) the plug-in CKA tends to 1 / (1 + n/p) (= 0.83 for n=200, p=1000):
    # K ~ p*H plus O(sqrt(p)) noise, so <K, L> ~ p^2 (n-1) while |K|^2 ~ p^2 (n-1) + p n^2. The unbiased
    # estimator removes the diagonal terms and is centred on 0 (its spread here is about 0.01).
    n, p = 200, 1000
    x, y = rng(10).standard_normal((n, p)), rng(11).standard_normal((n, p))
    biased = linear_cka(x, y)
    unbiased = cka_from_grams(centred_gram(x), centred_gram(y), "unbiased")
    assert 0.75 < biased < 0.9
    assert abs(unbiased) < 0.05
    assert abs(minibatch_cka([(x[:100], y[:100]), (x[100:], y[100:])])) < 0.05
    # With few features the plug-in value is small too (about p / (n + p)).
    xs, ys = rng(12).standard_normal((1000, 10)), rng(13).standard_normal((1000, 10))
    assert linear_cka(xs, ys) < 0.05


# --- unbiased HSIC ----------------------------------------------------------------------------------------------


def test_hsic1_equals_the_u_statistic_by_brute_force():
    # HSIC_1 is the U-statistic of h(i,j,q,r) = K_ij L_ij + K_ij L_qr - 2 K_ij L_iq over distinct (i,j,q,r).
    n = 7
    x, y = rng(14).standard_normal((n, 3)), rng(15).standard_normal((n, 4))
    k, l_ = x @ x.T, y @ y.T
    tuples = list(itertools.permutations(range(n), 4))
    brute = np.mean([k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q] for i, j, q, r in tuples])
    assert hsic1(torch.tensor(k), torch.tensor(l_)) == pytest.approx(brute, rel=1e-10)


def test_hsic1_ignores_a_shift_of_the_features():
    x, y = rng(16).standard_normal((12, 5)), rng(17).standard_normal((12, 6))
    xs, ys = x + 3.0, y - 7.0
    a = hsic1(torch.tensor(x @ x.T), torch.tensor(y @ y.T))
    assert hsic1(torch.tensor(xs @ xs.T), torch.tensor(ys @ ys.T)) == pytest.approx(a, rel=1e-9)
    assert hsic1(centred_gram(x), centred_gram(y)) == pytest.approx(a, rel=1e-9)


def test_minibatch_cka_of_one_batch_is_that_batch_unbiased_cka():
    x, y = rng(18).standard_normal((30, 8)), rng(19).standard_normal((30, 8)) + rng(18).standard_normal((30, 8))
    assert minibatch_cka([(x, y)]) == pytest.approx(cka_from_grams(centred_gram(x), centred_gram(y)), rel=1e-12)


def test_minibatch_indices_are_disjoint_and_equal():
    parts = minibatch_indices(103, 10, None, seed=0)
    assert len(parts) == 10 and all(len(p) == 10 for p in parts)
    flat = torch.cat(parts)
    assert len(flat.unique()) == 100 and int(flat.max()) < 103
    assert [len(p) for p in minibatch_indices(103, None, 25, seed=0)] == [25] * 4
    with pytest.raises(ValueError, match="at least 4"):
        minibatch_indices(12, 4, None, seed=0)


# --- the probe -------------------------------------------------------------------------------------------------


LAYERS = [f"F{i}" for i in range(1, 8)]


class TinyNet(nn.Module):
    """Six conv blocks (F1..F6) and a linear head (F7) on 1 x 8 x 8 images."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        chans = [1, 4, 4, 6, 6, 8, 8]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU()) for a, b in zip(chans, chans[1:])
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


def tiny(seed: int) -> Classifier:
    taps = {f"F{i + 1}": f"net.blocks.{i}" for i in range(6)} | {"F7": "net.head"}
    return Classifier(TinyNet(seed), arch="tiny", mean=[0.5], std=[0.25], taps=taps).eval()


class Bank:
    def __init__(self, models, seeds, arms, teachers, split):
        self._models, self.seeds, self.arms, self.teachers, self._split = models, seeds, arms, teachers, split
        self.device = torch.device("cpu")

    def model(self, name, seed=None):
        return self._models[name] if name in self.teachers else self._models[(name, seed)]

    def eval_split(self, data=None):
        return self._split

    def arm_method(self, arm):
        return arm


def fake_bank(n_images: int = 48) -> Bank:
    g = torch.Generator().manual_seed(0)
    split = Split("imgs", torch.rand(n_images, 1, 8, 8, generator=g), torch.zeros(n_images, dtype=torch.long), 5)
    teacher = tiny(100)
    models = {"teacher": teacher}
    for s in (0, 1):
        models[("same", s)] = copy.deepcopy(teacher)
        models[("other", s)] = tiny(s)
    return Bank(models, [0, 1], ["same", "other"], ["teacher"], split)


def test_probe_student_equal_to_teacher_has_unit_diagonal():
    bank = fake_bank()
    m = cka_probe(bank, {"units": 4, "batch_size": 5})
    assert set(m.values) == {f"cka/{layer}" for layer in LAYERS} | {"cka_diag"}
    for metric, arms in m.values.items():
        assert set(arms) == {"same", "other"}
        assert arms["same"].shape == (2, 4)  # seeds x minibatches
        np.testing.assert_allclose(arms["same"], 1.0, atol=1e-9)
        assert np.all(np.isfinite(arms["other"])) and np.all(arms["other"] < 1 - 1e-6)
    mat = np.asarray(m.extras["cka_matrix"]["same"])
    assert mat.shape == (7, 7)
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-9)
    np.testing.assert_allclose(mat, mat.T, atol=1e-9)
    assert len(m.extras["cka_matrix_seeds"]["other"]) == 2
    assert m.extras["cka_units"] == "minibatches" and m.extras["cka_batch_images"] == 12
    for model in bank._models.values():  # no hook left behind
        assert all(not mod._forward_hooks for mod in model.modules())


def test_probe_values_match_the_functions_and_ignore_the_batch_size():
    bank = fake_bank()
    m = cka_probe(bank, {"batch_images": 16, "layers": ["F2", "F5"], "estimator": "biased", "batch_size": 7})
    assert set(m.values) == {"cka/F2", "cka/F5", "cka_diag"}
    parts = minibatch_indices(48, None, 16, seed=0)
    split = bank.eval_split()
    feats = {}
    for name in ("teacher", ("other", 1)):
        model = bank.model(*name) if isinstance(name, tuple) else bank.model(name)
        with torch.no_grad():
            acts = model.net.blocks[1](model.net.blocks[0]((split.x - 0.5) / 0.25))
        feats[name] = acts.flatten(1).numpy()
    want = [reference_cka(feats["teacher"][p.numpy()], feats[("other", 1)][p.numpy()]) for p in parts]
    np.testing.assert_allclose(m.values["cka/F2"]["other"][1], want, rtol=1e-9)
    np.testing.assert_allclose(m.values["cka_diag"]["other"],
                               (m.values["cka/F2"]["other"] + m.values["cka/F5"]["other"]) / 2)
    grams_a = layer_grams(bank.model("teacher"), split, parts, ["F3"], 5, bank.device)
    grams_b = layer_grams(bank.model("teacher"), split, parts, ["F3"], 48, bank.device)
    for a, b in zip(grams_a, grams_b):
        torch.testing.assert_close(a[0], b[0])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bogus": 1}, "cka.*bogus"),
        ({"units": 2, "batch_images": 8}, "either units or batch_images"),
        ({"estimator": "rbf"}, "estimator"),
        ({"teacher": "tstar"}, "tstar"),
        ({"layers": "F1"}, "layers"),
        ({"units": 20}, "at least 4"),
    ],
)
def test_probe_bad_params_raise(params, match):
    with pytest.raises(ValueError, match=match):
        cka_probe(fake_bank(), params)
