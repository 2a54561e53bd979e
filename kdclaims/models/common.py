"""Helpers shared by the model builders: input statistics, first-conv surgery, deterministic pooling, tap transforms."""

from __future__ import annotations

from collections.abc import Sequence
from math import isqrt

import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = 0.5

# the tap names every registered model exposes
TAP_NAMES = tuple(f"F{i}" for i in range(1, 8)) + ("penultimate", "hint", "cam")


def input_stats(
    in_chans: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    imagenet: bool,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` for ``in_chans`` channels.

    Defaults: ImageNet statistics for ImageNet architectures (for ``in_chans != 3`` the average of the three
    values, repeated), ``0.5`` for every channel otherwise. Given values must have ``in_chans`` entries.
    """
    if mean is None or std is None:
        if imagenet and in_chans == 3:
            dm, ds = IMAGENET_MEAN, IMAGENET_STD
        elif imagenet:
            dm = (sum(IMAGENET_MEAN) / 3,) * in_chans
            ds = (sum(IMAGENET_STD) / 3,) * in_chans
        else:
            dm, ds = (HALF,) * in_chans, (HALF,) * in_chans
        mean = dm if mean is None else mean
        std = ds if std is None else std
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean/std need {in_chans} values (in_chans), got mean={mean}, std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std}")
    return mean, std


def replace_first_conv(net: nn.Module, in_chans: int) -> None:
    """Swap the first ``Conv2d`` of ``net`` (in module order) for a fresh one reading ``in_chans`` channels.

    Kernel, stride, padding, groups, bias and output channels are kept; the new weights are freshly initialised.
    A no-op when the first conv already reads ``in_chans`` channels.
    """
    for path, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d):
            break
    else:
        raise ValueError("no Conv2d in this network")
    if conv.in_channels == in_chans:
        return
    if conv.groups != 1:
        raise ValueError(f"first conv '{path}' is grouped; cannot change its input channels")
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent_path, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent_path) if parent_path else net, leaf, new)


class DeterministicAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d`` with the same output, computed by ops whose CUDA backward is deterministic.

    Under ``torch.use_deterministic_algorithms(True)`` the CUDA backward of a true adaptive pool raises (e.g.
    VGG's 7x7 pool, even on a 7x7 input; a 1x1 output is already a mean inside torch). Cases: output size
    equal to the input's -> identity; ``1x1`` -> ``x.mean((2, 3))``; input an exact multiple of the output ->
    ``avg_pool2d`` with kernel = stride = ratio; otherwise the adaptive op itself (which still raises there).
    """

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        oh, ow = _pair(self.output_size, (h, w))
        if (oh, ow) == (h, w):
            return x
        if (oh, ow) == (1, 1):
            return x.mean((-2, -1), keepdim=True)
        if h % oh == 0 and w % ow == 0:
            return F.avg_pool2d(x, kernel_size=(h // oh, w // ow))
        return F.adaptive_avg_pool2d(x, (oh, ow))


def _pair(size: object, like: tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    a, b = size  # type: ignore[misc]
    return (like[0] if a is None else a), (like[1] if b is None else b)


def make_pools_deterministic(net: nn.Module) -> None:
    """Replace every ``nn.AdaptiveAvgPool2d`` in ``net`` by ``DeterministicAdaptiveAvgPool2d`` (no state changes)."""
    for path, mod in list(net.named_modules()):
        if type(mod) is nn.AdaptiveAvgPool2d:
            parent_path, _, leaf = path.rpartition(".")
            parent = net.get_submodule(parent_path) if parent_path else net
            setattr(parent, leaf, DeterministicAdaptiveAvgPool2d(mod.output_size))


class GlobalAvgPool(nn.Module):
    """``(B, C, H, W) -> (B, C)``: the spatial mean (deterministic on CUDA, unlike ``AdaptiveAvgPool2d``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((-2, -1))


# ---- tap transforms (module-level functions: models stay picklable and deep-copyable) ----


def flatten(x: Tensor) -> Tensor:
    """``(B, C, 1, 1) -> (B, C)``."""
    return x.flatten(1)


def nhwc_to_nchw(x: Tensor) -> Tensor:
    """``(B, H, W, C) -> (B, C, H, W)``."""
    return x.permute(0, 3, 1, 2)


def class_token(x: Tensor) -> Tensor:
    """``(B, 1 + N, C) -> (B, C)``: the class token."""
    return x[:, 0]


def tokens_to_map(x: Tensor, prefix: int = 1) -> Tensor:
    """``(B, prefix + h*w, C) -> (B, C, h, w)`` with ``h = w = sqrt(N)``: drop the prefix tokens, fold the grid."""
    x = x[:, prefix:]
    n = x.shape[1]
    side = isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
