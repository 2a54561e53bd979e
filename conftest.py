"""Root conftest: every test under tests/ belongs to the smoke tier (fast, CPU, no real data needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent / "tests"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if TESTS in path.parents and not any(m.name in ("slow", "cpu", "gpu", "portability") for m in item.iter_markers()):
            item.add_marker(pytest.mark.smoke)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a slower version of a reliability or property test")
    config.addinivalue_line("markers", "portability: planted effects under every CPU kernel level (own CI step)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
