"""Independent training: no teacher, ``L = gamma * CE(z_s, y)``."""

from __future__ import annotations

from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.methods.common import CEDistiller, check_range, method_builder
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS


class Independent(CEDistiller):
    """The baseline student: ``L = gamma * CE``. A teacher passed to the builder is ignored."""

    needs_teacher = False

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": self.ce(logits, y)}


@METHODS.register("independent")
@method_builder("independent", Independent)
def build_independent(
    student: Classifier, teacher: Classifier | None, train_split: Split, *, gamma: float = 1.0
) -> Independent:
    return Independent(student, None, gamma=check_range("independent", "gamma", gamma))
