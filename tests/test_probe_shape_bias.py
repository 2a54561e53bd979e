"""Shape bias: the per-image shape/texture hits, the 16-category mapping and the probe on a fake bank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.probes.imagenet16 import CATEGORIES, IMAGENET16_INDICES, probabilities_to_16
from kdclaims.probes.shape_bias import conflict_mask, decision_function, shape_bias, shape_bias_probe, shape_hits

SCALE = 1000.0
C = {name: i for i, name in enumerate(CATEGORIES)}


# --- pure functions ------------------------------------------------------------------------------------------


def test_shape_bias_on_a_hand_made_decision_table():
    #            shape texture decision  -> hit
    table = [
        ("cat", "elephant", "cat"),  # 1
        ("dog", "clock", "clock"),  # 0
        ("car", "bear", "car"),  # 1
        ("boat", "knife", "oven"),  # NaN: neither cue
        ("bird", "truck", "truck"),  # 0
        ("chair", "bottle", "chair"),  # 1
        ("oven", "keyboard", "bicycle"),  # NaN
    ]
    shape, texture, decision = (torch.tensor([C[row[k]] for row in table]) for k in range(3))
    hits = shape_hits(decision, shape, texture)
    np.testing.assert_array_equal(hits, [1, 0, 1, np.nan, 0, 1, np.nan])
    assert shape_bias(hits) == pytest.approx(3 / (3 + 2))


def test_shape_bias_nan_when_no_image_got_either_cue():
    assert math.isnan(shape_bias(np.array([np.nan, np.nan])))


def test_shape_hits_refuses_images_without_conflict():
    with pytest.raises(ValueError, match="equal shape and texture"):
        shape_hits(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([0, 3]))
    assert conflict_mask(torch.tensor([0, 2, 5]), torch.tensor([0, 3, 5])).tolist() == [False, True, False]


def test_imagenet16_table_is_the_toolbox_one_in_sorted_order():
    assert CATEGORIES == sorted(
        ["airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
         "elephant", "keyboard", "knife", "oven", "truck"]
    )
    flat = [i for c in CATEGORIES for i in IMAGENET16_INDICES[c]]
    assert len(flat) == len(set(flat)) and min(flat) >= 0 and max(flat) < 1000  # disjoint, in range
    assert IMAGENET16_INDICES["cat"] == [281, 282, 283, 284, 285, 286]
    assert len(IMAGENET16_INDICES["dog"]) == 109 and len(IMAGENET16_INDICES["bird"]) == 49


def test_mass_on_cat_indices_decides_cat():
    probs = torch.full((1, 1000), 0.1 / 994)
    probs[0, IMAGENET16_INDICES["cat"]] = 0.9 / 6
    scores = probabilities_to_16(probs)
    assert scores.shape == (1, 16)
    assert CATEGORIES[int(scores.argmax(1))] == "cat"
    assert float(scores[0, C["cat"]]) == pytest.approx(0.15)


def test_categories_are_scored_by_mean_not_sum():
    # 109 dog classes at 0.005 each (sum 0.545) against one airplane class at 0.05: the mean picks airplane.
    probs = torch.zeros(1, 1000)
    probs[0, IMAGENET16_INDICES["dog"]] = 0.005
    probs[0, IMAGENET16_INDICES["airplane"]] = 0.05
    probs[0, 0] = 1 - probs.sum()
    assert CATEGORIES[int(probabilities_to_16(probs).argmax(1))] == "airplane"


def test_decision_functions():
    logits = torch.log(torch.tensor([[0.1, 0.1, 0.5, 0.3], [0.4, 0.4, 0.05, 0.15]]))
    assert decision_function("identity")(logits).tolist() == [2, 0]
    # {a: [0, 1], b: [2], c: [3]} -> means (0.1, 0.5, 0.3) and (0.4, 0.05, 0.15)
    assert decision_function({"a": [0, 1], "b": [2], "c": [3]})(logits).tolist() == [1, 0]
    for bad in ("sixteen", {"a": []}, {"a": [0.5]}, {}):
        with pytest.raises(ValueError, match="mapping"):
            decision_function(bad)


# --- the probe on a fake bank ----------------------------------------------------------------------------------


class Lookup(nn.Module):
    """1000-way logits favouring a fixed ImageNet class per image (the image index sits in its first pixel)."""

    def __init__(self, classes: list[int], num_classes: int):
        super().__init__()
        self.register_buffer("table", 8.0 * torch.eye(num_classes)[torch.as_tensor(classes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * SCALE).round().long()]


def deciding(categories: list[str]) -> Classifier:
    """A 1000-class model whose 16-way decision on image i is ``categories[i]``."""
    classes = [IMAGENET16_INDICES[c][0] for c in categories]
    return Classifier(Lookup(classes, 1000), arch="lookup", mean=[0.0], std=[1.0], taps={}).eval()


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


SHAPES = ["cat", "dog", "car", "boat", "bird", "cat", "chair"]
TEXTURES = ["elephant", "clock", "bear", "knife", "truck", "cat", "bottle"]  # image 5 has no conflict
DECISIONS = {
    ("independent", 0): ["elephant", "clock", "bear", "knife", "truck", "cat", "chair"],  # 0 0 0 0 0 . 1
    ("independent", 1): ["cat", "oven", "bear", "boat", "truck", "dog", "bottle"],  # 1 NaN 0 1 0 . 0
    ("kl", 0): ["cat", "dog", "car", "boat", "bird", "elephant", "chair"],  # 1 1 1 1 1 . 1
    ("kl", 1): ["cat", "clock", "car", "oven", "bird", "cat", "bottle"],  # 1 0 1 NaN 1 . 0
    "teacher": ["cat", "dog", "car", "boat", "truck", "bird", "chair"],  # 1 1 1 1 0 . 1
}
EXPECTED = {
    "independent": [[0, 0, 0, 0, 0, 1], [1, np.nan, 0, 1, 0, 0]],
    "kl": [[1, 1, 1, 1, 1, 1], [1, 0, 1, np.nan, 1, 0]],
    "teacher": [[1, 1, 1, 1, 0, 1]],
}


def cue_conflict_split(shapes=SHAPES, textures=TEXTURES) -> Split:
    n = len(shapes)
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0, 0, 0] = torch.arange(n) / SCALE
    y = torch.tensor([C[s] for s in shapes])
    return Split("cue-conflict", x, y, num_classes=16, meta={"texture": torch.tensor([C[t] for t in textures])})


def fake_bank(split: Split | None = None) -> Bank:
    models = {k: deciding(v) for k, v in DECISIONS.items()}
    return Bank(models, [0, 1], ["independent", "kl"], ["teacher"], split or cue_conflict_split())


def test_probe_values_match_hand_table_and_drop_non_conflicts():
    m = shape_bias_probe(fake_bank(), {"batch_size": 4})
    assert set(m.values) == {"shape_hit"}
    assert m.extras["shape_bias_images"] == 6  # image 5 (cat on cat) dropped
    for arm, rows in EXPECTED.items():
        np.testing.assert_array_equal(m.values["shape_hit"][arm], rows)
    assert m.summary()["shape_hit"]["kl"] == pytest.approx(9 / 11)
    assert m.summary()["shape_hit"]["teacher"] == pytest.approx(5 / 6)


def test_probe_values_are_only_hits_misses_or_nan():
    m = shape_bias_probe(fake_bank(), {})
    for rows in m.values["shape_hit"].values():
        assert np.all(np.isnan(rows) | (rows == 0) | (rows == 1))
        assert rows.shape[1] == 6


def test_probe_with_a_declared_mapping():
    # A 4-class model; decisions "round" = classes {0, 1}, "square" = {2}, "star" = {3}.
    decided_class = {("a", 0): [0, 2, 3, 0, 1], ("a", 1): [2, 2, 2, 2, 2], "teacher": [1, 0, 3, 3, 3]}
    models = {
        k: Classifier(Lookup(v, 4), arch="lookup", mean=[0.0], std=[1.0], taps={}).eval()
        for k, v in decided_class.items()
    }
    x = torch.zeros(5, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(5) / SCALE
    texture = torch.tensor([1, 2, 0, 0, 0])
    split = Split("toy", x, torch.tensor([0, 1, 2, 0, 1]), num_classes=3, meta={"texture": texture})
    b = Bank(models, [0, 1], ["a"], ["teacher"], split)
    m = shape_bias_probe(b, {"mapping": {"round": [0, 1], "square": [2], "star": [3]}})
    # Image 3 (0 on 0) is dropped; kept images 0, 1, 2, 4 have (shape, texture) (0,1) (1,2) (2,0) (1,0).
    # Decisions: a/0 -> 0 1 2 0, a/1 -> 1 1 1 1, teacher -> 0 0 2 2.
    np.testing.assert_array_equal(m.values["shape_hit"]["a"], [[1, 1, 1, 0], [0, 1, np.nan, 1]])
    np.testing.assert_array_equal(m.values["shape_hit"]["teacher"], [[1, np.nan, 1, np.nan]])
    # identity: decisions are the classes themselves; a/0 -> 0 2 3 1, a/1 -> 2 2 2 2.
    ident = shape_bias_probe(b, {"mapping": "identity"})
    np.testing.assert_array_equal(ident.values["shape_hit"]["a"], [[1, 0, np.nan, 1], [np.nan, 0, 1, np.nan]])


def test_probe_errors():
    with pytest.raises(ValueError, match="shape_bias.*bogus"):
        shape_bias_probe(fake_bank(), {"bogus": 1})
    plain = Split("plain", torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), num_classes=16)
    with pytest.raises(ValueError, match="texture"):
        shape_bias_probe(fake_bank(plain), {})
    with pytest.raises(ValueError, match="outside"):  # labels 0..15 do not fit a 3-way mapping
        shape_bias_probe(fake_bank(), {"mapping": {"a": [0], "b": [1], "c": [2]}})
