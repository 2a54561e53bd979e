"""Convergence rules on training histories, and early stopping in the trainer."""

from __future__ import annotations

import pydantic
import pytest

from kdclaims.convergence import Convergence, converged, plateau_reached
from kdclaims.recipe import Recipe


def hist(values, field="val_acc"):
    return [{"epoch": i + 1, field: v} for i, v in enumerate(values)]


def test_plateau_needs_more_epochs_than_the_patience_and_no_late_gain():
    """``E > P and max(last P) < max(earlier) + D``. Fails if the length guard or the margin is dropped
    (checked: with the ``len(h) <= p`` guard removed, the
    one-epoch history raised instead of giving False)."""
    rule = Convergence(rule="plateau", patience=2, min_delta=0.01)
    assert not plateau_reached(hist([0.5]), rule)
    assert not plateau_reached(hist([0.5, 0.5]), rule)
    assert plateau_reached(hist([0.5, 0.6, 0.605, 0.6]), rule)
    assert not plateau_reached(hist([0.5, 0.6, 0.605, 0.62]), rule)
    loss = Convergence(patience=1, min_delta=0.0, monitor="train_loss")
    assert plateau_reached(hist([1.0, 0.5, 0.6], "loss"), loss)
    assert not plateau_reached(hist([1.0, 0.5, 0.4], "loss"), loss)


def test_converged_is_none_without_a_rule_and_false_without_a_history():
    rule = Convergence()
    assert converged(hist([0.5, 0.5, 0.5]), None) is None
    assert converged(None, rule) is False and converged(hist([0.5, 0.5, 0.5]), rule) is True


def test_a_rule_on_validation_accuracy_needs_a_validation_share():
    with pytest.raises(pydantic.ValidationError, match="validation share"):
        Recipe(convergence={"rule": "plateau"})
    assert Recipe(convergence={"monitor": "train_loss"}).convergence.monitor == "train_loss"


def test_a_plateau_rule_stays_out_of_the_store_key_but_early_stopping_enters_it():
    base = Recipe(validation=0.1)
    assert Recipe(validation=0.1, convergence={"patience": 3}).key() == base.key()
    assert Recipe(validation=0.1, convergence={"rule": "early_stop"}).key() != base.key()
    assert Recipe(validation=0.2).key() != base.key()


def test_early_stopping_ends_training_at_the_plateau():
    """Monitor the training loss with an unreachable margin: the plateau is reached after patience + 1 epochs, so
    a 6-epoch recipe trains 2. Fails without the trainer's early-stop check (checked: 6 epochs were trained)."""
    from tests.test_train import CE, base_recipe, make_model, make_split

    from kdclaims.train import train

    rule = {"rule": "early_stop", "patience": 1, "min_delta": 10.0, "monitor": "train_loss"}
    result = train(CE(make_model()), make_split(), base_recipe(epochs=6, convergence=rule), seed=0)
    assert [h["epoch"] for h in result.history] == [1, 2]
    plain = train(CE(make_model()), make_split(), base_recipe(epochs=3, convergence={**rule, "rule": "plateau"}), seed=0)
    assert len(plain.history) == 3
