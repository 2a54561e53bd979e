"""Probabilistic knowledge transfer (Passalis & Tefas 2018): match conditional distributions of cosine kernels.

On features ``f_i`` (penultimate, flattened), normalised ``u_i = f_i / (||f_i|| + eps)``::

    K_ij = (1 + u_i . u_j) / 2,   P_ij = K_ij / sum_k K_ik     (for student and teacher)
    L_PKT = (1/B^2) sum_{i, j} P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))
    L = gamma * CE + beta * L_PKT

The mean over all ``B^2`` entries (rather than a sum over rows) follows RepDistiller, whose beta = 30000 goes with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, check_range, check_taps, flat, method_builder
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS

_EPS = 1e-7


def cosine_conditional(f: Tensor) -> Tensor:
    """``P_ij = K_ij / sum_k K_ik`` with ``K_ij = (1 + cos(f_i, f_j)) / 2``."""
    u = flat(f)
    u = u / (u.norm(dim=1, keepdim=True) + _EPS)
    k = (u @ u.T + 1) / 2
    return k / k.sum(1, keepdim=True)


def pkt_loss(s: Tensor, t: Tensor) -> Tensor:
    """``L_PKT`` above."""
    ps, pt = cosine_conditional(s), cosine_conditional(t)
    return torch.mean(pt * torch.log((pt + _EPS) / (ps + _EPS)))


class PKT(CEDistiller):
    """``L = gamma * CE + beta * L_PKT`` (see the module docstring)."""

    def __init__(self, student: Classifier, teacher: Classifier, *, layer: str, teacher_layer: str, gamma: float,
                 beta: float):
        super().__init__(student, teacher, gamma=gamma)
        self.layer, self.teacher_layer, self.beta = layer, teacher_layer, beta

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _, ft = self.teacher_taps(x, [self.teacher_layer])
        zs, fs = self.student_taps(x, [self.layer])
        return zs, {"ce": self.ce(zs, y), "pkt": self.beta * pkt_loss(fs[self.layer], ft[self.teacher_layer])}


@METHODS.register("pkt")
@method_builder("pkt", PKT)
def build_pkt(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 30000.0,
    layer: str = "penultimate",
    teacher_layer: str | None = None,
) -> PKT:
    """Defaults: RepDistiller's beta = 30000 on the penultimate features."""
    m = "pkt"
    assert teacher is not None
    check_taps(m, student, [layer], "student")
    check_taps(m, teacher, [teacher_layer or layer], "teacher")
    return PKT(
        student,
        teacher,
        layer=layer,
        teacher_layer=teacher_layer or layer,
        gamma=check_range(m, "gamma", gamma),
        beta=check_range(m, "beta", beta),
    )
