"""§4.2 / App. B: do images crafted to fool the teacher fool the distilled student more than the independent one?

I-FGSM in unnormalised pixel space [0, 1], ``k`` steps of size ``a`` within an L-inf ball of radius ``eps``:

    x_0 = x,   x_{t+1} = clamp_[0,1]( clip_{x, eps}( x_t + a * sign(grad_x CE(source(x_t), y)) ) )

The source is fooled on an image when ``argmax source(x_k) != argmax source(x)``. The units are the images that
fool the source; on them, ``fooled[arm]`` is 1 when the student's prediction on ``x_k`` differs from its own
prediction on ``x``, else 0 (per seed). Teacher-like models other than the source get one row each.
``source_fooled[source]`` (one row, every attacked image) is 1 where the attack fooled the source: its mean is the
source's own fooling rate (Table 6's teacher column in the NeurIPS version).

Params: ``eps``, ``step``, ``steps`` (required), ``source`` (a teacher name, default ``teacher``; a foreign
network for the control of Fig. 3c), ``eps_sweep`` (optional list of radii: metrics ``fooled/eps=<v>``, each
with step ``step * v / eps`` so that every radius is spent the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.probes.base import ModelBank, Measurements
from kdclaims.probes.common import (
    as_float_list,
    batch_size,
    check_params,
    fmt,
    over_slices,
    require_teacher,
    students,
)
from kdclaims.registries import PROBES

PROBE = "adversarial_transfer"
MIN_FOOLING = 2


def ifgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int) -> Tensor:
    """Adversarial images for ``model`` (used as is: put it in eval mode), ``x`` in [0, 1].

    The CE is summed over the batch so that each image's gradient is its own (the sign ignores the scale).
    """
    if eps < 0 or step < 0 or steps < 0:
        raise ValueError(f"ifgsm: eps, step and steps must be >= 0, got {eps}, {step}, {steps}")
    with torch.inference_mode(False), torch.enable_grad():
        x0 = x.detach().clone()
        lo, hi = x0 - eps, x0 + eps
        xa = x0.clone()
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = F.cross_entropy(model(xa), y.long(), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa, allow_unused=True)
            if grad is None:  # the model ignores its input: nothing to move along
                break
            xa = torch.minimum(torch.maximum(xa.detach() + step * grad.sign(), lo), hi).clamp_(0.0, 1.0)
    return xa.detach()


def _positive(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"probe '{PROBE}': {name} must be a non-negative number, got {value!r}")
    if kind is int and int(value) != value:
        raise ValueError(f"probe '{PROBE}': {name} must be an integer, got {value!r}")
    return kind(value)


@PROBES.register(PROBE)
def adversarial_transfer(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    check_params(PROBE, params, optional=("source", "eps_sweep"), required=("eps", "step", "steps"))
    eps = _positive("eps", params["eps"], float)
    step = _positive("step", params["step"], float)
    steps = _positive("steps", params["steps"], int)
    if eps == 0 or step == 0 or steps == 0:
        raise ValueError(f"probe '{PROBE}': eps, step and steps must be > 0 (an attack that moves nothing)")
    sweep = as_float_list(PROBE, "eps_sweep", params["eps_sweep"]) if params.get("eps_sweep") is not None else []
    if any(v <= 0 for v in sweep):
        raise ValueError(f"probe '{PROBE}': eps_sweep values must be > 0, got {sweep}")
    source_name = require_teacher(PROBE, bank, params.get("source", "teacher"))
    bs = batch_size(PROBE, params)
    split = bank.eval_split(params.get("data"))
    n, n_seeds, device = len(split), len(bank.seeds), bank.device

    source = bank.model(source_name)
    models = list(students(bank))
    others = [(t, bank.model(t)) for t in bank.teachers if t != source_name]
    radii = list(dict.fromkeys([eps, *sweep]))  # each radius attacked once
    # clean / adversarial predictions: per radius, source (n,), students (n_seeds, n) per arm, others (n,)
    clean_src = torch.empty(n, dtype=torch.long)
    clean_stu = {arm: torch.empty(n_seeds, n, dtype=torch.long) for arm in bank.arms}
    clean_oth = {t: torch.empty(n, dtype=torch.long) for t, _ in others}
    adv_src = {r: torch.empty(n, dtype=torch.long) for r in radii}
    adv_stu = {r: {arm: torch.empty(n_seeds, n, dtype=torch.long) for arm in bank.arms} for r in radii}
    adv_oth = {r: {t: torch.empty(n, dtype=torch.long) for t, _ in others} for r in radii}

    def attack(sl: slice) -> None:
        x, y = split.x[sl].to(device), split.y[sl].to(device)
        with torch.inference_mode():
            clean_src[sl] = source(x).argmax(1).cpu()
            for arm, row, _seed, model in models:
                clean_stu[arm][row, sl] = model(x).argmax(1).cpu()
            for t, model in others:
                clean_oth[t][sl] = model(x).argmax(1).cpu()
        for r in radii:
            xa = ifgsm(source, x, y, r, step * r / eps, steps)
            with torch.inference_mode():
                adv_src[r][sl] = source(xa).argmax(1).cpu()
                for arm, row, _seed, model in models:
                    adv_stu[r][arm][row, sl] = model(xa).argmax(1).cpu()
                for t, model in others:
                    adv_oth[r][t][sl] = model(xa).argmax(1).cpu()

    used = over_slices(n, bs, attack, device, PROBE)

    out = Measurements()
    fooling = {r: (adv_src[r] != clean_src).numpy() for r in radii}
    counts = {r: int(f.sum()) for r, f in fooling.items()}
    if counts[eps] < MIN_FOOLING:
        raise ValueError(
            f"probe '{PROBE}': only {counts[eps]} of {n} images fool the source '{source_name}' at eps={eps} "
            f"(step {step}, {steps} steps); at least {MIN_FOOLING} are needed: raise eps or the steps"
        )
    notes = []
    for metric, r in [("fooled", eps), *((f"fooled/eps={fmt(v)}", v) for v in sweep)]:
        units = fooling[r]
        if counts[r] < MIN_FOOLING:
            notes.append(f"{metric} omitted: only {counts[r]} images fool the source")
            continue
        for arm in bank.arms:
            out.add(metric, arm, (adv_stu[r][arm] != clean_stu[arm]).numpy()[:, units].astype(np.float64))
        for t, _ in others:
            out.add(metric, t, (adv_oth[r][t] != clean_oth[t]).numpy()[units].astype(np.float64))
    out.add("source_fooled", source_name, fooling[eps].astype(np.float64))
    out.extras.update(
        source=source_name,
        eps=eps,
        step=step,
        steps=steps,
        n_images=n,
        source_fooling_rate=counts[eps] / n,
        n_fooling=counts[eps],
        notes=notes,
    )
    if used != bs:
        out.extras["batch_size_after_oom"] = used
    if sweep:
        out.extras["eps_sweep"] = {
            "eps": sweep,
            "step": [step * v / eps for v in sweep],
            "source_fooling_rate": [counts[v] / n for v in sweep],
            "n_fooling": [counts[v] for v in sweep],
        }
    return out
