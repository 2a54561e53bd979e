"""Small CNNs for the smoke and cpu tiers: ``tiny_cnn`` (+ ``_wide``) and the paper's MNIST network (+ variants)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import GlobalAvgPool, input_stats
from kdclaims.registries import MODELS

Stats = Sequence[float] | None


def tiny_cnn_net(num_classes: int, in_chans: int, width: int = 8) -> nn.Sequential:
    """Four 3x3 convs (``w, w, 2w, 2w`` channels, strides 1, 2, 1, 2) + global mean + FC(2w -> 4w) + FC.

    Global pooling makes it work on any input from 8x8 (last map 2x2) to 32x32 (last map 8x8) and beyond.
    """
    c1, c2, h = width, 2 * width, 4 * width
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_chans, c1, 3, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(c1, c1, 3, stride=2, padding=1),
            act2=nn.ReLU(),
            conv3=nn.Conv2d(c1, c2, 3, padding=1),
            act3=nn.ReLU(),
            conv4=nn.Conv2d(c2, c2, 3, stride=2, padding=1),
            act4=nn.ReLU(),
            pool=GlobalAvgPool(),
            fc1=nn.Linear(c2, h),
            act5=nn.ReLU(),
            fc2=nn.Linear(h, num_classes),
        )
    )


def _tiny(arch: str, num_classes: int, in_chans: int, mean: Stats, std: Stats, width: int) -> Classifier:
    """Taps: F1..F4 = ``act1..act4`` (the four conv activations), F5 = ``pool`` (global mean, (B, 2w)),
    F6 = penultimate = ``act5`` (the head's input), F7 = logits; hint = ``act2`` (the middle of the net);
    cam = ``act4``, the last map with extent (2x2 at 8px, 8x8 at 32px)."""
    mean, std = input_stats(in_chans, mean, std, imagenet=False)
    taps = {f"F{i}": f"net.act{i}" for i in range(1, 5)}
    taps |= {"F5": "net.pool", "F6": "net.act5", "F7": LOGITS, "penultimate": "net.act5"}
    taps |= {"hint": "net.act2", "cam": "net.act4"}
    return Classifier(tiny_cnn_net(num_classes, in_chans, width), arch=arch, mean=mean, std=std, taps=taps)


@MODELS.register("tiny_cnn")
def tiny_cnn(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, width: int = 8) -> Classifier:
    """About 5k parameters at width 8 (smoke-tier student). Taps as in ``_tiny``."""
    return _tiny("tiny_cnn", num_classes, in_chans, mean, std, width)


@MODELS.register("tiny_cnn_wide")
def tiny_cnn_wide(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, width: int = 16
) -> Classifier:
    """``tiny_cnn`` at twice the width (about 20k parameters; smoke-tier teacher). Taps as in ``_tiny``."""
    return _tiny("tiny_cnn_wide", num_classes, in_chans, mean, std, width)


def mnist_net_net(
    num_classes: int, in_chans: int, channels: tuple[int, int], hidden: int, image_size: int
) -> nn.Sequential:
    """PyTorch's MNIST example network: Conv3x3(c1) -> ReLU -> Conv3x3(c2) -> ReLU -> MaxPool2 -> Dropout(0.25)
    -> Flatten -> Linear(-> hidden) -> ReLU -> Dropout(0.5) -> Linear. Module names (``conv1``, ``conv2``, ``fc1``,
    ``fc2``) match that example's, so its checkpoints load. The flatten size follows ``image_size`` (one dummy
    forward of the conv part): ``c2 * ((image_size - 4) // 2) ** 2``, 9216 at 28px with ``c2 = 64``."""
    c1, c2 = channels
    convs = OrderedDict(
        conv1=nn.Conv2d(in_chans, c1, 3),
        act1=nn.ReLU(),
        conv2=nn.Conv2d(c1, c2, 3),
        act2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        dropout1=nn.Dropout(0.25),
        flatten=nn.Flatten(1),
    )
    with torch.no_grad():
        n_flat = nn.Sequential(convs)(torch.zeros(1, in_chans, image_size, image_size)).shape[1]
    head = OrderedDict(
        fc1=nn.Linear(n_flat, hidden),
        act3=nn.ReLU(),
        dropout2=nn.Dropout(0.5),
        fc2=nn.Linear(hidden, num_classes),
    )
    return nn.Sequential(convs | head)


def _mnist(
    arch: str,
    num_classes: int,
    in_chans: int,
    mean: Stats,
    std: Stats,
    channels: tuple[int, int],
    hidden: int,
    image_size: int,
) -> Classifier:
    """Taps (consecutive distinct locations): F1 = ``conv1`` (pre-activation), F2 = ``act1``, F3 = ``conv2``
    (pre-activation), F4 = ``act2``, F5 = ``pool``, F6 = penultimate = ``dropout2`` (the FC(hidden) activation
    the head consumes; equal to ``act3`` in eval mode), F7 = logits. hint = ``act2``: Appendix A's Conv(64) layer
    after its ReLU (non-negative, like the Hint regressor's ReLU output). cam = ``pool``: the last layer with
    spatial extent (12x12 at 28px, 2x2 at 8px)."""
    mean, std = input_stats(in_chans, mean, std, imagenet=False)
    taps = {"F1": "net.conv1", "F2": "net.act1", "F3": "net.conv2", "F4": "net.act2", "F5": "net.pool"}
    taps |= {"F6": "net.dropout2", "F7": LOGITS, "penultimate": "net.dropout2", "hint": "net.act2", "cam": "net.pool"}
    net = mnist_net_net(num_classes, in_chans, channels, hidden, image_size)
    return Classifier(net, arch=arch, mean=mean, std=std, taps=taps)


@MODELS.register("mnist_net")
def mnist_net(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, image_size: int = 28
) -> Classifier:
    """Appendix A's MNIST network: Conv(32) -> Conv(64) -> MaxPool -> FC(128) -> FC. Taps as in ``_mnist``."""
    return _mnist("mnist_net", num_classes, in_chans, mean, std, (32, 64), 128, image_size)


@MODELS.register("mnist_net_small")
def mnist_net_small(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, image_size: int = 28
) -> Classifier:
    """The MNIST network at half width: Conv(16) -> Conv(32) -> MaxPool -> FC(128) -> FC (cpu-tier student)."""
    return _mnist("mnist_net_small", num_classes, in_chans, mean, std, (16, 32), 128, image_size)


@MODELS.register("mnist_net_wide")
def mnist_net_wide(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, image_size: int = 28
) -> Classifier:
    """The MNIST network at double width: Conv(64) -> Conv(128) -> MaxPool -> FC(128) -> FC (cpu-tier teacher)."""
    return _mnist("mnist_net_wide", num_classes, in_chans, mean, std, (64, 128), 128, image_size)
