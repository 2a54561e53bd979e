"""The accuracy probe: per-image correctness on a bank of lookup models whose predictions are fixed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.probes.accuracy import accuracy, correct

SCALE = 1000.0  # pixel (0, 0, 0) of image i holds i / SCALE


class Lookup(nn.Module):
    """Logits read from a table by the image's index (encoded in its first pixel)."""

    def __init__(self, preds: list[int], num_classes: int):
        super().__init__()
        self.register_buffer("table", 5.0 * torch.eye(num_classes)[torch.as_tensor(preds)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * SCALE).round().long()]


def lookup_model(preds: list[int], num_classes: int = 3) -> Classifier:
    return Classifier(Lookup(preds, num_classes), arch="lookup", mean=[0.0], std=[1.0], taps={}).eval()


def indexed_split(name: str, y: list[int], groups: list[int] | None = None, group_names=()) -> Split:
    n = len(y)
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(n) / SCALE
    g = None if groups is None else torch.as_tensor(groups)
    return Split(name, x, torch.as_tensor(y), num_classes=3, groups=g, group_names=list(group_names))


class Bank:
    """A minimal ModelBank: fixed models and named splits."""

    def __init__(self, models: dict, seeds: list[int], arms: list[str], teachers: list[str], splits: dict):
        self._models, self.seeds, self.arms, self.teachers, self._splits = models, seeds, arms, teachers, splits
        self.device = torch.device("cpu")
        self.asked: list = []

    def model(self, name: str, seed: int | None = None) -> Classifier:
        return self._models[name] if name in self.teachers else self._models[(name, seed)]

    def eval_split(self, data=None) -> Split:
        self.asked.append(data)
        return self._splits[data]

    def arm_method(self, arm: str) -> str:
        return arm


Y = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
GROUPS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
NAMES = ["orig", "color", "mnistm"]
PREDS = {
    ("independent", 0): [0, 1, 2, 1, 1, 0, 2, 2, 0, 1],  # right on 0,1,2,4
    ("independent", 1): [0, 1, 0, 0, 2, 2, 0, 0, 0, 0],  # right on 0,1,3,5,6,9
    ("kl", 0): [0, 1, 2, 0, 1, 2, 0, 1, 2, 0],  # all right
    ("kl", 1): [1, 2, 0, 1, 2, 0, 1, 2, 0, 1],  # all wrong
    "teacher": [0, 1, 2, 0, 1, 2, 1, 2, 0, 1],  # wrong on the third group
}


def bank(splits: dict | None = None) -> Bank:
    models = {k: lookup_model(v) for k, v in PREDS.items()}
    splits = splits or {None: indexed_split("test", Y, GROUPS, NAMES)}
    return Bank(models, [0, 1], ["independent", "kl"], ["teacher"], splits)


def hits(preds: list[int]) -> np.ndarray:
    return (np.asarray(preds) == np.asarray(Y)).astype(float)


def test_correct_is_top1_match():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0]])
    assert correct(logits, torch.tensor([1, 1, 1])).tolist() == [1.0, 0.0, 1.0]


def test_rows_per_seed_for_students_and_one_row_per_teacher():
    m = accuracy(bank(), {})
    assert set(m.values) == {"accuracy"}
    acc = m.values["accuracy"]
    assert set(acc) == {"independent", "kl", "teacher"}
    np.testing.assert_array_equal(acc["independent"], np.stack([hits(PREDS[("independent", s)]) for s in (0, 1)]))
    np.testing.assert_array_equal(acc["kl"], np.stack([np.ones(10), np.zeros(10)]))
    np.testing.assert_array_equal(acc["teacher"], hits(PREDS["teacher"])[None, :])
    assert m.summary()["accuracy"]["independent"] == pytest.approx((4 + 6) / 20)
    assert m.summary()["accuracy"]["teacher"] == pytest.approx(6 / 10)


def test_per_group_gives_each_group_its_own_images():
    m = accuracy(bank(), {"per": "group"})
    assert set(m.values) == {"accuracy", "accuracy/orig", "accuracy/color", "accuracy/mnistm"}
    teacher = {g: m.values[f"accuracy/{g}"]["teacher"] for g in NAMES}
    np.testing.assert_array_equal(teacher["orig"], [[1, 1, 1]])
    np.testing.assert_array_equal(teacher["color"], [[1, 1, 1]])
    np.testing.assert_array_equal(teacher["mnistm"], [[0, 0, 0, 0]])
    ind = m.values["accuracy/color"]["independent"]
    np.testing.assert_array_equal(ind, [[0, 1, 0], [1, 0, 1]])  # images 3, 4, 5 for seeds 0, 1


def test_domains_pick_groups_or_other_datasets():
    other = indexed_split("extra", [2, 2, 1])
    b = bank({None: indexed_split("test", Y, GROUPS, NAMES), "extra": other})
    m = accuracy(b, {"domains": ["mnistm", "extra"]})
    assert set(m.values) == {"accuracy", "accuracy/mnistm", "accuracy/extra"}
    assert m.values["accuracy/mnistm"]["kl"].shape == (2, 4)
    # The lookup models read images 0..2 of the extra split: teacher predicts 0, 1, 2 against labels 2, 2, 1.
    np.testing.assert_array_equal(m.values["accuracy/extra"]["teacher"], [[0, 0, 0]])
    np.testing.assert_array_equal(m.values["accuracy/extra"]["kl"], [[0, 0, 0], [0, 1, 0]])
    assert "extra" in b.asked
    assert m.extras["n_images"] == {"accuracy": 10, "accuracy/mnistm": 4, "accuracy/extra": 3}


def test_other_split_through_data_param():
    b = bank({None: indexed_split("test", Y), "fairface": indexed_split("ff", [0, 1, 1])})
    m = accuracy(b, {"data": "fairface"})
    assert b.asked == ["fairface"]
    np.testing.assert_array_equal(m.values["accuracy"]["kl"], [[1, 1, 0], [0, 0, 0]])


def test_batch_size_does_not_change_values():
    a = accuracy(bank(), {"batch_size": 3})
    b = accuracy(bank(), {"batch_size": 256})
    for arm in a.values["accuracy"]:
        np.testing.assert_array_equal(a.values["accuracy"][arm], b.values["accuracy"][arm])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bogus": 1}, "accuracy.*bogus"),
        ({"per": "race"}, "per must be"),
        ({"domains": "orig"}, "domains must be"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_params_raise(params, match):
    with pytest.raises(ValueError, match=match):
        accuracy(bank(), params)


def test_per_group_without_groups_raises():
    with pytest.raises(ValueError, match="no groups"):
        accuracy(bank({None: indexed_split("test", Y)}), {"per": "group"})
