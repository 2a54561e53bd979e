"""CIFAR-100 teachers and students of the NeurIPS version's Table 2, in the CIFAR forms of the distillation
literature (the zoo of CRD's release, Tian et al. 2020), written here: timm has none of them in CIFAR form.

- ``wrn_40_2``: wide ResNet (Zagoruyko & Komodakis 2016), depth 40, width 2: a 3x3 stem of 16 channels, three groups
  of 6 pre-activation basic blocks of 32, 64, 128 channels (strides 1, 2, 2), BN-ReLU, global mean, FC.
- ``vgg8_cifar``, ``vgg13_cifar``: five blocks of 3x3 conv-BN-ReLU (1 or 2 convs each) of 64, 128, 256, 512, 512
  channels with a 2x2 max-pool after each of the first four, global mean, one FC.
- ``shufflenet_v1``: ShuffleNet v1 (Zhang et al. 2018), 3 groups, a 1x1 stem of 24 channels, stages of 4, 8, 4
  units with 240, 480, 960 channels (each stage starts at stride 2), global mean, FC.

Table 2's third pair (ResNet50 -> MobileNetV2) uses timm's ``timm/resnet50`` and ``timm/mobilenetv2_100``
(ImageNet forms, not these CIFAR forms). Taps per model: F1 stem, F2-F3 the first two stages, F4 inside the last
stage, F5 the last stage, F6 = penultimate (the pooled vector), F7 logits; hint = F3; cam = F5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import GlobalAvgPool, input_stats
from kdclaims.registries import MODELS

Stats = Sequence[float] | None
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _classifier(net: nn.Module, arch: str, in_chans: int, mean: Stats, std: Stats, taps: dict[str, str]) -> Classifier:
    if in_chans == 3 and mean is None and std is None:
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    mean, std = input_stats(in_chans, mean, std, imagenet=False)
    return Classifier(net, arch=arch, mean=mean, std=std, taps=taps)


def _taps(stem: str, s1: str, s2: str, inner: str, s3: str) -> dict[str, str]:
    return {"F1": f"net.{stem}", "F2": f"net.{s1}", "F3": f"net.{s2}", "F4": f"net.{inner}", "F5": f"net.{s3}",
            "F6": "net.pool", "F7": LOGITS, "penultimate": "net.pool", "hint": f"net.{s2}", "cam": f"net.{s3}"}


# ------------------------------------------------------------------------------------------------ wide ResNet
class PreActBlock(nn.Module):
    """``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``; the shortcut is a strided 1x1 conv of the activated
    input when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(a))))
        return out + (x if self.short is None else self.short(a))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_chans: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n + 4, got {depth}")
        n, widths = (depth - 4) // 6, [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        cin = 16
        for i, (w, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            setattr(self, f"block{i}", nn.Sequential(*[PreActBlock(cin if b == 0 else w, w, stride if b == 0 else 1)
                                                       for b in range(n)]))
            cin = w
        self.bn, self.act = nn.BatchNorm2d(cin), nn.ReLU()
        self.pool, self.fc = GlobalAvgPool(), nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(self.act(self.bn(x))))


@MODELS.register("wrn_40_2")
def wrn_40_2(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None) -> Classifier:
    """WRN-40-2 (2.2M parameters at 100 classes). cam/F5 = the final BN-ReLU (128, 8, 8) at 32 px."""
    return _classifier(WideResNet(40, 2, num_classes, in_chans), "wrn_40_2", in_chans, mean, std,
                       _taps("conv1", "block1", "block2", "block3.0.act2", "act"))


# ------------------------------------------------------------------------------------------------ VGG (CIFAR)
class CifarVGG(nn.Module):
    def __init__(self, convs: int, num_classes: int, in_chans: int):
        super().__init__()
        cin = in_chans
        for i, w in enumerate((64, 128, 256, 512, 512)):
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{i}", nn.Sequential(*layers))
        self.down = nn.MaxPool2d(2)
        self.pool, self.fc = GlobalAvgPool(), nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(4):
            x = self.down(getattr(self, f"block{i}")(x))
        return self.fc(self.pool(self.block4(x)))


def _vgg(arch: str, convs: int, num_classes: int, in_chans: int, mean: Stats, std: Stats) -> Classifier:
    inner = f"block4.{3 * convs - 4}"  # the ReLU before the last conv of block 4 (the block's only ReLU for vgg8)
    return _classifier(CifarVGG(convs, num_classes, in_chans), arch, in_chans, mean, std,
                       _taps("block0", "block1", "block2", inner if convs > 1 else "block3", "block4"))


@MODELS.register("vgg8_cifar")
def vgg8_cifar(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None) -> Classifier:
    """CIFAR VGG-8 (one conv per block; F4 = block 3). cam/F5 = block 4 (512, 2, 2) at 32 px."""
    return _vgg("vgg8_cifar", 1, num_classes, in_chans, mean, std)


@MODELS.register("vgg13_cifar")
def vgg13_cifar(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None) -> Classifier:
    """CIFAR VGG-13 (two convs per block; F4 = the ReLU after block 4's first conv). cam/F5 = block 4."""
    return _vgg("vgg13_cifar", 2, num_classes, in_chans, mean, std)


# ------------------------------------------------------------------------------------------------ ShuffleNet v1
def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(B, g*c, H, W) -> interleave the groups: channel ``i*c + j`` moves to ``j*g + i``."""
    b, ch, h, w = x.shape
    return x.view(b, groups, ch // groups, h, w).transpose(1, 2).reshape(b, ch, h, w)


class ShuffleUnit(nn.Module):
    """1x1 group conv -> shuffle -> 3x3 depthwise (stride) -> 1x1 group conv; added to the input (stride 1) or
    concatenated with its 3x3 average pool (stride 2); ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        mid, g1 = cout // 4, 1 if cin == 24 else groups
        self.stride, self.groups = stride, g1
        extra = cout - cin if stride == 2 else cout
        self.conv1 = nn.Sequential(nn.Conv2d(cin, mid, 1, groups=g1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.conv3 = nn.Sequential(nn.Conv2d(mid, extra, 1, groups=groups, bias=False), nn.BatchNorm2d(extra))
        self.short = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(channel_shuffle(self.conv1(x), self.groups)))
        return self.act(torch.cat([out, self.short(x)], 1) if self.short is not None else out + x)


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, groups: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        cin = 24
        for i, (w, n) in enumerate(zip((240, 480, 960), (4, 8, 4)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(*[ShuffleUnit(cin if b == 0 else w, w, 2 if b == 0 else 1,
                                                                   groups) for b in range(n)]))
            cin = w
        self.pool, self.fc = GlobalAvgPool(), nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(self.stem(x))))))


@MODELS.register("shufflenet_v1")
def shufflenet_v1(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None) -> Classifier:
    """CIFAR ShuffleNet v1, 3 groups. F1 stem (24, 32, 32), F2 layer1 (240, 16, 16), F3 = hint layer2
    (480, 8, 8), F4 layer3's first unit, F5 = cam layer3 (960, 4, 4) at 32 px."""
    return _classifier(ShuffleNetV1(num_classes, in_chans), "shufflenet_v1", in_chans, mean, std,
                       _taps("stem", "layer1", "layer2", "layer3.0", "layer3"))
