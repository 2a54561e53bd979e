"""Shape vs texture bias on cue-conflict images (§C.3), as the model-vs-human toolbox defines it.

Each image has a shape category (``split.y``) and a texture category (``split.meta["texture"]``); images whose
two categories agree carry no conflict and are dropped. A model's decision is mapped to the categories, and

    hit_i = 1 if decision_i == shape_i,  0 if decision_i == texture_i,  NaN otherwise,

so the NaN-aware mean over images, ``#shape / (#shape + #texture)``, is the shape bias.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdclaims.models.base import Classifier
from kdclaims.probes.accuracy import collect, predict_logits
from kdclaims.probes.base import Measurements, ModelBank
from kdclaims.probes.common import batch_size, check_params
from kdclaims.probes.imagenet16 import CATEGORIES, probabilities_to_16, probabilities_to_categories
from kdclaims.registries import PROBES

TEXTURE_KEY = "texture"


def conflict_mask(shape: Tensor, texture: Tensor) -> Tensor:
    """True where the shape and texture categories differ (the images that count)."""
    return shape != texture


def shape_hits(decision: Tensor, shape: Tensor, texture: Tensor) -> np.ndarray:
    """Per image: 1.0 if ``decision == shape``, 0.0 if ``decision == texture``, NaN otherwise (float64 (N,)).

    Every image must be a cue conflict (``shape != texture``); drop the others first (``conflict_mask``).
    """
    decision, shape, texture = decision.cpu(), shape.cpu(), texture.cpu()
    if bool((shape == texture).any()):
        raise ValueError("shape_hits: some images have equal shape and texture categories; drop them first")
    out = np.full(len(decision), np.nan)
    out[(decision == texture).numpy()] = 0.0
    out[(decision == shape).numpy()] = 1.0
    return out


def shape_bias(hits: np.ndarray) -> float:
    """``#shape / (#shape + #texture)`` = NaN-aware mean of ``shape_hits`` (NaN if no image got either)."""
    hits = np.asarray(hits, dtype=np.float64)
    decided = ~np.isnan(hits)
    return float(hits[decided].mean()) if decided.any() else float("nan")


def decision_function(mapping: Any) -> Callable[[Tensor], Tensor]:
    """Logits ``(B, C)`` -> decision indices ``(B,)``.

    - ``None``: the 16 model-vs-human categories (mean softmax over each one's ImageNet indices, argmax);
      decisions index the sorted category names.
    - ``"identity"``: argmax over the model's own classes.
    - ``{name: [class indices]}``: mean softmax over each entry's indices, argmax; decision ``k`` is the
      ``k``-th entry in the mapping's own (YAML) order.
    """
    if mapping is None:
        return lambda logits: probabilities_to_16(logits.softmax(1)).argmax(1)
    if mapping == "identity":
        return lambda logits: logits.argmax(1)
    if isinstance(mapping, dict) and mapping and all(
        isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        for v in mapping.values()
    ):
        lists = [list(v) for v in mapping.values()]
        return lambda logits: probabilities_to_categories(logits.softmax(1), lists).argmax(1)
    raise ValueError(
        "probe 'shape_bias': mapping must be absent (16 ImageNet categories), 'identity', or "
        f"{{name: [class indices]}} with non-empty integer lists; got {mapping!r}"
    )


def _decision_width(mapping: Any, n_classes: int) -> int:
    """How many decisions a mapping yields for a model with ``n_classes`` outputs."""
    if mapping is None:
        return len(CATEGORIES)
    return n_classes if mapping == "identity" else len(mapping)


@PROBES.register("shape_bias")
def shape_bias_probe(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    """Metric ``shape_hit`` per cue-conflict image (1 shape, 0 texture, NaN neither); its NaN-aware mean is
    the shape bias. Images with equal shape and texture labels are dropped. Arms: student arms (rows per
    seed) and teachers (one row). ``extras["shape_bias_images"]`` counts the conflict images kept.

    Params: ``data`` (split for ``bank.eval_split``; needs ``meta["texture"]``), ``mapping`` (see
    ``decision_function``; labels live in that mapping's index space), ``batch_size`` (256).
    """
    check_params("shape_bias", params, optional=("mapping",))
    bs = batch_size("shape_bias", params)
    decide = decision_function(params.get("mapping"))
    split = bank.eval_split(params.get("data"))
    if TEXTURE_KEY not in split.meta:
        raise ValueError(
            f"probe 'shape_bias': split {split.name} has no meta['{TEXTURE_KEY}'] (texture category per image); "
            "use a cue-conflict dataset"
        )
    keep = conflict_mask(split.y, split.meta[TEXTURE_KEY])
    if not bool(keep.any()):
        raise ValueError(f"probe 'shape_bias': split {split.name} has no cue-conflict image (shape != texture)")
    split = split.subset(torch.nonzero(keep).flatten())
    shape, texture = split.y, split.meta[TEXTURE_KEY]

    top_label = int(torch.maximum(shape, texture).max())

    def hits(model: Classifier) -> dict[str, np.ndarray]:
        logits = predict_logits(model, split, bs, bank.device, "shape_bias")
        width = _decision_width(params.get("mapping"), logits.shape[1])
        if top_label >= width or int(torch.minimum(shape, texture).min()) < 0:
            raise ValueError(
                f"probe 'shape_bias': labels of split {split.name} reach {top_label}, outside the {width} "
                f"decisions of mapping {params.get('mapping')!r}"
            )
        with torch.inference_mode():
            return {"shape_hit": shape_hits(decide(logits), shape, texture)}

    out = collect(bank, hits)
    out.extras["shape_bias_images"] = len(split)
    return out
