"""Seeds and deterministic-algorithm switches for repeatable runs."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

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
    The tuple's length is mixed in first: ``SeedSequence`` alone maps ``(a,)`` and ``(a, 0, 0)`` to one state.
    """
    words = [int(p) for p in parts]
    if any(w < 0 for w in words):
        raise ValueError(f"derive_seed takes non-negative integers, got {parts}")
    state = np.random.SeedSequence([len(words), *words]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# Every model's random streams (initial weights, batch order, dropout, augmentation, a method's own layers and
# sampling) derive from (role, seed): a teacher and a student never share a stream, while the students of one
# seed (the distilled arms and their independent twin) share all of theirs, the paired design.
ROLES = {"teacher": 1, "student": 2}
STREAMS_VERSION = 2  # enters store keys: version 1 drew teachers' and students' streams from the bare seed
INIT_STREAM, METHOD_STREAM = 0, 1  # derive_seed(stream_seed(...), INIT_STREAM): weights; METHOD_STREAM: method parts


def stream_seed(role: str, seed: int) -> int:
    """The seed a model with this ``role`` ("teacher" or "student") and training ``seed`` trains under:
    ``derive_seed(ROLES[role], seed)``. Teachers and students with one seed get unrelated seeds."""
    if role not in ROLES:
        raise ValueError(f"unknown model role '{role}'; roles: {', '.join(ROLES)}")
    return derive_seed(ROLES[role], int(seed))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with every global RNG seeded by ``seed`` (``seed_everything``), then put their states back.

    Code that draws from the global RNGs (``nn.Linear``'s initialisation, a method's default seed) becomes a
    function of ``seed`` alone, and leaves no trace for whatever runs next.
    """
    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


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


__all__ = ("seed_everything", "derive_seed", "deterministic", "stream_seed", "seeded", "ROLES", "STREAMS_VERSION")
