"""What a probe receives (a ``ModelBank``) and returns (``Measurements``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier


class ModelBank(Protocol):
    """The trained models of one claim item, built (or loaded from the checkpoint store) on first use.

    - ``seeds``: the student seeds, e.g. ``[0, 1]``.
    - ``arms``: the student arms in YAML order, e.g. ``["independent", "kl", "hint", "crd"]``; an arm is a
      method with its parameters (and possibly its own teacher), named in the YAML.
    - ``teachers``: names of the teacher-like models of the setup (``"teacher"`` always; others such as
      ``"tstar"`` or a foreign attack ``"source"``).
    - ``model(name, seed)``: an arm's student for ``seed`` or, for a teacher name, the teacher (seed ignored);
      in eval mode, on ``device``.
    - ``eval_split(data=None)``: the probe's evaluation images (the claim's ``probe.data`` or the students'
      test split), already subsampled to ``probe.images``.
    - ``arm_method(arm)``: the method name behind an arm (``"kl"`` for ``"kl_high"``).
    """

    seeds: list[int]
    arms: list[str]
    teachers: list[str]
    device: torch.device

    def model(self, name: str, seed: int | None = None) -> Classifier: ...

    def eval_split(self, data: Any = None) -> Split: ...

    def arm_method(self, arm: str) -> str: ...


@dataclass
class Measurements:
    """Raw per-unit values for the statistics.

    ``values[metric][arm]`` is a float array of shape ``(n_seeds, n_units)`` (units are images, or minibatches
    for CKA); all arms of one metric share the unit axis (the same images in the same order), so paired
    differences line up. NaN marks a unit with no value for that arm (e.g. shape bias on an image that got
    neither the shape nor the texture class). Arms that do not vary with the seed (a teacher) have one row.
    Sub-metrics use ``metric/qualifier`` names, e.g. ``accuracy/mnist_color``, ``agreement/0.4``.
    ``extras`` holds what figures need beyond that (CKA matrices, sweep axes), JSON-serialisable.
    """

    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, arm: str, rows: np.ndarray | list) -> None:
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{metric}/{arm}: expected (n_seeds, n_units), got shape {arr.shape}")
        existing = self.values.setdefault(metric, {})
        for other, a in existing.items():
            if a.shape[1] != arr.shape[1]:
                raise ValueError(f"{metric}: arm {arm} has {arr.shape[1]} units but {other} has {a.shape[1]}")
        existing[arm] = arr

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean of each metric and arm (NaN-aware), for the report."""
        return {m: {a: float(np.nanmean(v)) for a, v in arms.items()} for m, arms in self.values.items()}
