"""The teacher's outputs cached once over an un-augmented training split: same losses, far fewer teacher runs."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from kdclaims.data import build_dataset
from kdclaims.models import create_model
from kdclaims.recipe import Recipe
from kdclaims.registries import METHODS
from kdclaims.seeding import seeded
from kdclaims.train import train

N, BATCH = 96, 16
METHOD_PARAMS = {"kl": {"gamma": 0.5, "alpha": 0.5, "tau": 4.0}, "hint": {"gamma": 1.0, "beta": 2.0},
                 "crd": {"gamma": 1.0, "beta": 0.1, "nce_t": 0.1, "N": 16}}


def _split():
    return build_dataset("synthetic", "train", root=None, seed=0, n=N, size=8, num_classes=4)


@functools.lru_cache(maxsize=1)
def _trained_teacher() -> dict[str, torch.Tensor]:
    """A teacher trained a little, so that its logits are confident and vary between images."""
    split = _split()
    with seeded(1):
        teacher = create_model("tiny_cnn_wide", 4, in_chans=split.channels, mean=split.mean, std=split.std)
    teaching = Recipe(epochs=3, batch_size=BATCH, optimizer="adam", lr=0.02, weight_decay=0.0)
    return train(METHODS.get("independent")(teacher, None, split), split, teaching, seed=9).state_dict


def _run(method: str, cache: bool, augment: tuple = ()):
    """Train two epochs; returns (history, student weights, number of teacher forward passes)."""
    split = _split()
    teacher = create_model("tiny_cnn_wide", 4, in_chans=split.channels, mean=split.mean, std=split.std)
    teacher.load_state_dict(_trained_teacher())
    with seeded(2):
        student = create_model("tiny_cnn", 4, in_chans=split.channels, mean=split.mean, std=split.std)
        distiller = METHODS.get(method)(student, teacher, split, **METHOD_PARAMS[method])
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    recipe = Recipe(epochs=2, batch_size=BATCH, optimizer="adam", lr=0.01, weight_decay=0.0, augment=augment)
    result = train(distiller, split, recipe, seed=5, teacher_cache=cache)
    return result.history, result.state_dict, len(calls)


@pytest.mark.parametrize("method", ["kl", "hint", "crd"])
def test_cached_teacher_gives_the_losses_of_the_live_teacher_and_runs_it_once(method):
    """Two epochs with and without the cache: every epoch's mean losses agree (KL to float32 rounding, Hint and
    CRD to the float16 rounding of cached features) and the teacher ran once over the split (one pass of 256-image
    batches) instead of at each of the 12 steps. Fails without the cache (checked: with ``_TrainStep`` ignoring
    ``rows`` the teacher ran 12 times) and with a wrong lookup (checked: ``logits_at`` reading ``index + 1``
    changed the first-epoch KL loss by 1.2 %, and ``taps_at`` reading ``index + 1`` the Hint loss by 19 %)."""
    live, w_live, live_calls = _run(method, cache=False)
    cached, w_cached, cached_calls = _run(method, cache=True)
    assert live_calls == 2 * N // BATCH and cached_calls == math.ceil(N / 256)
    rel = 1e-5 if method == "kl" else 2e-3
    for a, b in zip(live, cached):
        for name in a["losses"]:
            assert math.isclose(a["losses"][name], b["losses"][name], rel_tol=rel, abs_tol=1e-7), (name, a, b)
    if method == "kl":
        assert all(torch.allclose(w_live[k], w_cached[k], atol=1e-5) for k in w_live)


def test_an_augmented_student_falls_back_to_the_live_teacher():
    """With augmentation the student's inputs are not the split's images, so the teacher must see them: it runs
    at every step. Fails if the cache ignores augmentation (checked: 1 teacher pass)."""
    _, _, calls = _run("kl", cache=True, augment=({"name": "hflip"},))
    assert calls == 2 * N // BATCH
