"""Hinton et al.'s KD (the paper's Eq. 1): match the teacher's temperature-softened class probabilities."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, check_range, method_builder
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS


def soft_target_kl(student_logits: Tensor, target_probs: Tensor, tau: float) -> Tensor:
    """``tau^2 * (1/B) sum_i KL(p_i || softmax(z_s,i / tau))`` for target distributions ``p`` (float32)."""
    log_q = F.log_softmax(student_logits.float() / tau, dim=1)
    return F.kl_div(log_q, target_probs.float(), reduction="batchmean") * tau**2


def kl_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """``tau^2 * (1/B) sum_i sum_j p_ij (log p_ij - log q_ij)``, ``p = softmax(z_t/tau)``, ``q = softmax(z_s/tau)``.

    This differs from Eq. 1's cross-entropy form only by the teacher's entropy, a constant for the student.
    """
    return soft_target_kl(student_logits, F.softmax(teacher_logits.float() / tau, dim=1), tau)


class KL(CEDistiller):
    """``L = gamma * CE(z_s, y) + alpha * tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau))``."""

    def __init__(self, student: Classifier, teacher: Classifier, *, gamma: float, alpha: float, tau: float):
        super().__init__(student, teacher, gamma=gamma)
        self.alpha, self.tau = alpha, tau

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        zt = self.teacher_forward(x)
        zs = self.student(x)
        return zs, {"ce": self.ce(zs, y), "kl": self.alpha * kl_loss(zs, zt, self.tau)}


@METHODS.register("kl")
@method_builder("kl", KL)
def build_kl(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 0.5,
    alpha: float = 0.5,
    tau: float = 4.0,
) -> KL:
    """Defaults: Appendix A's ResNet50 -> ResNet18 (gamma = alpha = 0.5, tau = 4)."""
    m = "kl"
    return KL(
        student,
        teacher,
        gamma=check_range(m, "gamma", gamma),
        alpha=check_range(m, "alpha", alpha),
        tau=check_range(m, "tau", tau, strict=True),
    )
