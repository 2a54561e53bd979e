"""Data splits: images as float tensors in [0, 1] (N, C, H, W), integer labels, optional group ids.

Models carry their own normalisation (see ``kdclaims.models.base.Classifier``), so every split yields
unnormalised pixels; attacks and augmentations work in that space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor


class Batch(NamedTuple):
    x: Tensor  # (B, C, H, W) float in [0, 1]
    y: Tensor  # (B,) int64
    index: Tensor  # (B,) int64, position of each image in its split (CRD memory banks need it)


@dataclass
class Split:
    """A data split held in memory as tensors.

    ``groups`` (optional) gives each image a group or domain id named by ``group_names``;
    ``mean``/``std`` are the per-channel statistics a model trained on it normalises with.
    """

    name: str
    x: Tensor
    y: Tensor
    num_classes: int
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    groups: Tensor | None = None
    group_names: list[str] = field(default_factory=list)
    meta: dict[str, Tensor] = field(default_factory=dict)  # extra per-image tensors, e.g. a cue-conflict texture label

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"split {self.name}: x must be (N, C, H, W), got {tuple(self.x.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"split {self.name}: {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x.shape[-1])

    @property
    def labels(self) -> Tensor:
        return self.y

    def subset(self, index: Tensor | list[int], name: str | None = None) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            name=name or self.name,
            x=self.x[index],
            y=self.y[index],
            groups=None if self.groups is None else self.groups[index],
            meta={k: v[index] for k, v in self.meta.items()},
        )

    def sample(self, n: int | None, seed: int) -> "Split":
        """A seeded random subset of ``n`` images (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)

    def group(self, name: str) -> "Split":
        """The images of one group or domain."""
        if self.groups is None or name not in self.group_names:
            raise KeyError(f"split {self.name} has no group '{name}'; groups: {self.group_names}")
        gid = self.group_names.index(name)
        return self.subset(torch.nonzero(self.groups == gid).flatten(), name=f"{self.name}/{name}")

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) == 0:
                break
            yield Batch(self.x[idx].to(device, non_blocking=True), self.y[idx].to(device), idx.to(device))

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)
