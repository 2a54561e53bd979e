"""§4.3, C.4, C.5: does a model give two versions of an image the same class?

``agreement[arm]`` is 1 on an image when ``argmax f(X_1) == argmax f(X_2)``, per seed (teachers: one row).
The pair ``(X_1, X_2)`` depends on ``transform``:

- ``color``: ``X`` and a colour-jittered ``X'`` (brightness, contrast, saturation factors drawn within
  ``strength``, hue shift within ``hue``; §4.3). Params ``strength`` (required), ``hue`` (default 0: no hue
  change unless the claim gives one).
- ``crop``: two random crops covering a fraction ``scale`` of the image each, aspect ratio free (C.4).
- ``shift``: two crops shifted by up to ``max_shift`` pixels, aspect ratio fixed (C.5).

The pairs are drawn once from a generator seeded with ``seed`` (default 0) and shared by every model, so units
are paired across arms. They are drawn in chunks of ``PAIR_CHUNK`` images, whatever the batch size, and
made on the bank's device (the generator stays on the CPU, so the draws do not depend on the device).
``sweep`` (a list of strengths, scales or shifts) adds the metrics ``agreement/<value>`` (each value drawn
afresh from ``seed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdclaims.probes.base import ModelBank, Measurements
from kdclaims.probes.common import as_float_list, batch_size, check_params, fmt, predict, students
from kdclaims.registries import PROBES

PROBE = "agreement"
PAIR_CHUNK = 256
# transform -> the parameter a sweep varies
SWEPT = {"color": "strength", "crop": "scale", "shift": "max_shift"}
EXTRA = {"color": ("hue",), "crop": (), "shift": ()}


def pair_fn(transform: str, hue: float = 0.0) -> Callable[[Tensor, float, torch.Generator], tuple[Tensor, Tensor]]:
    """``(x, value, generator) -> (x_1, x_2)`` for one transform (``value``: strength, scale or max shift)."""
    from kdclaims.data.transforms import color_jitter, random_crops, random_shifts

    if transform == "color":
        return lambda x, v, g: (x, color_jitter(x, v, hue, g))
    if transform == "crop":
        return lambda x, v, g: random_crops(x, v, g)
    if transform == "shift":
        return lambda x, v, g: random_shifts(x, int(v), g)
    raise ValueError(f"probe '{PROBE}': transform must be one of {sorted(SWEPT)}, got {transform!r}")


def _check_value(transform: str, v: float) -> float | int:
    if transform == "color" and v < 0:
        raise ValueError(f"probe '{PROBE}': strength must be >= 0, got {v}")
    if transform == "crop" and not 0 < v <= 1:
        raise ValueError(f"probe '{PROBE}': scale must be in (0, 1], got {v}")
    if transform == "shift":
        if v < 0 or v != int(v):
            raise ValueError(f"probe '{PROBE}': max_shift must be a non-negative integer, got {v}")
        return int(v)
    return v


@PROBES.register(PROBE)
def agreement(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    transform = params.get("transform")
    if transform not in SWEPT:
        raise ValueError(f"probe '{PROBE}': transform must be one of {sorted(SWEPT)}, got {transform!r}")
    key = SWEPT[transform]
    check_params(PROBE, params, optional=("sweep", "seed", *EXTRA[transform]), required=("transform", key))
    (value,) = (_check_value(transform, v) for v in as_float_list(PROBE, key, [params[key]]))
    sweep = params.get("sweep")
    sweep = [] if sweep is None else [_check_value(transform, v) for v in as_float_list(PROBE, "sweep", sweep)]
    (hue,) = as_float_list(PROBE, "hue", [params.get("hue", 0.0)])
    if not 0 <= hue <= 0.5:
        raise ValueError(f"probe '{PROBE}': hue must be in [0, 0.5], got {hue}")
    seed = int(params.get("seed", 0))
    bs = batch_size(PROBE, params)
    split = bank.eval_split(params.get("data"))
    n, n_seeds = len(split), len(bank.seeds)
    make_pair = pair_fn(transform, hue)

    models = list(students(bank))
    teachers = [(t, bank.model(t)) for t in bank.teachers]
    # The colour pair's first view is the image itself: its predictions are the same for every strength, so they
    # are computed once per model. A value met twice (the headline inside the sweep) is measured once: each value
    # draws its pairs from a generator seeded alike, so a second pass would repeat the first exactly.
    clean: dict[str, Any] = {}
    if transform == "color":
        clean = {f"{arm}/{row}": predict(model, split.x, bs, PROBE) for arm, row, _seed, model in models}
        clean |= {f"teacher:{t}": predict(model, split.x, bs, PROBE) for t, model in teachers}

    def same(name: str, model: Any, x1: Tensor, x2: Tensor, sl: slice) -> np.ndarray:
        first = clean[name][sl] if clean else predict(model, x1, bs, PROBE)
        return (first == predict(model, x2, bs, PROBE)).numpy()

    measured: dict[float, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    out = Measurements()
    for metric, v in [(PROBE, value), *((f"{PROBE}/{fmt(s)}", s) for s in sweep)]:
        if v not in measured:
            gen = torch.Generator().manual_seed(seed)
            stu = {arm: np.empty((n_seeds, n)) for arm in bank.arms}
            tea = {t: np.empty(n) for t, _ in teachers}
            for start in range(0, n, PAIR_CHUNK):
                sl = slice(start, min(start + PAIR_CHUNK, n))
                x1, x2 = make_pair(split.x[sl].to(bank.device), v, gen)
                for arm, row, _seed, model in models:
                    stu[arm][row, sl] = same(f"{arm}/{row}", model, x1, x2, sl)
                for t, model in teachers:
                    tea[t][sl] = same(f"teacher:{t}", model, x1, x2, sl)
            measured[v] = stu, tea
        stu, tea = measured[v]
        for arm in bank.arms:
            out.add(metric, arm, stu[arm].copy())
        for t in tea:
            out.add(metric, t, tea[t].copy())
    out.extras.update(transform=transform, seed=seed, n_images=n, **{key: value})
    if transform == "color":
        out.extras["hue"] = hue
    if sweep:
        out.extras["sweep"] = {"param": key, "values": sweep}
    return out
