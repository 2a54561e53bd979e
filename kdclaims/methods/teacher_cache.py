"""The frozen teacher's outputs over a training split, computed once instead of at every step.

When a student trains on the split's images as they are (no augmentation), the teacher sees the same image every
epoch and, frozen in eval mode, answers the same way: its logits (float32) and the features a method taps
(float16, to halve their memory) are computed once, in order, and looked up by each batch's image indices.
Features whose cache would exceed ``FEATURE_BUDGET`` bytes are not cached and come from the live teacher, so what
is cached depends on the split and the model only, never on the machine. Numerically, a cached logit equals a live
one up to the rounding of a different batch size; a cached feature differs by float16 rounding (relative 2^-11).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from kdclaims.models.base import Classifier, FeatureTaps

FEATURE_BUDGET = 1 << 30  # bytes of float16 features per tap
BATCH = 256


class TeacherCache:
    """Teacher outputs for every image of ``split`` (rows in split order), filled on first request."""

    def __init__(self, teacher: Classifier, x: Tensor, device: torch.device):
        self.teacher, self.x, self.device = teacher, x, torch.device(device)
        self.logits: Tensor | None = None
        self.features: dict[str, Tensor] = {}
        self.too_big: set[str] = set()

    @torch.no_grad()
    def _fill(self, names: list[str]) -> None:
        """Run the teacher over every image once; keep the logits and the features at ``names`` that fit."""
        n = len(self.x)
        names = [m for m in names if m not in self.features and m not in self.too_big]
        logits: list[Tensor] = []
        feats: dict[str, list[Tensor]] = {m: [] for m in names}
        with torch.autocast(device_type=self.device.type, enabled=False), FeatureTaps(self.teacher, names) as taps:
            for start in range(0, n, BATCH):
                out = self.teacher(self.x[start:start + BATCH].to(self.device))
                logits.append(out.float())
                for m in list(feats):
                    f = taps.features[m]
                    if start == 0 and f[0].numel() * n * 2 > FEATURE_BUDGET:
                        self.too_big.add(m)
                        del feats[m]
                    else:
                        feats[m].append(f.to(torch.float16))
        if self.logits is None:
            self.logits = torch.cat(logits)
        self.features.update({m: torch.cat(parts) for m, parts in feats.items()})

    def logits_at(self, index: Tensor) -> Tensor:
        if self.logits is None:
            self._fill([])
        return self.logits[index.to(self.logits.device)]

    def taps_at(self, index: Tensor, names: Iterable[str]) -> dict[str, Tensor] | None:
        """Cached features at ``names`` for these rows, or None when one of them is not cacheable."""
        names = list(names)
        if any(m not in self.features for m in names):
            self._fill(names)
        if any(m in self.too_big for m in names):
            return None
        return {m: self.features[m][index.to(self.features[m].device)] for m in names}
