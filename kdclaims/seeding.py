"""Seeds and deterministic-algorithm switches for repeatable runs."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_CUBLAS_KEY = "CUBLAS_WORKSPACE_CONFIG"
_CUBLAS_VALUE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG, torch's CPU RNG and every CUDA device's RNG."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices (lazily when CUDA is not initialised yet)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts`` (NumPy ``SeedSequence`` mixing).

    Distinct tuples give statistically independent streams, e.g. ``derive_seed(seed, epoch, stream, rank)``.
    """
    words = [int(p) for p in parts]
    if any(w < 0 for w in words):
        raise ValueError(f"derive_seed takes non-negative integers, got {parts}")
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class deterministic:  # noqa: N801 - used like a function or a context manager
    """Turn deterministic algorithms on (or off); used as a call it stays, used as ``with`` it is restored on exit.

    Sets ``torch.use_deterministic_algorithms(enabled, warn_only=warn_only)``,
    ``cudnn.deterministic = enabled`` and ``cudnn.benchmark = not enabled``. When enabling while CUDA is
    available, ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` unless already set (cuBLAS reads it when its
    handle is created, so call this before the first CUDA matmul).

    >>> with deterministic():
    ...     train(...)
    """

    def __init__(self, enabled: bool = True, *, warn_only: bool = False):
        self._previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        if enabled and torch.cuda.is_available():
            os.environ.setdefault(_CUBLAS_KEY, _CUBLAS_VALUE)
        _apply(enabled, warn_only, enabled, not enabled)

    def __enter__(self) -> "deterministic":
        return self

    def __exit__(self, *exc: object) -> None:
        _apply(*self._previous)


def _apply(algorithms: bool, warn_only: bool, cudnn_deterministic: bool, cudnn_benchmark: bool) -> None:
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark


__all__ = ("seed_everything", "derive_seed", "deterministic")
