"""The decision-boundary probe (NeurIPS Table 1): plane geometry, the two scores and known answers on tiny CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import MEAN, STD, FakeBank, constant_classifier, image_split, trained_classifier
from torch import Tensor, nn

from kdclaims.models.base import Classifier
from kdclaims.probes.boundary import boundary, label_plane, plane, region_score, sample_triplets

torch.set_num_threads(1)
FAST = {"triplets": 4, "resolution": 12}


class Permuted(nn.Module):
    """The logits of ``inner`` with class ``perm[c]`` scoring what class ``c`` scored: labels map c -> perm[c]."""

    def __init__(self, inner: nn.Module, perm: list[int]):
        super().__init__()
        self.inner, self.perm = inner, perm

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        out = torch.empty_like(z)
        out[:, self.perm] = z
        return out


def _permuted(model: Classifier, perm: list[int]) -> Classifier:
    # the inner Classifier already normalises, so the outer one must not: mean 0, std 1
    return Classifier(Permuted(model, perm), arch="permuted", mean=(0.0,) * 3, std=(1.0,) * 3, taps={}).eval()


def _bank(students: dict[str, nn.Module], seeds: tuple[int, ...] = (0, 1)) -> FakeBank:
    models: dict = {"teacher": trained_classifier(100)}
    for arm, model in students.items():
        for s in seeds:
            models[(arm, s)] = model
    return FakeBank(models, list(seeds), list(students), ["teacher"], {None: image_split(60)})


def test_plane_basis_is_orthonormal_and_holds_the_triplet() -> None:
    """Fails if Gram-Schmidt or the anchor coordinates are wrong (checked by dropping the projection step)."""
    x = image_split(3).x
    p = plane(x[0], x[1], x[2], resolution=5, margin=0.1)
    assert abs(float(p.u.flatten() @ p.v.flatten())) < 1e-9
    assert abs(float(p.u.norm()) - 1) < 1e-9 and abs(float(p.v.norm()) - 1) < 1e-9
    for i in range(3):
        s, t = p.anchors[i]
        np.testing.assert_allclose((p.origin + s * p.u + t * p.v).numpy(), x[i].double().numpy(), atol=1e-6)
    # the grid's corners are the bounding box widened by 10 % of its side
    lo, hi = p.anchors.min(0).values, p.anchors.max(0).values
    np.testing.assert_allclose(p.coef[0].numpy(), (lo - 0.1 * (hi - lo)).numpy())
    np.testing.assert_allclose(p.coef[-1].numpy(), (hi + 0.1 * (hi - lo)).numpy())
    assert len(p) == 25 and p.images(slice(0, 25)).shape == (25, *x[0].shape)


def test_collinear_triplet_is_refused() -> None:
    x = image_split(2).x
    with pytest.raises(ValueError, match="collinear"):
        plane(x[0], x[1], 2 * x[1] - x[0], 4, 0.1)


def test_region_scores_by_hand() -> None:
    """agreement 3/4; mIoU: class 0 -> 1/2, class 1 -> 2/3, mean 7/12."""
    a, b = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert region_score(a, b, "agreement") == pytest.approx(0.75)
    assert region_score(a, b, "miou") == pytest.approx(7 / 12)
    assert region_score(a, a, "miou") == 1.0
    with pytest.raises(ValueError, match="measure"):
        region_score(a, b, "dice")


@pytest.mark.parametrize("measure", ["agreement", "miou"])
def test_identical_model_scores_one(measure: str) -> None:
    """The teacher compared with itself covers the same regions: 1 on every triplet and seed."""
    teacher = trained_classifier(100)
    m = boundary(_bank({"same": teacher}), {**FAST, "measure": measure})
    np.testing.assert_array_equal(m.values["boundary"]["same"], np.ones((2, 4)))


def _teacher_grids(bank: FakeBank, m, resolution: int) -> list[np.ndarray]:
    x = bank.eval_split().x
    return [label_plane(bank.model("teacher"), plane(x[i], x[j], x[k], resolution, 0.1), 64).numpy()
            for i, j, k in m.extras["triplets"]["boundary"]]


def test_permuted_classes_give_the_expected_scores() -> None:
    """A student that swaps classes 0 and 1 agrees exactly where the teacher says 2; its mIoU is 1 for class 2 and
    0 for classes 0 and 1. A cyclic shift (no fixed class) scores 0 under both measures."""
    teacher = trained_classifier(100)
    bank = _bank({"swap": _permuted(teacher, [1, 0, 2]), "cycle": _permuted(teacher, [1, 2, 0])})
    agree = boundary(bank, FAST)
    miou = boundary(bank, {**FAST, "measure": "miou"})
    grids = _teacher_grids(bank, agree, FAST["resolution"])
    want_agree = [np.mean(g == 2) for g in grids]
    want_miou = [(2 in g) / len(np.union1d(g, [{0: 1, 1: 0, 2: 2}[c] for c in g])) for g in grids]
    for row in range(2):
        np.testing.assert_allclose(agree.values["boundary"]["swap"][row], want_agree)
        np.testing.assert_allclose(miou.values["boundary"]["swap"][row], want_miou)
    assert np.all(agree.values["boundary"]["cycle"] == 0) and np.all(miou.values["boundary"]["cycle"] == 0)
    assert 0 < np.mean(want_agree) < 1  # the teacher's planes hold class 2 and other classes: the test can tell


def test_constant_model_scores_the_share_of_its_class() -> None:
    """A model that always says class 2 (Constant's largest logit) agrees on the teacher's class-2 points."""
    bank = _bank({"const": constant_classifier()})
    m = boundary(bank, FAST)
    grids = _teacher_grids(bank, m, FAST["resolution"])
    np.testing.assert_allclose(m.values["boundary"]["const"][0], [np.mean(g == 2) for g in grids])


def test_triplets_are_seeded_distinct_and_shared_by_arms() -> None:
    """Fails if the generator is not the explicit seed (different seeds must differ, equal seeds repeat)."""
    bank = _bank({"a": trained_classifier(0), "b": trained_classifier(1)})
    m1, m2, m3 = (boundary(bank, {**FAST, "seed": s}) for s in (5, 5, 6))
    assert m1.extras["triplets"] == m2.extras["triplets"] != m3.extras["triplets"]
    np.testing.assert_array_equal(m1.values["boundary"]["a"], m2.values["boundary"]["a"])
    y = bank.eval_split().y.numpy()
    assert all(len(set(y[t])) == 3 for t in m1.extras["triplets"]["boundary"])
    assert m1.values["boundary"]["a"].shape == m1.values["boundary"]["b"].shape == (2, 4)


def test_sampler_refuses_too_few_classes() -> None:
    with pytest.raises(ValueError, match="3 different classes"):
        sample_triplets(np.array([0, 1, 0, 1]), 2, np.random.default_rng(0))
    t = sample_triplets(np.array([0, 0, 0, 1]), 3, np.random.default_rng(0), distinct=False)
    assert all(len(set(r)) == 3 for r in t.tolist())  # distinct images even when classes may repeat


def test_domains_and_figure_planes() -> None:
    """Per-domain metrics from the split's groups; the figure grids are thinned to at most 64 points per side."""
    split = image_split(60)
    split.groups = torch.arange(60) % 2
    split.group_names = ["plain", "other"]
    bank = _bank({"ind": trained_classifier(0)})
    bank._splits[None] = split
    m = boundary(bank, {"triplets": 3, "resolution": 130, "domains": ["plain", "other"], "figure_planes": 2,
                        "figure_domain": "other"})
    assert set(m.values) == {"boundary/plain", "boundary/other"}
    planes = m.extras["boundary_planes"]
    assert [p["domain"] for p in planes] == ["other", "other"]
    assert set(planes[0]["grids"]) == {"teacher", "ind"}
    assert np.array(planes[0]["grids"]["teacher"]).shape == (44, 44)  # every 3rd of 130 points


@pytest.mark.parametrize("params,match", [
    ({"triplets": 0}, "triplets"), ({"measure": "dice"}, "measure"), ({"margin": -1}, "margin"),
    ({"resolution": 2.5}, "resolution"), ({"colour": 1}, "unknown"), ({"figure_domain": "x"}, "figure_domain"),
])
def test_bad_parameters_name_the_probe(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        boundary(_bank({"a": trained_classifier(0)}), {**FAST, **params})


def test_report_draws_the_planes_side_by_side() -> None:
    """The probe's label grids become a Fig. 7-like PNG (rows = planes, columns = teacher and students); fails
    without the ``planes`` figure kind (the schema rejects it, or nothing is drawn)."""
    import io

    import matplotlib.image

    from kdclaims.report.figures import figure_png, has_figure
    from kdclaims.report.schema import ReportItem

    m = boundary(_bank({"independent": trained_classifier(0), "kl": trained_classifier(100)}),
                 {**FAST, "figure_planes": 2})
    item = ReportItem.model_validate({
        "nodeid": "claims/x.yaml::x[smoke]", "id": "x", "tier": "smoke", "outcome": "passed", "verdict": "supported",
        "figure": {"kind": "planes", "metrics": ["boundary"]}, "extras": {**m.extras}})
    png = figure_png(item)
    assert png is not None and png.startswith(b"\x89PNG")
    image = matplotlib.image.imread(io.BytesIO(png))
    assert image.shape[0] > 300 and image.shape[1] > 500  # two rows of three panels
    assert not has_figure(item.model_copy(update={"extras": {}}))
