"""Models: ``create_model(name, ...)`` through the ``MODELS`` registry; one module per family registers its builders.

Every model is a ``Classifier`` with the taps ``F1``..``F7``, ``penultimate``, ``hint`` and ``cam``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdclaims.models import (  # noqa: F401  (registration)
    cifar_resnet, cifar_zoo, resnet, small, timm_models, transformers, vgg,
)
from kdclaims.models.base import Classifier, FeatureTaps
from kdclaims.models.common import TAP_NAMES
from kdclaims.models.weights import WeightsNotFound, load_weights, resolve_weights
from kdclaims.registries import MODELS

__all__ = [
    "TAP_NAMES",
    "Classifier",
    "FeatureTaps",
    "WeightsNotFound",
    "create_model",
    "load_weights",
    "resolve_weights",
]


# Builder options that would read or fetch weights behind the store's back (timm and torchvision pass their
# keyword arguments on): weights come only from a teacher's ``weights:`` under --kd-weights (``load_weights``).
FORBIDDEN_PARAMS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                    "weights", "progress", "weights_backbone")


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kw,
) -> Classifier:
    """Build the registered model ``name`` (random init; see ``load_weights`` for weights from disk).

    ``mean``/``std`` (one value per input channel) default to ImageNet statistics for ImageNet architectures and
    to 0.5 for the small nets; ``kw`` are the builder's own options (``width``, ``image_size``, ...).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    bad = sorted(set(kw) & set(FORBIDDEN_PARAMS))
    if bad:
        raise ValueError(f"model '{name}': parameter(s) {bad} would load or download weights; "
                         "name weights with the teacher's 'weights:' (read from --kd-weights) instead")
    return MODELS.get(name)(num_classes, in_chans, mean, std, **kw)
