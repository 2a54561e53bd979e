"""§4.1: is the teacher's Grad-CAM closer to the distilled student's than to the independent student's?

For image i, seed s and the ground-truth class: ``c_arm = cos(CAM_T, CAM_arm,s)`` (flattened maps).

- ``closer[arm]`` (every arm but ``independent``): 1 if ``c_arm > c_independent`` (same seed), 0.5 on a tie,
  else 0. Arm ``ind_vs_ind`` (the control): for every pair of seeds j < k, 1 if ``c_ind,j > c_ind,k``; one row
  per pair (needs two seeds), with ``extras["row_seeds"]["closer"]["ind_vs_ind"]`` = the pairs of seed indices,
  so the statistics infer over seeds (the delete-one-seed jackknife; one pair has no seed-level answer).
- ``cam_similarity[arm]``: ``c_arm`` itself, for figures.

A student map that is all zero has cosine 0 to anything; an image whose teacher map is all zero has no value
(NaN) for every arm. Params: ``layer`` (tap name, default ``cam``), ``impl`` (``torch`` | ``pytorch_grad_cam``).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdclaims.models.base import Classifier
from kdclaims.probes.base import ModelBank, Measurements
from kdclaims.probes.common import batch_size, check_params, over_slices, require_teacher, students
from kdclaims.probes.gradcam import cam_module, gradcam_package, gradcam_torch, layer_extent
from kdclaims.registries import PROBES

PROBE = "localisation"
IMPLS = ("torch", "pytorch_grad_cam")
INDEPENDENT = "independent"
CONTROL = "ind_vs_ind"


def cams(model: Classifier, layer: str, x: Tensor, y: Tensor, impl: str) -> Tensor:
    """Grad-CAM maps of classes ``y``, flattened to ``(B, H*W)`` float64 on ``x``'s device."""
    module, transform = cam_module(model, layer)
    if impl == "torch":
        maps = gradcam_torch(model, module, x, y, transform=transform)
    else:
        maps = gradcam_package(model, module, x, y, transform=transform)
    return maps.to(x.device, torch.float64).flatten(1)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise ``a.b / (|a| |b|)``; 0 where either row is all zero."""
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def check_extent(model: Classifier, who: str, layer: str, x: Tensor) -> tuple[int, ...]:
    """The (h, w) of the CAM layer; a clear error where Grad-CAM cannot work (1x1 maps, no spatial axes)."""
    module, transform = cam_module(model, layer)
    shape = layer_extent(model, module, x, transform)
    if len(shape) != 4:
        raise ValueError(
            f"probe '{PROBE}': layer '{layer}' of {who} ({model.arch}) gives shape {shape}, not a (B, C, h, w) map"
        )
    if shape[2] * shape[3] == 1:
        raise ValueError(
            f"probe '{PROBE}': layer '{layer}' of {who} ({model.arch}) is 1x1 at this input size, so every "
            f"Grad-CAM map is zero; choose a layer with spatial extent"
        )
    return shape[2:]


def closer(c_arm: np.ndarray, c_ref: np.ndarray) -> np.ndarray:
    """1 where ``c_arm > c_ref``, 0.5 where equal, 0 where below; NaN where either is NaN."""
    out = np.where(c_arm > c_ref, 1.0, np.where(c_arm == c_ref, 0.5, 0.0))
    out[np.isnan(c_arm) | np.isnan(c_ref)] = np.nan
    return out


@PROBES.register(PROBE)
def localisation(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    check_params(PROBE, params, optional=("layer", "impl"))
    layer = params.get("layer", "cam")
    impl = params.get("impl", "torch")
    if impl not in IMPLS:
        raise ValueError(f"probe '{PROBE}': impl must be one of {IMPLS}, got {impl!r}")
    bs = batch_size(PROBE, params)
    split = bank.eval_split(params.get("data"))
    n, n_seeds, device = len(split), len(bank.seeds), bank.device

    teacher = bank.model(require_teacher(PROBE, bank, "teacher"))
    models = list(students(bank))
    probe_x = split.x[:1].to(device)
    extents = {"teacher": list(check_extent(teacher, "teacher", layer, probe_x))}
    for arm, _row, seed, model in models:
        extents[f"{arm}/{seed}"] = list(check_extent(model, f"{arm} (seed {seed})", layer, probe_x))

    sims = {arm: np.full((n_seeds, n), np.nan) for arm in bank.arms}
    teacher_zero = np.zeros(n, dtype=bool)
    def compare(sl: slice) -> None:
        x, y = split.x[sl].to(device), split.y[sl].to(device)
        cam_t = cams(teacher, layer, x, y, impl)
        zero = (cam_t.abs().sum(1) == 0).cpu().numpy()
        teacher_zero[sl] = zero
        for arm, row, _seed, model in models:
            c = cosine(cam_t, cams(model, layer, x, y, impl)).cpu().numpy()
            c[zero] = np.nan
            sims[arm][row, sl] = c

    used = over_slices(n, bs, compare, device, PROBE)

    out = Measurements()
    for arm in bank.arms:
        out.add("cam_similarity", arm, sims[arm])
    notes: list[str] = []
    if INDEPENDENT in sims:
        for arm in bank.arms:
            if arm != INDEPENDENT:
                out.add("closer", arm, closer(sims[arm], sims[INDEPENDENT]))
        ind = sims[INDEPENDENT]
        if n_seeds >= 2:
            pairs = list(combinations(range(n_seeds), 2))
            out.add("closer", CONTROL, np.stack([closer(ind[j], ind[k]) for j, k in pairs]))
            out.extras["row_seeds"] = {"closer": {CONTROL: [list(p) for p in pairs]}}
        else:
            notes.append(f"control '{CONTROL}' omitted: it needs two seeds, the bank has {n_seeds}")
    else:
        notes.append(f"metric 'closer' omitted: no '{INDEPENDENT}' arm to compare with")
    out.extras.update(
        layer=layer,
        impl=impl,
        n_images=n,
        n_teacher_zero_cam=int(teacher_zero.sum()),
        cam_extent=extents,
        notes=notes,
    )
    if used != bs:
        out.extras["batch_size_after_oom"] = used
    return out
