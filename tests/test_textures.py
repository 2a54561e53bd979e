"""The texture/shape cue-conflict builders (``kdclaims.data.textures``), checked on scikit-learn's digits."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from kdclaims.data import textures as tx
from kdclaims.data.digits import digits

torch.set_num_threads(1)
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def build(split: str, texture: str, seed: int = 0, **kw):
    return tx.textured_digits(split, None, seed, texture=texture, **kw)


# ---------------------------------------------------------------------------------------------- construction


def test_texture_parameters_are_distinct_and_checked():
    theta, period = tx.texture_parameters(torch.arange(tx.NUM_TEXTURES))
    pairs = {(round(float(t), 6), float(p)) for t, p in zip(theta, period)}
    assert len(pairs) == tx.NUM_TEXTURES
    with pytest.raises(ValueError, match="texture ids"):
        tx.texture_parameters(torch.tensor([tx.NUM_TEXTURES]))
    # jitter never lets one texture reach another: orientations and periods keep their ranges apart
    assert tx.ANGLE_JITTER < 0.5 * (tx.ORIENTATIONS[1] - tx.ORIENTATIONS[0])
    assert tx.PERIODS[0] * (1 + tx.PERIOD_JITTER) < tx.PERIODS[1] * (1 - tx.PERIOD_JITTER)


def test_grating_matches_the_direct_formula():
    g = torch.Generator().manual_seed(3)
    k = torch.randint(0, tx.NUM_TEXTURES, (7,), generator=g)
    phase, angle, factor = torch.rand(7, dtype=torch.float64) * 6, torch.rand(7, dtype=torch.float64) * 0.1, (
        0.9 + 0.2 * torch.rand(7, dtype=torch.float64))
    out = tx.grating(k, phase, angle, factor, 12)[:, 0].double()
    theta, period = tx.texture_parameters(k)
    theta, period = theta + angle, period * factor
    c = torch.arange(12, dtype=torch.float64)
    v, u = torch.meshgrid(c, c, indexing="ij")
    direct = 0.5 + 0.5 * torch.sin(
        2 * math.pi * (u * theta.cos()[:, None, None] + v * theta.sin()[:, None, None]) / period[:, None, None]
        + phase[:, None, None])
    assert torch.allclose(out, direct, atol=1e-5)


def test_deterministic_under_seed_and_different_across_seeds():
    a, b = build("train", "random", seed=0), build("train", "random", seed=0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.meta["texture"], b.meta["texture"])
    c = build("train", "random", seed=1)
    assert not torch.equal(a.meta["texture"], c.meta["texture"])
    # train and test draw from different streams
    assert build("test", "class").x.shape[0] != a.x.shape[0] or not torch.equal(build("test", "class").x, a.x)


def test_subset_images_look_the_same_as_in_the_whole_split():
    whole, part = build("train", "conflict"), build("train", "conflict", n=200)
    idx = part.meta["source_index"]
    assert len(part) == 200
    assert torch.equal(part.x, whole.x[idx]) and torch.equal(part.meta["texture"], whole.meta["texture"][idx])
    # n is stratified by label
    counts = torch.bincount(part.y, minlength=10)
    assert int(counts.max() - counts.min()) <= 2


def test_silhouette_and_labels_are_the_base_image_s():
    base = digits("train", None, 0, size=16)
    for mode in tx.MODES:
        s = build("train", mode)
        assert s.x.shape == (len(base), 1, 16, 16) and s.num_classes == 10 and s.channels == 1
        assert torch.equal(s.y, base.y)  # the label is the shape's class
        mask = tx.silhouette(base.x)
        # inside the silhouette every pixel is at least FLOOR; outside it is exactly 0
        assert bool((s.x[mask.bool()] >= tx.FLOOR - 1e-6).all())
        assert bool((s.x[~mask.bool()] == 0).all())
        assert float(s.x.max()) <= 1.0
        assert len(s.mean) == 1 and 0 < s.std[0] < 1


def test_texture_assignment_per_mode():
    cls, rnd, con = build("train", "class"), build("train", "random"), build("train", "conflict")
    assert torch.equal(cls.meta["texture"], cls.y)
    assert not bool((con.meta["texture"] == con.y).any())  # a cue conflict never agrees
    # random: textures independent of the label (about 1/10 agree); conflict: every other class used per label
    agree = float((rnd.meta["texture"] == rnd.y).double().mean())
    assert 0.05 < agree < 0.16
    for c in range(10):
        used = set(con.meta["texture"][con.y == c].tolist())
        assert used == set(range(10)) - {c}
    assert set(rnd.meta["texture"].tolist()) == set(range(10))


def test_bad_texture_mode_is_rejected():
    with pytest.raises(ValueError, match="texture must be one of"):
        build("train", "stylized")


# --------------------------------------------------------------------------------- which cue predicts what


def texture_features(x: torch.Tensor) -> np.ndarray:
    """Energy of each image at the ten nominal texture frequencies (a texture-only, shape-blind feature):
    ``|Σ_{u,v} r(u, v) · exp(-2πi (u cos θ_k + v sin θ_k) / P_k)|`` with ``r`` the image minus its mean inside the
    silhouette (so the silhouette's own spectrum is damped)."""
    x = x[:, 0].double()
    mask = tx.silhouette(x[:, None].float())[:, 0].double()
    inside = (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
    r = x - mask * inside[:, None, None]
    theta, period = tx.texture_parameters(torch.arange(tx.NUM_TEXTURES))
    c = torch.arange(x.shape[-1], dtype=torch.float64)
    v, u = torch.meshgrid(c, c, indexing="ij")
    phase = 2 * math.pi * (u[None] * theta.cos()[:, None, None] + v[None] * theta.sin()[:, None, None]) / period[
        :, None, None]
    re = torch.einsum("nhw,khw->nk", r, phase.cos())
    im = torch.einsum("nhw,khw->nk", r, phase.sin())
    e = (re**2 + im**2).sqrt()
    return (e / e.sum(1, keepdim=True).clamp(min=1e-9)).numpy()


def shape_features(x: torch.Tensor) -> np.ndarray:
    """The silhouette alone, flattened (a texture-blind feature)."""
    return tx.silhouette(x).flatten(1).numpy()


def fit_score(feat, train, test, target: str = "y") -> float:
    """Accuracy on ``test`` (against its label or its texture) of a classifier fitted on ``feat(train.x)``:
    logistic regression on the ten texture energies, nearest centroid on silhouettes (fast and enough)."""
    truth = (test.y if target == "y" else test.meta["texture"]).numpy()
    ftrain, ytrain, ftest = feat(train.x), train.y.numpy(), feat(test.x)
    if feat is texture_features:
        pred = LogisticRegression(max_iter=2000, C=10.0).fit(ftrain, ytrain).predict(ftest)
    else:
        centroids = np.stack([ftrain[ytrain == c].mean(0) for c in range(10)])
        pred = ((ftest[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((pred == truth).mean())


def test_texture_only_classifier_reads_class_textures_but_not_random_ones():
    cls_train, cls_test = build("train", "class"), build("test", "class")
    rnd_train, rnd_test = build("train", "random"), build("test", "random")
    assert fit_score(texture_features, cls_train, cls_test) > 0.9  # texture predicts the label in 'class'
    assert fit_score(texture_features, rnd_train, rnd_test) < 0.2  # and nothing in 'random' (chance 0.1)
    # the feature does see the texture in 'random' too: it is the label that no longer follows it
    tex_train = replace(rnd_train, y=rnd_train.meta["texture"])
    assert fit_score(texture_features, tex_train, rnd_test, target="texture") > 0.9


def test_cue_conflict_separates_a_shape_reader_from_a_texture_reader():
    con = build("test", "conflict")
    shape_acc = fit_score(shape_features, build("train", "random"), con)  # vs the shape label
    shape_to_texture = fit_score(shape_features, build("train", "random"), con, target="texture")
    tex_to_texture = fit_score(texture_features, build("train", "class"), con, target="texture")
    tex_to_shape = fit_score(texture_features, build("train", "class"), con)
    assert shape_acc > 0.6 and shape_to_texture < 0.1  # silhouettes carry the shape class, never the texture one
    assert tex_to_texture > 0.9 and tex_to_shape < 0.05  # textures follow the texture class, never the shape


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_textured_fashion_is_registered_and_built():
    from kdclaims.registries import DATASETS

    s = DATASETS.get("textured_fashion")("test", None, 0, texture="conflict", n=300)
    assert s.x.shape == (300, 1, 28, 28) and s.num_classes == 10
    assert not bool((s.meta["texture"] == s.y).any())
