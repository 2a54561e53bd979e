"""FitNets' Hint (the paper's Eq. 2): a regressor maps a student feature onto the teacher's feature at a tap.

Trained jointly with CE in one stage (as RepDistiller and mdistiller do), not FitNets' original two stages
(hint pre-training, then KD). The loss is the per-element mean squared error
``beta * (1/(B*D)) * sum ||f_t - r(f_s)||^2`` (``D`` = feature size), not Eq. 2's summed ``1/2 ||.||^2``:
the mean keeps ``beta`` comparable across layers and batch sizes (the Appendix A weights come from such code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.methods.common import (
    CEDistiller,
    PoolTo,
    check_range,
    infer_shapes,
    method_builder,
    model_device,
    sample_shape,
)
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS


def _pool(size_in: tuple[int, int], size_out: tuple[int, int]) -> nn.Module:
    return nn.Identity() if size_in == size_out else PoolTo(size_out)


def build_regressor(
    student_shape: Sequence[int], teacher_shape: Sequence[int], relu: bool = True
) -> tuple[nn.Module, nn.Module]:
    """``(regressor, teacher_pool)`` with ``regressor(f_s)`` and ``teacher_pool(f_t)`` of one shape.

    Vectors ``(D_s,) -> (D_t,)``: a Linear. Maps ``(C_s, H_s, W_s) -> (C_t, H_t, W_t)``: Conv1x1 + BN (+ ReLU), with
    a 3x3 stride-2 conv instead when the student map is larger; if the sizes still differ, the larger map of each
    side is average-pooled to the common (smaller) size.
    """
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0]), nn.Identity()
    if len(student_shape) != 3 or len(teacher_shape) != 3:
        raise ValueError(
            f"hint: student feature {tuple(student_shape)} and teacher feature {tuple(teacher_shape)} must both be "
            "vectors (D,) or maps (C, H, W)"
        )
    cs, hs, ws = student_shape
    ct, ht, wt = teacher_shape
    if hs > ht or ws > wt:
        conv = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1, bias=False)
        hs, ws = (hs + 1) // 2, (ws + 1) // 2
    else:
        conv = nn.Conv2d(cs, ct, kernel_size=1, bias=False)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(ct)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    common = (min(hs, ht), min(ws, wt))
    layers.append(_pool((hs, ws), common))
    return nn.Sequential(*layers), _pool((ht, wt), common)


class Hint(CEDistiller):
    """``L = gamma * CE(z_s, y) + beta * mean((pool(f_t) - r(f_s))^2)`` at student tap ``layer`` / teacher tap."""

    def __init__(
        self,
        student: Classifier,
        teacher: Classifier,
        regressor: nn.Module,
        teacher_pool: nn.Module,
        *,
        layer: str,
        teacher_layer: str,
        gamma: float,
        beta: float,
    ):
        super().__init__(student, teacher, gamma=gamma)
        self.regressor, self.teacher_pool = regressor, teacher_pool
        self.layer, self.teacher_layer, self.beta = layer, teacher_layer, beta

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _, ft = self.teacher_taps(x, [self.teacher_layer])
        zs, fs = self.student_taps(x, [self.layer])
        target = self.teacher_pool(ft[self.teacher_layer].float())
        pred = self.regressor(fs[self.layer])
        hint = F.mse_loss(pred.float(), target)
        return zs, {"ce": self.ce(zs, y), "hint": self.beta * hint}


@METHODS.register("hint")
@method_builder("hint", Hint)
def build_hint(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 5.0,
    layer: str = "hint",
    teacher_layer: str | None = None,
    relu: bool = True,
) -> Hint:
    """Defaults: Appendix A's ResNet50 -> ResNet18 (gamma = 1, beta = 5) at tap ``hint`` on both models.

    ``teacher_layer`` defaults to ``layer``; ``relu: false`` drops the regressor's final ReLU for teacher features
    that can be negative (ViT tokens, logits maps). Feature shapes come from one dummy forward at the split's size.
    """
    m = "hint"
    assert teacher is not None
    teacher_layer = teacher_layer or layer
    s_shape = infer_shapes(student, [layer], sample_shape(train_split))[layer]
    t_shape = infer_shapes(teacher, [teacher_layer], sample_shape(train_split))[teacher_layer]
    regressor, teacher_pool = build_regressor(s_shape, t_shape, relu=bool(relu))
    regressor.to(model_device(student))
    return Hint(
        student,
        teacher,
        regressor,
        teacher_pool,
        layer=layer,
        teacher_layer=teacher_layer,
        gamma=check_range(m, "gamma", gamma),
        beta=check_range(m, "beta", beta),
    )
