"""Relational KD (Park et al. 2019): match distances and angles among the samples of a batch.

On embeddings ``t_i`` (penultimate features, flattened), with ``h`` the Huber loss (smooth L1, delta = 1)::

    psi_D(i, j) = ||t_i - t_j||_2 / mu,   mu = mean_{i != j} ||t_i - t_j||_2
    psi_A(a, b, c) = <e_ab, e_ac>,       e_ab = (t_b - t_a) / ||t_b - t_a||_2   (e_aa = 0)
    L_D = mean_{i, j} h(psi_D^s(i, j) - psi_D^t(i, j))          (over all B^2 pairs; the diagonal is 0)
    L_A = mean_{a, b, c} h(psi_A^s(a, b, c) - psi_A^t(a, b, c))  (over all B^3 triples)
    L = gamma * CE + beta * (w_d * L_D + w_a * L_A)

The means over all pairs and triples (degenerate ones included) follow the authors' code, which the defaults
``w_d = 25``, ``w_a = 50`` go with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, check_range, check_taps, flat, method_builder
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS

_EPS = 1e-12


def pairwise_distances(e: Tensor) -> Tensor:
    """``D_ij = ||e_i - e_j||_2`` from the Gram matrix, with an exact 0 diagonal and a finite gradient there."""
    sq = e.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min(_EPS)
    return d2.sqrt() * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance_loss(s: Tensor, t: Tensor) -> Tensor:
    """``L_D`` above: Huber between mean-normalised pairwise distances of student and teacher."""
    def psi(e: Tensor) -> Tensor:
        d = pairwise_distances(e)
        off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        return d / d[off].mean()

    return F.smooth_l1_loss(psi(flat(s)), psi(flat(t)))


def rkd_angle_loss(s: Tensor, t: Tensor) -> Tensor:
    """``L_A`` above: Huber between the cosines of all angles ``(b, a, c)`` with vertex ``a``."""
    def psi(e: Tensor) -> Tensor:
        u = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # u[a, b] = unit(t_b - t_a)
        return torch.bmm(u, u.transpose(1, 2))  # [a, b, c] = <u_ab, u_ac>

    return F.smooth_l1_loss(psi(flat(s)), psi(flat(t)))


class RKD(CEDistiller):
    """``L = gamma * CE + beta * (w_d * L_D + w_a * L_A)`` (see the module docstring)."""

    def __init__(
        self,
        student: Classifier,
        teacher: Classifier,
        *,
        layer: str,
        teacher_layer: str,
        gamma: float,
        beta: float,
        distance_weight: float,
        angle_weight: float,
    ):
        super().__init__(student, teacher, gamma=gamma)
        self.layer, self.teacher_layer = layer, teacher_layer
        self.beta, self.distance_weight, self.angle_weight = beta, distance_weight, angle_weight

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _, ft = self.teacher_taps(x, [self.teacher_layer])
        zs, fs = self.student_taps(x, [self.layer])
        s, t = fs[self.layer], ft[self.teacher_layer]
        losses = {"ce": self.ce(zs, y)}
        if self.distance_weight:
            losses["rkd_distance"] = self.beta * self.distance_weight * rkd_distance_loss(s, t)
        if self.angle_weight:
            losses["rkd_angle"] = self.beta * self.angle_weight * rkd_angle_loss(s, t)
        return zs, losses


@METHODS.register("rkd")
@method_builder("rkd", RKD)
def build_rkd(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 1.0,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    layer: str = "penultimate",
    teacher_layer: str | None = None,
) -> RKD:
    """Defaults: the RKD paper's weights 25 (distance) and 50 (angle) on the penultimate features."""
    m = "rkd"
    assert teacher is not None
    check_taps(m, student, [layer], "student")
    check_taps(m, teacher, [teacher_layer or layer], "teacher")
    return RKD(
        student,
        teacher,
        layer=layer,
        teacher_layer=teacher_layer or layer,
        gamma=check_range(m, "gamma", gamma),
        beta=check_range(m, "beta", beta),
        distance_weight=check_range(m, "distance_weight", distance_weight),
        angle_weight=check_range(m, "angle_weight", angle_weight),
    )
