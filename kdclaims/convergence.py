"""Convergence rules: when a training history shows that a model has stopped improving.

A recipe may declare ``convergence: {rule: plateau | early_stop, patience: P, min_delta: D, monitor: M}``.
With ``h_e`` the monitored value after epoch ``e`` (1-based, ``E`` epochs so far), signed so that larger is better
(``val_acc``, ``train_acc``: as is; ``train_loss``: negated), the plateau is reached when

    E > P  and  max(h_{E-P+1}, ..., h_E) < max(h_1, ..., h_{E-P}) + D

i.e. the last ``P`` epochs improved on the best before them by less than ``D``. ``plateau`` judges the finished
history (a model that never plateaued is ``converged: false``); ``early_stop`` also stops training at the first
epoch where the plateau is reached (the model is that epoch's weights), and a run that used up its epochs first is
``converged: false``. A model trained for ``P`` epochs or fewer cannot have converged under either rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MONITORS = {"val_acc": ("val_acc", 1.0), "train_acc": ("train_acc", 1.0), "train_loss": ("loss", -1.0)}


class Convergence(BaseModel):
    """A tier's convergence rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["plateau", "early_stop"] = "plateau"
    patience: int = Field(2, ge=1, le=1000)
    min_delta: float = Field(0.005, ge=0, allow_inf_nan=False)
    monitor: Literal["val_acc", "train_acc", "train_loss"] = "val_acc"

    @property
    def stops_training(self) -> bool:
        return self.rule == "early_stop"


def monitored(history: Sequence[dict[str, Any]], monitor: str) -> list[float]:
    """The monitored value of each epoch, signed so that larger is better."""
    field, sign = MONITORS[monitor]
    values = []
    for record in history:
        if record.get(field) is None:
            raise ValueError(f"convergence monitors '{monitor}' but epoch {record.get('epoch')} has no '{field}'"
                             + ("; give the recipe a validation share (recipe.validation)" if monitor == "val_acc" else ""))
        values.append(sign * float(record[field]))
    return values


def plateau_reached(history: Sequence[dict[str, Any]], rule: Convergence) -> bool:
    """``E > P and max(last P) < max(earlier) + D`` over the monitored values (module docstring)."""
    h = monitored(history, rule.monitor)
    p = rule.patience
    if len(h) <= p:
        return False
    return max(h[-p:]) < max(h[:-p]) + rule.min_delta


def converged(history: Sequence[dict[str, Any]] | None, rule: Convergence | None) -> bool | None:
    """True/False under ``rule``; None when there is no rule (weights loaded from a file have none). A model
    without a recorded history cannot show that it converged: False."""
    if rule is None:
        return None
    return bool(history) and plateau_reached(history, rule)


__all__ = ("Convergence", "plateau_reached", "converged", "monitored")
