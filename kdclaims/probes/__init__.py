"""Probes: one module per measurement the paper makes, each registered in ``PROBES`` by name.

A probe takes a ``ModelBank`` and its YAML parameters and returns ``Measurements`` (raw per-image values).
"""

from kdclaims.probes import (  # noqa: F401  (registration)
    accuracy,
    adversarial,
    agreement,
    boundary,
    cka,
    consensus,
    localisation,
    shape_bias,
)
from kdclaims.probes.base import Measurements, ModelBank

__all__ = ["Measurements", "ModelBank"]
