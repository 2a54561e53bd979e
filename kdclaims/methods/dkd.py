"""Decoupled KD (Zhao et al. 2022): KL split into a target-class part (TCKD) and a non-target part (NCKD).

With ``p = softmax(z / tau)``, ``b = (p_y, 1 - p_y)`` the binary target/non-target split and ``p_hat`` the softmax of
``z / tau`` over the non-target classes only::

    TCKD = tau^2 * (1/B) sum_i KL(b_t,i || b_s,i)
    NCKD = tau^2 * (1/B) sum_i KL(p_hat_t,i || p_hat_s,i)
    L = gamma * CE + w * (alpha * TCKD + beta * NCKD),   w = min(epochs_seen / warmup, 1)

``epochs_seen`` counts training samples seen so far (this batch included) divided by ``n_data``; it ramps linearly
where the authors' code steps once per epoch, and the two agree at epoch boundaries. ``warmup = 0`` disables it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, all_reduce_mean, check_range, method_builder, model_device, rank_world
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS

_MASK = 1000.0  # subtracted from the target logit (after /tau) to drop it from the non-target softmax


def _binary_log_probs(z: Tensor, gt: Tensor) -> Tensor:
    """``log (p_y, 1 - p_y)`` computed in log space (stable when one side is tiny): (B, 2)."""
    log_all = torch.logsumexp(z, dim=1)
    log_target = (z * gt).sum(1) - log_all
    log_other = torch.logsumexp(z.masked_fill(gt.bool(), float("-inf")), dim=1) - log_all
    return torch.stack([log_target, log_other], dim=1)


def dkd_losses(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)`` as defined in the module docstring (float32)."""
    zs, zt = student_logits.float() / tau, teacher_logits.float() / tau
    gt = F.one_hot(y, zs.shape[1]).to(zs.dtype)
    tckd = F.kl_div(_binary_log_probs(zs, gt), _binary_log_probs(zt, gt), reduction="batchmean", log_target=True)
    log_ps_hat = F.log_softmax(zs - _MASK * gt, dim=1)
    pt_hat = F.softmax(zt - _MASK * gt, dim=1)
    nckd = F.kl_div(log_ps_hat, pt_hat, reduction="batchmean")
    return tckd * tau**2, nckd * tau**2


class DKD(CEDistiller):
    """``L = gamma * CE + w * (alpha * TCKD + beta * NCKD)`` (see the module docstring)."""

    def __init__(
        self,
        student: Classifier,
        teacher: Classifier,
        *,
        n_data: int,
        gamma: float,
        alpha: float,
        beta: float,
        tau: float,
        warmup: float,
    ):
        super().__init__(student, teacher, gamma=gamma)
        self.n_data, self.alpha, self.beta, self.tau, self.warmup = n_data, alpha, beta, tau, warmup
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long, device=model_device(student)))

    def warmup_weight(self) -> Tensor:
        """``min(samples_seen / (warmup * n_data), 1)`` (1 when ``warmup == 0``)."""
        if self.warmup == 0:
            return torch.ones((), device=self.samples_seen.device)
        return (self.samples_seen.double() / (self.warmup * self.n_data)).clamp(max=1.0).float()

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        zt = self.teacher_forward(x)
        zs = self.student(x)
        if self.training:  # count the whole step's samples, all ranks together
            _, world = rank_world()
            count = torch.tensor(float(len(y)), device=zs.device)
            self.samples_seen += (all_reduce_mean(count) * world).round().long().to(self.samples_seen.device)
        tckd, nckd = dkd_losses(zs, zt, y, self.tau)
        w = self.warmup_weight().to(zs.device)
        return zs, {"ce": self.ce(zs, y), "tckd": w * self.alpha * tckd, "nckd": w * self.beta * nckd}


@METHODS.register("dkd")
@method_builder("dkd", DKD)
def build_dkd(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    tau: float = 4.0,
    warmup: float = 20.0,
) -> DKD:
    """Defaults: the DKD authors' CIFAR-100 setting (alpha = 1, beta = 8, tau = 4, 20 warm-up epochs); their ImageNet
    setting is alpha = 0.5, beta = 0.5, tau = 1, warmup = 1.
    """
    m = "dkd"
    assert teacher is not None
    return DKD(
        student,
        teacher,
        n_data=len(train_split),
        gamma=check_range(m, "gamma", gamma),
        alpha=check_range(m, "alpha", alpha),
        beta=check_range(m, "beta", beta),
        tau=check_range(m, "tau", tau, strict=True),
        warmup=check_range(m, "warmup", warmup),
    )
