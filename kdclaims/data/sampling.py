"""Seeded subsets of a split's index space: stratified caps and exact per-group compositions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def stratified_indices(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Sorted indices of ``n`` items drawn without replacement, class shares kept.

    Class ``c`` with ``N_c`` of ``N`` items gets ``floor(n·N_c/N)`` draws plus one for the classes with the largest
    remainders until the total is ``n``. All indices when ``n >= N``.
    """
    labels = torch.as_tensor(labels)
    total = len(labels)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= total:
        return torch.arange(total)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    take = exact.floor().long()
    short = n - int(take.sum())
    if short:
        order = torch.argsort(exact - take, descending=True, stable=True)
        take[order[:short]] += 1
    picks = []
    for c, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picks).sort().values


def holdout_indices(labels: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Sorted indices of ``max(1, round(fraction * N))`` of the ``N`` items, class shares kept (a validation
    split carved from training images); none when ``fraction`` is 0."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return torch.zeros(0, dtype=torch.long)
    return stratified_indices(labels, max(1, round(fraction * len(labels))), generator)


def composition_indices(
    groups: Tensor, group_names: Sequence[str], composition: Mapping[str, int], generator: torch.Generator
) -> Tensor:
    """Sorted indices holding exactly ``composition[name]`` items of each named group (without replacement).

    Groups not named get none. Raises ``KeyError`` for an unknown group and ``ValueError`` when a group has fewer
    items than asked.
    """
    picks = []
    for name, count in composition.items():
        if name not in group_names:
            raise KeyError(f"composition names group '{name}'; groups: {list(group_names)}")
        count = int(count)
        if count < 0:
            raise ValueError(f"composition[{name!r}] = {count} must be >= 0")
        members = torch.nonzero(groups == group_names.index(name)).flatten()
        if count > len(members):
            raise ValueError(f"composition asks {count} images of group '{name}' but only {len(members)} exist")
        picks.append(members[torch.randperm(len(members), generator=generator)[:count]])
    if not picks:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(picks).sort().values


def select(
    labels: Tensor,
    groups: Tensor | None,
    group_names: Sequence[str],
    *,
    n: int | None,
    composition: Mapping[str, int] | None,
    generator: torch.Generator,
) -> Tensor | None:
    """Indices for ``composition`` or an ``n`` cap (not both); ``None`` when neither asks for a subset.

    The ``n`` cap is stratified by label, or by (group, label) when there are groups.
    """
    if composition is not None and n is not None:
        raise ValueError("give either 'composition' or 'n', not both")
    if composition is not None:
        if groups is None:
            raise ValueError("'composition' needs a split with groups (a 'domains' list, or a dataset with groups)")
        return composition_indices(groups, group_names, composition, generator)
    if n is not None:
        strata = labels if groups is None else groups * (int(labels.max()) + 1) + labels
        return stratified_indices(strata, int(n), generator)
    return None
