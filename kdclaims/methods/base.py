"""The distiller interface: one small class per method, teacher frozen in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier


class Distiller(nn.Module):
    """Wraps a student (and a frozen teacher) and returns the losses of one method.

    Subclasses implement ``forward_train(x, y, index) -> (student_logits, {loss_name: loss})``; the trainer
    sums the losses. Extra trainable parts (a Hint regressor, CRD heads) are submodules of the distiller, so
    ``trainable_parameters()`` yields them with the student's; the teacher never gets an optimizer and stays
    in eval mode whatever ``train()`` is called with.
    ``needs_index`` tells the trainer to pass each image's index in the training split (CRD memory banks).
    """

    needs_teacher: bool = True
    needs_index: bool = False

    def __init__(self, student: Classifier, teacher: Classifier | None = None):
        super().__init__()
        self.student = student
        # stored outside the module tree: no optimizer, no state_dict entry, no .train() propagation
        object.__setattr__(self, "_teacher", teacher)
        object.__setattr__(self, "_teacher_cache", None)  # a TeacherCache while the trainer allows one
        object.__setattr__(self, "_cache_rows", None)  # the current batch's image indices, during a cached step
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    @property
    def teacher(self) -> Classifier | None:
        return self._teacher

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()
        return self

    def to(self, *args, **kwargs) -> "Distiller":  # keep the teacher on the student's device
        super().to(*args, **kwargs)
        if self._teacher is not None:
            self._teacher.to(*args, **kwargs)
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    @contextlib.contextmanager
    def cached_teacher(self, cache: Any, rows: Tensor | None) -> Iterator[None]:
        """Within the block, ``teacher_forward``/``teacher_taps`` read the teacher's outputs for images ``rows``
        of the training split from ``cache`` (``kdclaims.methods.teacher_cache``) instead of running it on ``x``.
        The trainer uses it only when the batch ``x`` is exactly those images (no augmentation); a method that
        feeds its teacher anything else (mixed or perturbed images) must call ``self.teacher`` itself."""
        object.__setattr__(self, "_teacher_cache", cache)
        object.__setattr__(self, "_cache_rows", rows)
        try:
            yield
        finally:
            object.__setattr__(self, "_teacher_cache", None)
            object.__setattr__(self, "_cache_rows", None)

    @torch.no_grad()
    def teacher_forward(self, x: Tensor) -> Tensor:
        assert self._teacher is not None
        if self._teacher_cache is not None and self._cache_rows is not None and len(x) == len(self._cache_rows):
            return self._teacher_cache.logits_at(self._cache_rows).to(x.device)
        return self._teacher(x)


# Builder signature for METHODS: (student, teacher, train_split, **params) -> Distiller
MethodBuilder = "Callable[[Classifier, Classifier | None, Split], Distiller]"
