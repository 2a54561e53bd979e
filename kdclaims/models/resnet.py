"""torchvision ImageNet ResNets (``weights=None``; weights come from local files, ``kdclaims.models.weights``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import flatten, input_stats, make_pools_deterministic, replace_first_conv
from kdclaims.registries import MODELS

Stats = Sequence[float] | None


def imagenet_resnet_taps(pool: str) -> dict[str, str]:
    """The paper's seven ResNet locations (Sec. 4.3 Fig 4d, Sec. 5), as paths inside the wrapper.

    F1 = stem after the max-pool (56x56x64 at 224px), F2..F5 = ``layer1..layer4``, F6 = penultimate = the pooled
    feature at ``pool``, F7 = logits; hint = ``layer2`` (28x28, Appendix A); cam = ``layer4`` (7x7 at 224px).
    Shared by torchvision's and timm's ResNets, which use the same stage names.
    """
    taps = {"F1": "net.maxpool"} | {f"F{i}": f"net.layer{i - 1}" for i in range(2, 6)}
    return taps | {"F6": pool, "F7": LOGITS, "penultimate": pool, "hint": "net.layer2", "cam": "net.layer4"}


def _tv_resnet(arch: str, ctor_name: str):
    def build(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, **kw) -> Classifier:
        mean, std = input_stats(in_chans, mean, std, imagenet=True)
        import torchvision.models as tvm  # imported when a model is built: a run that only reads caches skips it

        net = getattr(tvm, ctor_name)(weights=None, num_classes=num_classes, **kw)
        replace_first_conv(net, in_chans)
        make_pools_deterministic(net)
        taps = imagenet_resnet_taps("net.avgpool")
        # avgpool returns (B, C, 1, 1); the head consumes it flattened
        transforms = {"F6": flatten, "penultimate": flatten}
        return Classifier(net, arch=arch, mean=mean, std=std, taps=taps, tap_transforms=transforms)

    build.__name__ = arch
    build.__doc__ = f"torchvision ``{arch}`` (weights=None); taps: ``imagenet_resnet_taps``; ``kw`` go to torchvision."
    return build


resnet18 = MODELS.register("resnet18")(_tv_resnet("resnet18", "resnet18"))
resnet50 = MODELS.register("resnet50")(_tv_resnet("resnet50", "resnet50"))
