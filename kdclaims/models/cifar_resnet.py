"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2): a 3x3 stem, three stages of basic blocks, global mean, FC.

``resnet20`` (3 blocks per stage, the paper's fairness setting, Sec. 4.6) and ``resnet8`` (1 block per stage).
Stage widths are ``16, 32, 64`` times ``width``; stages 2 and 3 halve the resolution. Shortcuts that change
shape are a 1x1 conv + BN (option B).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import GlobalAvgPool, input_stats
from kdclaims.registries import MODELS

Stats = Sequence[float] | None


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convs, the first with stride ``stride``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 -> BN -> ReLU, ``layer1..layer3`` of ``blocks`` basic blocks, global mean (``pool``), ``fc``."""

    def __init__(self, blocks: int, num_classes: int, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        chans = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_chans, chans[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.act1 = nn.ReLU()
        cin = chans[0]
        for i, (cout, stride) in enumerate(zip(chans, (1, 2, 2)), start=1):
            stage = [BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            cin = cout
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


# F1 stem, F2/F3 stages 1-2, F4 the first block's inner activation of stage 3, F5 stage 3, F6 pooled, F7 logits.
_TAPS = {
    "F1": "net.act1",
    "F2": "net.layer1",
    "F3": "net.layer2",
    "F4": "net.layer3.0.act1",
    "F5": "net.layer3",
    "F6": "net.pool",
    "F7": LOGITS,
    "penultimate": "net.pool",
    "hint": "net.layer2",
    "cam": "net.layer3",
}


def _build(
    arch: str, blocks: int, num_classes: int, in_chans: int, mean: Stats, std: Stats, width: float
) -> Classifier:
    mean, std = input_stats(in_chans, mean, std, imagenet=False)
    net = CifarResNet(blocks, num_classes, in_chans, width)
    return Classifier(net, arch=arch, mean=mean, std=std, taps=_TAPS)


@MODELS.register("resnet20")
def resnet20(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, width: float = 1.0
) -> Classifier:
    """CIFAR ResNet-20 (3 blocks per stage). Taps: F1 = stem, F2 = ``layer1``, F3 = ``layer2``,
    F4 = ``layer3.0.act1`` (inside the first block of stage 3), F5 = ``layer3``, F6 = penultimate = ``pool``
    (B, 64w), F7 = logits; hint = ``layer2`` (after the second stage, as Appendix A does for ResNets);
    cam = ``layer3``, the last map with extent (8x8 at 32px, 7x7 at 28px)."""
    return _build("resnet20", 3, num_classes, in_chans, mean, std, width)


@MODELS.register("resnet8")
def resnet8(
    num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, width: float = 1.0
) -> Classifier:
    """CIFAR ResNet-8 (1 block per stage). Taps as ``resnet20``."""
    return _build("resnet8", 1, num_classes, in_chans, mean, std, width)
