"""Attention transfer (Zagoruyko & Komodakis 2017): match normalised spatial attention maps at several taps.

For a feature map ``F`` (C, H, W) the attention map is ``a(F) = q / ||q||_2`` with ``q = vec(mean_c |F_c|^p)`` (HW,),
``p = 2``. With taps ``l`` and ``a`` of the larger map average-pooled to the smaller spatial size::

    L_AT = sum_l (1/(B*HW_l)) sum_i ||a(F_s,i^l) - a(F_t,i^l)||_2^2
    L = gamma * CE(z_s, y) + beta * L_AT
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import (
    CEDistiller,
    check_range,
    default_taps,
    infer_shapes,
    method_builder,
    pool_to,
    sample_shape,
)
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS

DEFAULT_TAPS = ("F2", "F3", "F4", "F5")


def attention_map(f: Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """``vec(mean_c |F_c|^p)`` pooled to ``size`` (if given), L2-normalised per sample: (B, H*W) in float32."""
    q = f.float().abs().pow(p).mean(1, keepdim=True)
    if size is not None:
        q = pool_to(q, size)
    return F.normalize(q.flatten(1), dim=1)


def at_loss(fs: Tensor, ft: Tensor, p: float = 2.0) -> Tensor:
    """``(1/(B*HW)) sum_i ||a(f_s,i) - a(f_t,i)||^2`` at the smaller of the two spatial sizes."""
    size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
    return (attention_map(fs, p, size) - attention_map(ft, p, size)).pow(2).mean()


class AT(CEDistiller):
    """``L = gamma * CE + beta * sum_l L_AT^l`` (see the module docstring)."""

    def __init__(
        self, student: Classifier, teacher: Classifier, *, layers: list[str], p: float, gamma: float, beta: float
    ):
        super().__init__(student, teacher, gamma=gamma)
        self.layers, self.p, self.beta = layers, p, beta

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _, ft = self.teacher_taps(x, self.layers)
        zs, fs = self.student_taps(x, self.layers)
        at = sum(at_loss(fs[n], ft[n], self.p) for n in self.layers)
        return zs, {"ce": self.ce(zs, y), "at": self.beta * at}


@METHODS.register("at")
@method_builder("at", AT)
def build_at(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 1000.0,
    p: float = 2.0,
    layers: Sequence[str] | None = None,
) -> AT:
    """Defaults: beta = 1000 and p = 2 (the AT paper, RepDistiller); the taps among F2..F5 that are spatial maps
    in both models."""
    m = "at"
    assert teacher is not None
    if isinstance(layers, str):
        layers = [layers]
    shape = sample_shape(train_split)
    if layers is not None:
        names = list(layers)
    else:  # the default taps that are spatial maps in both models (small nets end F2..F5 with vectors)
        names = default_taps(student, teacher, DEFAULT_TAPS)
        s_shapes, t_shapes = infer_shapes(student, names, shape), infer_shapes(teacher, names, shape)
        names = [n for n in names if len(s_shapes[n]) == 3 and len(t_shapes[n]) == 3]
    if not names:
        raise ValueError(f"method 'at': no taps to use; pass layers=[...] (student taps: {sorted(student.taps)})")
    for model, who in ((student, "student"), (teacher, "teacher")):
        for n, s in infer_shapes(model, names, shape).items():
            if len(s) != 3:
                raise ValueError(f"method 'at': {who} tap '{n}' gives shape {tuple(s)}, not a (C, H, W) map")
    return AT(
        student,
        teacher,
        layers=names,
        p=check_range(m, "p", p, strict=True),
        gamma=check_range(m, "gamma", gamma),
        beta=check_range(m, "beta", beta),
    )
