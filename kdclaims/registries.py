"""The four registries a claim YAML names things through. ``load_all()`` imports every builder module."""

from __future__ import annotations

import importlib

from kdclaims.registry import Registry

MODELS: Registry = Registry("model")  # name -> (num_classes, in_chans, mean, std, **kw) -> Classifier
DATASETS: Registry = Registry("dataset")  # name -> (split, root, seed, **params) -> Split
METHODS: Registry = Registry("method")  # name -> (student, teacher, train_split, **params) -> Distiller
PROBES: Registry = Registry("probe")  # name -> (bank, params) -> Measurements

_PACKAGES = ("kdclaims.models", "kdclaims.data", "kdclaims.methods", "kdclaims.probes")
_loaded = False


def load_all() -> None:
    """Import the builder packages so that every ``@REG.register`` has run."""
    global _loaded
    if not _loaded:
        for pkg in _PACKAGES:
            importlib.import_module(pkg)
        _loaded = True
