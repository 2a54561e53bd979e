"""Linear CKA between teacher and student representations (§5, Fig 8).

Features are flattened per image (``B x CHW``) and handled in float64 after mean-centring (centring float32
features with a large mean loses the signal).

- Linear CKA (Kornblith et al. 2019), centred ``X (n x p1)``, ``Y (n x p2)``:
  ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) = <K, L>_F / (||K||_F ||L||_F)``, ``K = X X^T``, ``L = Y Y^T``.
  This plug-in estimate is biased upwards: for independent isotropic Gaussian features it is near
  ``1 / (1 + n/p)``, not 0.
- Unbiased HSIC (Song et al. 2012), with ``K~, L~`` = ``K, L`` with zeroed diagonals:
  ``HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) * 1^T K~ L~ 1] / (n (n-3))``.
- Minibatch CKA (Nguyen et al. 2021), summing over minibatches ``b``:
  ``sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) * sum_b HSIC_1(L_b, L_b))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier, FeatureTaps
from kdclaims.probes.base import Measurements, ModelBank
from kdclaims.probes.common import batch_size, check_params, require_teacher, with_smaller_batches
from kdclaims.registries import PROBES

DEFAULT_LAYERS = [f"F{i}" for i in range(1, 8)]
ESTIMATORS = ("unbiased", "biased")
_CHUNK_ELEMS = 1 << 25  # float64 elements per column chunk of a Gram computation (256 MiB)


def _matrix(x: Tensor | np.ndarray) -> Tensor:
    """Any array of n items -> float64 (n, features)."""
    t = torch.as_tensor(x)
    return t.reshape(len(t), -1).to(torch.float64)


def centred_gram(x: Tensor | np.ndarray) -> Tensor:
    """``K = Xc Xc^T`` in float64, ``Xc = X - 1 mean(X)^T``; ``X`` is flattened per item and processed in column
    chunks, so a wide float32 ``X`` is never copied to float64 at once. Stays on ``X``'s device."""
    t = torch.as_tensor(x)
    t = t.reshape(len(t), -1)
    n, p = t.shape
    k = torch.zeros(n, n, dtype=torch.float64, device=t.device)
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    for s in range(0, p, step):
        c = t[:, s:s + step].to(torch.float64)
        c = c - c.mean(0, keepdim=True)
        k.addmm_(c, c.T)
    return k


