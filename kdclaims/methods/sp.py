"""Similarity-preserving KD (Tung & Mori 2019): match the batch's normalised similarity (Gram) matrices.

With ``Q`` the (B, D) flattened features at a tap and ``row_l2`` the per-row L2 normalisation::

    G = row_l2(Q Q^T)
    L_SP = sum_l (1/B^2) ||G_t^l - G_s^l||_F^2
    L = gamma * CE + beta * L_SP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, check_range, check_taps, flat, method_builder
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS


def similarity(f: Tensor) -> Tensor:
    """``row_l2(Q Q^T)`` for ``Q`` the flattened features (float32)."""
    q = flat(f)
    return F.normalize(q @ q.T, dim=1)


def sp_loss(fs: Tensor, ft: Tensor) -> Tensor:
    """``(1/B^2) ||G_t - G_s||_F^2``."""
    return (similarity(ft) - similarity(fs)).pow(2).sum() / fs.shape[0] ** 2


class SP(CEDistiller):
    """``L = gamma * CE + beta * sum_l L_SP^l`` (see the module docstring)."""

    def __init__(self, student: Classifier, teacher: Classifier, *, layers: list[str], gamma: float, beta: float):
        super().__init__(student, teacher, gamma=gamma)
        self.layers, self.beta = layers, beta

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _, ft = self.teacher_taps(x, self.layers)
        zs, fs = self.student_taps(x, self.layers)
        sp = sum(sp_loss(fs[n], ft[n]) for n in self.layers)
        return zs, {"ce": self.ce(zs, y), "sp": self.beta * sp}


@METHODS.register("sp")
@method_builder("sp", SP)
def build_sp(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 3000.0,
    layers: Sequence[str] = ("penultimate",),
) -> SP:
    """Defaults: beta = 3000 (the SP paper's weight, also RepDistiller's) at the penultimate tap."""
    m = "sp"
    assert teacher is not None
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("method 'sp': layers is empty")
    check_taps(m, student, names, "student")
    check_taps(m, teacher, names, "teacher")
    return SP(student, teacher, layers=names, gamma=check_range(m, "gamma", gamma), beta=check_range(m, "beta", beta))
