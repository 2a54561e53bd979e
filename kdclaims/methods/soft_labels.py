"""Crafted soft labels without a teacher (the paper's Appendix C.2 control).

The KL target is built from the label alone: ``p = softmax((onehot(y) + eps) / T)`` with a fresh
``eps ~ N(0, noise_var * I)`` per image and step (``noise_var = 0.2``, ``T = 0.15`` as in C.2). It replaces the
teacher's ``softmax(z_t / tau)`` in Eq. 1::

    L = gamma * CE(z_s, y) + alpha * tau^2 * (1/B) sum_i KL(p_i || softmax(z_s,i / tau))

With many classes this target is far from peaked: ``eps / T`` has std ~3, so (by simulation) the label is the
target's argmax for about 3 images in 4 on 10 classes but only about 1 in 6 on 1000 classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, DeviceGenerators, check_range, method_builder, seed_from_torch
from kdclaims.methods.kl import soft_target_kl
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS


class SoftLabels(CEDistiller):
    """KL toward noisy label-derived soft targets; no teacher (see the module docstring)."""

    needs_teacher = False

    def __init__(
        self,
        student: Classifier,
        *,
        gamma: float,
        alpha: float,
        tau: float,
        noise_var: float,
        temperature: float,
        seed: int,
    ):
        super().__init__(student, None, gamma=gamma)
        self.alpha, self.tau, self.noise_var, self.temperature, self.seed = alpha, tau, noise_var, temperature, seed
        self.generators = DeviceGenerators(seed)

    def get_extra_state(self) -> dict:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict) -> None:
        self.generators.load(state["generators"])

    def targets(self, y: Tensor, num_classes: int) -> Tensor:
        """``softmax((onehot(y) + eps) / T)``, (B, num_classes), fresh noise on every call."""
        gen = self.generators.get(y.device)
        eps = torch.randn(len(y), num_classes, generator=gen, device=y.device) * math.sqrt(self.noise_var)
        return F.softmax((F.one_hot(y, num_classes).float() + eps) / self.temperature, dim=1)

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        zs = self.student(x)
        p = self.targets(y, zs.shape[1])
        return zs, {"ce": self.ce(zs, y), "kl": self.alpha * soft_target_kl(zs, p, self.tau)}


@METHODS.register("soft_labels")
@method_builder("soft_labels", SoftLabels)
def build_soft_labels(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 0.5,
    alpha: float = 0.5,
    tau: float = 4.0,
    noise_var: float = 0.2,
    temperature: float = 0.15,
    seed: int | None = None,
) -> SoftLabels:
    """Defaults: C.2's noise variance 0.2 and temperature 0.15 with the KL weights of ResNet50 -> ResNet18 (Appendix A).

    ``teacher`` is ignored (may be None). ``seed`` defaults to a draw from torch's global RNG.
    """
    m = "soft_labels"
    return SoftLabels(
        student,
        gamma=check_range(m, "gamma", gamma),
        alpha=check_range(m, "alpha", alpha),
        tau=check_range(m, "tau", tau, strict=True),
        noise_var=check_range(m, "noise_var", noise_var),
        temperature=check_range(m, "temperature", temperature, strict=True),
        seed=seed_from_torch(seed),
    )
