"""Top-1 correctness per image (Table 1; per domain for §6.1, per race for §6.2).

Also holds two helpers the other logit-based probes share: batched logits and ``collect`` (every model of
the bank -> ``Measurements`` rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.probes.base import Measurements, ModelBank
from kdclaims.probes.common import batch_size, check_params, with_smaller_batches
from kdclaims.registries import PROBES

PROBE = "accuracy"


def predict_logits(model: Classifier, split: Split, batch: int, device: torch.device, probe: str = PROBE) -> Tensor:
    """Logits of ``model`` on every image of ``split`` in split order: float32 (N, K) on the CPU.

    Runs under ``torch.inference_mode()``; the model is expected in eval mode on ``device``. After a CUDA OOM the
    split is streamed again in smaller batches (``with_smaller_batches``).
    """

    def run(size: int) -> Tensor:
        out = []
        with torch.inference_mode():
            for b in split.batches(size, device=device):
                out.append(model(b.x).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    return with_smaller_batches(run, batch, device, probe)[0]


def collect(bank: ModelBank, fn: Callable[[Classifier], dict[str, np.ndarray]]) -> Measurements:
    """``fn(model) -> {metric: per-unit vector}`` for every model; rows ``(n_seeds, n_units)`` per student arm,
    ``(1, n_units)`` per teacher. Models are fetched outside inference mode (the bank may train them)."""
    out = Measurements()
    for arm in bank.arms:
        per_seed = [fn(bank.model(arm, seed)) for seed in bank.seeds]
        for metric in per_seed[0]:
            out.add(metric, arm, np.stack([np.asarray(r[metric], dtype=np.float64) for r in per_seed]))
    for teacher in bank.teachers:
        for metric, vec in fn(bank.model(teacher)).items():
            out.add(metric, teacher, np.asarray(vec, dtype=np.float64)[None, :])
    return out


def correct(logits: Tensor, y: Tensor) -> np.ndarray:
    """Top-1 correctness per image: ``1[argmax_k logits[i, k] == y[i]]`` as float64 (N,)."""
    return (logits.argmax(1) == y.cpu()).to(torch.float64).numpy()


def _targets(bank: ModelBank, split: Split, params: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Split]]:
    """Sub-metrics: ``{metric: mask over split}`` for groups of the split, ``{metric: split}`` for other datasets."""
    per, domains = params.get("per"), params.get("domains")
    if per not in (None, "group"):
        raise ValueError(f"probe '{PROBE}': per must be 'group' or absent, got {per!r}")
    masks: dict[str, np.ndarray] = {}
    others: dict[str, Split] = {}
    if per == "group" and domains is None:
        if split.groups is None or not split.group_names:
            raise ValueError(f"probe '{PROBE}': per: group, but split {split.name} has no groups")
        for gid, g in enumerate(split.group_names):
            mask = (split.groups == gid).cpu().numpy()
            if mask.any():
                masks[f"{PROBE}/{g}"] = mask
    if domains is not None:
        if isinstance(domains, str) or not isinstance(domains, (list, tuple)) or not domains:
            raise ValueError(f"probe '{PROBE}': domains must be a non-empty list of names, got {domains!r}")
        for d in domains:
            if split.groups is not None and d in split.group_names:
                mask = (split.groups == split.group_names.index(d)).cpu().numpy()
                if not mask.any():
                    raise ValueError(f"probe '{PROBE}': group '{d}' of split {split.name} has no images")
                masks[f"{PROBE}/{d}"] = mask
            else:
                others[f"{PROBE}/{d}"] = bank.eval_split(d)
    return masks, others


@PROBES.register(PROBE)
def accuracy(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    """Per-image top-1 correctness (1/0).

    ``accuracy``: over the evaluation split. ``per: group`` adds ``accuracy/<group>`` for every group of the
    split that has images; ``domains: [names]`` adds ``accuracy/<name>`` for each name, a group of the split
    or else a dataset the bank resolves with ``eval_split(name)``. Units are that metric's images.
    Arms: every student arm (a row per seed) and every teacher (one row).
    """
    check_params(PROBE, params, optional=("per", "domains"))
    bs = batch_size(PROBE, params)
    split = bank.eval_split(params.get("data"))
    masks, others = _targets(bank, split, params)

    def evaluate(model: Classifier) -> dict[str, np.ndarray]:
        hit = correct(predict_logits(model, split, bs, bank.device), split.y)
        res = {PROBE: hit, **{metric: hit[mask] for metric, mask in masks.items()}}
        for metric, sub in others.items():
            res[metric] = correct(predict_logits(model, sub, bs, bank.device), sub.y)
        return res

    out = collect(bank, evaluate)
    out.extras["n_images"] = {PROBE: len(split), **{m: int(k.sum()) for m, k in masks.items()},
                              **{m: len(s) for m, s in others.items()}}
    return out
