"""The 16 entry-level categories of the model-vs-human benchmark and their ImageNet class indices.

Index lists from bethgelab/model-vs-human, ``modelvshuman/helper/human_categories.py`` (class
``HumanCategories``, attributes ``<category>_indices``; identical at commits 2921634 and 3723ece). A 1000-way
softmax becomes a 16-way score by the mean probability over each category's indices (the toolbox's
``ImageNetProbabilitiesTo16ClassesMapping`` with its default ``np.mean`` aggregation); the decision is the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IMAGENET16_INDICES: dict[str, list[int]] = {
    "airplane": [404],
    "bear": [294, 295, 296, 297],
    "bicycle": [444, 671],
    "bird": [
        8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93, 94, 95,
        96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145,
    ],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286],
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [
        152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172,
        173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 193, 194,
        195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216,
        217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238,
        239, 240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259, 261, 262, 263,
        265, 266, 267, 268,
    ],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}

CATEGORIES: list[str] = sorted(IMAGENET16_INDICES)  # index i of a 16-way label = CATEGORIES[i]


def probabilities_to_categories(probs: Tensor, index_lists: Sequence[Sequence[int]]) -> Tensor:
    """``(B, C)`` class probabilities -> ``(B, K)``: ``out[b, k] = mean_{c in index_lists[k]} probs[b, c]``."""
    if probs.ndim != 2:
        raise ValueError(f"expected (B, C) probabilities, got shape {tuple(probs.shape)}")
    n_classes = probs.shape[1]
    cols = []
    for k, idx in enumerate(index_lists):
        idx = list(idx)
        if not idx:
            raise ValueError(f"category {k} has no class indices")
        if min(idx) < 0 or max(idx) >= n_classes:
            raise ValueError(f"category {k}: class indices {idx} out of range for {n_classes} classes")
        cols.append(probs[:, torch.as_tensor(idx, device=probs.device)].mean(1))
    return torch.stack(cols, 1)


def probabilities_to_16(probs_1000: Tensor) -> Tensor:
    """``(B, 1000)`` ImageNet softmax -> ``(B, 16)`` mean probability per category, columns in ``CATEGORIES`` order."""
    if probs_1000.ndim != 2 or probs_1000.shape[1] != 1000:
        raise ValueError(f"expected (B, 1000) ImageNet probabilities, got shape {tuple(probs_1000.shape)}")
    return probabilities_to_categories(probs_1000, [IMAGENET16_INDICES[c] for c in CATEGORIES])