def linear_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear CKA of two representations of the same ``n`` items (see module docstring); NaN if one is constant.

    Uses the feature form ``||Y^T X||^2 / (||X^T X|| ||Y^T Y||)`` for narrow features and the ``n x n`` Gram
    form for wide ones (the two are equal).
    """
    xm, ym = _matrix(x), _matrix(y)
    if len(xm) != len(ym):
        raise ValueError(f"linear_cka: {len(xm)} vs {len(ym)} items")
    n, p1, p2 = len(xm), xm.shape[1], ym.shape[1]
    if p1 * p2 <= n * (p1 + p2):
        xm, ym = xm - xm.mean(0), ym - ym.mean(0)
        num = (ym.T @ xm).square().sum()
        den = torch.linalg.matrix_norm(xm.T @ xm) * torch.linalg.matrix_norm(ym.T @ ym)
    else:
        k, l_ = centred_gram(xm), centred_gram(ym)
        num = (k * l_).sum()
        den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_)
    return float(num / den) if den > 0 else math.nan


def hsic1(k: Tensor, l_: Tensor) -> float:
    """Unbiased HSIC estimator ``HSIC_1`` of two ``n x n`` Gram matrices (module docstring); needs ``n >= 4``.

    For linear kernels it does not change when a constant is added to the features, so centring is optional.
    """
    n = k.shape[0]
    if n < 4 or k.shape != (n, n) or l_.shape != (n, n):
        raise ValueError(f"hsic1: need two n x n Gram matrices with n >= 4, got {tuple(k.shape)}, {tuple(l_.shape)}")
    k = k.to(torch.float64).clone()
    l_ = l_.to(torch.float64).clone()
    k.fill_diagonal_(0)
    l_.fill_diagonal_(0)
    trace = (k * l_).sum()
    sums = k.sum() * l_.sum() / ((n - 1) * (n - 2))
    cross = k.sum(0) @ l_.sum(1) * (2.0 / (n - 2))
    return float((trace + sums - cross) / (n * (n - 3)))


def _ratio(num: float, a: float, b: float) -> float:
    return num / math.sqrt(a * b) if a > 0 and b > 0 else math.nan


def cka_from_grams(k: Tensor, l_: Tensor, estimator: str = "unbiased") -> float:
    """CKA of one minibatch from its Gram matrices: ``HSIC_1`` ratio (unbiased) or ``<Kc, Lc> / (|Kc| |Lc|)``
    on centred Grams (biased; ``K`` must then come from centred features, e.g. ``centred_gram``)."""
    if estimator == "unbiased":
        return _ratio(hsic1(k, l_), hsic1(k, k), hsic1(l_, l_))
    if estimator == "biased":
        return _ratio(float((k * l_).sum()), float((k * k).sum()), float((l_ * l_).sum()))
    raise ValueError(f"unknown CKA estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")


def minibatch_cka(batches: Iterable[tuple[Tensor | np.ndarray, Tensor | np.ndarray]]) -> float:
    """Minibatch CKA over ``(X_b, Y_b)`` pairs (the same items in both): unbiased HSIC accumulated over minibatches."""
    xy = xx = yy = 0.0
    for xb, yb in batches:
        k, l_ = centred_gram(xb), centred_gram(yb)
        xy += hsic1(k, l_)
        xx += hsic1(k, k)
        yy += hsic1(l_, l_)
    return _ratio(xy, xx, yy)


def cka_matrix(grams_a: Sequence[Sequence[Tensor]], grams_b: Sequence[Sequence[Tensor]],
               estimator: str = "unbiased") -> np.ndarray:
    """``M[i, j]`` = CKA of layer ``i`` of model A and layer ``j`` of model B; ``grams_*[u][layer]`` are the
    centred Grams of minibatch ``u``. Unbiased: minibatch CKA (HSIC summed over minibatches); biased: the
    mean over minibatches of each minibatch's CKA."""
    la, lb = len(grams_a[0]), len(grams_b[0])
    if estimator == "biased":
        per = [[[cka_from_grams(ga[i], gb[j], "biased") for j in range(lb)] for i in range(la)]
               for ga, gb in zip(grams_a, grams_b, strict=True)]
        return np.mean(np.asarray(per), axis=0)
    if estimator != "unbiased":
        raise ValueError(f"unknown CKA estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    cross = np.zeros((la, lb))
    self_a, self_b = np.zeros(la), np.zeros(lb)
    for ga, gb in zip(grams_a, grams_b, strict=True):
        self_a += [hsic1(g, g) for g in ga]
        self_b += [hsic1(g, g) for g in gb]
        cross += [[hsic1(ga[i], gb[j]) for j in range(lb)] for i in range(la)]
    return np.array([[_ratio(cross[i, j], self_a[i], self_b[j]) for j in range(lb)] for i in range(la)])


def minibatch_indices(n: int, units: int | None, batch_images: int | None, seed: int) -> list[Tensor]:
    """Split ``n`` images, in a seeded random order, into disjoint equal minibatches: ``units`` of them, or as
    many of ``batch_images`` images as fit; the remainder is left out. Each index list is sorted."""
    if batch_images is not None:
        size = batch_images
        count = n // size if size > 0 else 0
    else:
        count = units if units is not None else 10
        size = n // count if count > 0 else 0
    if count < 1 or size < 4:
        raise ValueError(
            f"probe 'cka': {n} images make {count} minibatch(es) of {size}; need at least one of at least 4 images"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[u * size:(u + 1) * size].sort().values for u in range(count)]


def layer_grams(model: Classifier, split: Split, minibatches: Sequence[Tensor], layers: Sequence[str],
                batch: int, device: torch.device) -> list[list[Tensor]]:
    """Centred Gram matrices ``[u][layer]`` (float64, CPU) of each minibatch's flattened features at each tap.

    A minibatch whose forward passes run out of CUDA memory is recomputed in smaller batches (``with_smaller_batches``);
    the Grams do not depend on the batch size."""
    out: list[list[Tensor]] = []
    with torch.inference_mode(), FeatureTaps(model, layers) as taps:

        def grams_of(idx: Tensor, size: int) -> list[Tensor]:
            feats: dict[str, list[Tensor]] = {name: [] for name in layers}
            for b in split.subset(idx).batches(size, device=device):
                taps.features.clear()
                model(b.x)
                for name in layers:
                    if name not in taps.features:
                        raise ValueError(f"probe 'cka': tap {name} of {model.arch} was not reached by the forward pass")
                    feats[name].append(taps[name].flatten(1))
            grams = []
            for name in layers:
                grams.append(centred_gram(torch.cat(feats[name])).cpu())
                feats[name] = []
            return grams

        for idx in minibatches:
            # later minibatches start from the size that fitted
            grams, batch = with_smaller_batches(partial(grams_of, idx), batch, device, "cka")
            out.append(grams)
    return out


def _layers_of(params: dict[str, Any]) -> list[str]:
    layers = params.get("layers", DEFAULT_LAYERS)
    if isinstance(layers, str) or not layers or not all(isinstance(s, str) for s in layers):
        raise ValueError(f"probe 'cka': layers must be a non-empty list of tap names, got {layers!r}")
    return list(layers)


def _optional_int(params: dict[str, Any], key: str) -> int | None:
    v = params.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
        raise ValueError(f"probe 'cka': {key} must be a positive integer, got {v!r}")
    return v


@PROBES.register("cka")
def cka_probe(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    """Teacher-vs-student CKA at the taps ``layers`` (default F1..F7).

    Units are **minibatches of images**, not images: the evaluation images are shuffled (``seed``, 0) and cut
    into ``units`` (10) disjoint minibatches, or into minibatches of ``batch_images`` images; the bootstrap
    therefore resamples minibatches. Metrics, one value per minibatch, arms = student arms (a row per seed):
    ``cka/<layer>`` = CKA(teacher at layer, student at the same layer) on that minibatch, and ``cka_diag`` =
    their mean over layers. ``estimator``: ``unbiased`` (HSIC_1, default) or ``biased`` (plain linear CKA).
    Extras: ``cka_matrix[arm]`` = the layer-by-layer matrix (rows teacher layers, columns student layers;
    minibatch CKA over all minibatches) averaged over seeds, ``cka_matrix_seeds[arm]`` per seed,
    ``cka_layers``, ``cka_units`` = "minibatches", ``cka_batch_images``, ``cka_estimator``.
    Other params: ``teacher`` (name of the reference model, "teacher"), ``data``, ``batch_size`` (256).
    """
    check_params("cka", params, optional=("layers", "units", "batch_images", "seed", "estimator", "teacher"))
    bs = batch_size("cka", params)
    layers = _layers_of(params)
    estimator = params.get("estimator", "unbiased")
    if estimator not in ESTIMATORS:
        raise ValueError(f"probe 'cka': estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    teacher = require_teacher("cka", bank, params.get("teacher", "teacher"))
    units, batch_images = _optional_int(params, "units"), _optional_int(params, "batch_images")
    if units is not None and batch_images is not None:
        raise ValueError("probe 'cka': give either units or batch_images, not both")
    seed = params.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"probe 'cka': seed must be an integer, got {seed!r}")

    split = bank.eval_split(params.get("data"))
    minibatches = minibatch_indices(len(split), units, batch_images, seed)
    teacher_model = bank.model(teacher)
    t_grams = layer_grams(teacher_model, split, minibatches, layers, bs, bank.device)

    out = Measurements()
    matrices: dict[str, list] = {}
    matrices_seeds: dict[str, list] = {}
    for arm in bank.arms:
        per_layer = np.empty((len(bank.seeds), len(layers), len(minibatches)))
        mats = []
        for s, seed_ in enumerate(bank.seeds):
            s_grams = layer_grams(bank.model(arm, seed_), split, minibatches, layers, bs, bank.device)
            for u, (tg, sg) in enumerate(zip(t_grams, s_grams, strict=True)):
                for i in range(len(layers)):
                    per_layer[s, i, u] = cka_from_grams(tg[i], sg[i], estimator)
            mats.append(cka_matrix(t_grams, s_grams, estimator))
        for i, name in enumerate(layers):
            out.add(f"cka/{name}", arm, per_layer[:, i, :])
        out.add("cka_diag", arm, per_layer.mean(axis=1))
        matrices[arm] = np.mean(mats, axis=0).tolist()
        matrices_seeds[arm] = [m.tolist() for m in mats]
    out.extras.update(
        cka_matrix=matrices,
        cka_matrix_seeds=matrices_seeds,
        cka_layers=layers,
        cka_units="minibatches",
        cka_batch_images=len(minibatches[0]),
        cka_estimator=estimator,
        cka_teacher=teacher,
    )
    return out
