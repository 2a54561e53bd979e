"""Distillation methods: one module per method, each registering a builder in ``METHODS``.

Builder: ``(student, teacher, train_split, **params) -> Distiller``; unknown params raise ``TypeError``.
"""

from kdclaims.methods import at, crd, dkd, hint, independent, kl, pkt, rkd, soft_labels, sp  # noqa: F401  (register)
from kdclaims.methods.base import Distiller
from kdclaims.methods.common import CEDistiller, method_params

__all__ = ["CEDistiller", "Distiller", "method_params"]
