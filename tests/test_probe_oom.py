"""CUDA out-of-memory in a probe: the batch is retried at half the size, results do not change (issue #8, case 6).

No GPU is needed: a forward pre-hook raises ``torch.cuda.OutOfMemoryError`` for batches above a limit (what the
allocator raises), and ``_retries_oom`` is patched to treat the CPU as CUDA. Checked to fail: with the retry
removed from ``over_slices``/``with_smaller_batches`` (re-raise at once), every probe test below errors with the
simulated OOM; with the retry kept but the failed slice skipped (``start = sl.stop`` in the handler) the
"every index exactly once" test fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import FakeBank, image_split, trained_classifier

import kdclaims.probes.common as common
from kdclaims.probes.accuracy import accuracy
from kdclaims.probes.adversarial import adversarial_transfer
from kdclaims.probes.agreement import agreement
from kdclaims.probes.cka import cka_probe
from kdclaims.probes.common import over_slices, with_smaller_batches
from kdclaims.probes.consensus import consensus
from kdclaims.probes.localisation import localisation

torch.set_num_threads(1)
CUDA = torch.device("cuda")  # only compared, never allocated on


def _oom(msg: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(msg)


def test_over_slices_covers_every_index_once_and_keeps_the_smaller_batch() -> None:
    seen: list[tuple[int, int]] = []

    def fn(sl: slice) -> None:
        if sl.stop - sl.start > 5:
            raise _oom()
        seen.append((sl.start, sl.stop))

    used = over_slices(23, 16, fn, CUDA, "demo")
    assert used == 4  # 16 -> 8 -> 4
    covered = [i for a, b in seen for i in range(a, b)]
    assert covered == list(range(23))
    assert all(b - a <= 4 for a, b in seen)


def test_over_slices_old_style_runtime_error_counts_as_oom() -> None:
    calls = []

    def fn(sl: slice) -> None:
        calls.append(sl.stop - sl.start)
        if sl.stop - sl.start > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")

    assert over_slices(4, 4, fn, CUDA, "demo") == 2
    assert calls == [4, 2, 2]


def test_over_slices_does_not_retry_on_cpu_or_other_errors() -> None:
    def oom(sl: slice) -> None:
        raise _oom()

    with pytest.raises(torch.cuda.OutOfMemoryError):
        over_slices(8, 8, oom, "cpu", "demo")  # a CPU run never pretends to be a CUDA OOM

    def broken(sl: slice) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        over_slices(8, 8, broken, CUDA, "demo")


def test_oom_at_batch_one_is_a_clear_memory_error() -> None:
    def oom(sl: slice) -> None:
        raise _oom()

    with pytest.raises(MemoryError, match="probe 'demo': out of CUDA memory even with a batch of 1"):
        over_slices(8, 8, oom, CUDA, "demo")
    with pytest.raises(MemoryError, match="probe 'cka'"):
        with_smaller_batches(lambda b: oom(slice(0, b)), 3, CUDA, "cka")


def test_with_smaller_batches_restarts_with_half() -> None:
    sizes: list[int] = []

    def fn(b: int) -> int:
        sizes.append(b)
        if b > 10:
            raise _oom()
        return b * 100

    assert with_smaller_batches(fn, 64, CUDA, "demo") == (800, 8)
    assert sizes == [64, 32, 16, 8]


# --- the probes, end to end ---------------------------------------------------------------------------------------

LIMIT = 5  # images per forward pass before the simulated OOM


def _bank() -> FakeBank:
    teacher = trained_classifier(100)
    models = {"teacher": teacher, "other": trained_classifier(200)}
    for s in (0, 1):
        models[("independent", s)] = trained_classifier(s)
        models[("kl", s)] = trained_classifier(10 + s)
    return FakeBank(models, [0, 1], ["independent", "kl"], ["teacher", "other"], {None: image_split(24, size=16)})


def _limit_memory(bank: FakeBank, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[int]:
    """Every model raises a CUDA OOM on a batch above LIMIT until the test ends (the fakes' models are cached
    across tests); returns the list of refused batch sizes."""
    refused: list[int] = []

    def hook(module, args):
        if args[0].shape[0] > LIMIT:
            refused.append(args[0].shape[0])
            raise _oom()

    for m in bank.all_models():
        request.addfinalizer(m.register_forward_pre_hook(hook).remove)
    monkeypatch.setattr(common, "_retries_oom", lambda device: True)
    return refused


PROBES = {
    "localisation": (localisation, {}),
    "adversarial_transfer": (adversarial_transfer, {"eps": 0.3, "step": 0.1, "steps": 5, "source": "teacher"}),
    "agreement": (agreement, {"transform": "shift", "max_shift": 3}),
    "consensus": (consensus, {}),
    "accuracy": (accuracy, {}),
    "cka": (cka_probe, {"layers": ["early", "cam"], "batch_images": 12}),
}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_retries_smaller_batches_and_gets_the_same_values(
    name: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    fn, params = PROBES[name]
    ref = fn(_bank(), {**params, "batch_size": 16})  # no memory limit
    bank = _bank()
    refused = _limit_memory(bank, monkeypatch, request)
    got = fn(bank, {**params, "batch_size": 16})
    assert refused, "the simulated OOM never fired: the test would pass without any retry"
    assert got.values.keys() == ref.values.keys()
    for metric in ref.values:
        for arm, arr in ref.values[metric].items():
            np.testing.assert_allclose(got.values[metric][arm], arr, rtol=1e-5, atol=1e-6, err_msg=f"{metric}/{arm}")
