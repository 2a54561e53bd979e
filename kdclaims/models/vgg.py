"""torchvision VGGs (``weights=None``): ``vgg11``, ``vgg11_bn``, ``vgg19``, ``vgg19_bn``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import input_stats, make_pools_deterministic, replace_first_conv
from kdclaims.registries import MODELS

Stats = Sequence[float] | None

# Appendix A: Hint after the 4th conv (VGG11) / the 7th conv (VGG19), both 56x56 at 224px
HINT_CONV = {"vgg11": 4, "vgg11_bn": 4, "vgg19": 7, "vgg19_bn": 7}


def vgg_taps(features: nn.Sequential, hint_conv: int) -> dict[str, str]:
    """F1..F5 = the five max-pools closing the conv stages (112, 56, 28, 14, 7 px at 224px input),
    F6 = penultimate = ``classifier.5`` (the 4096-d vector the last Linear consumes; the dropout after the second
    FC-ReLU, so in eval mode that ReLU's output), F7 = logits; hint = the ReLU after conv number ``hint_conv``;
    cam = the last max-pool (7x7 at 224px; pytorch_grad_cam's usual VGG target)."""
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    if len(pools) != 5:
        raise ValueError(f"expected 5 max-pools in a VGG, found {len(pools)}")
    hint = next(i for i in range(convs[hint_conv - 1], len(features)) if isinstance(features[i], nn.ReLU))
    taps = {f"F{k}": f"net.features.{i}" for k, i in enumerate(pools, start=1)}
    taps |= {"F6": "net.classifier.5", "F7": LOGITS, "penultimate": "net.classifier.5"}
    return taps | {"hint": f"net.features.{hint}", "cam": f"net.features.{pools[-1]}"}


def _tv_vgg(arch: str, ctor_name: str):
    def build(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, **kw) -> Classifier:
        mean, std = input_stats(in_chans, mean, std, imagenet=True)
        import torchvision.models as tvm  # imported when a model is built: a run that only reads caches skips it

        net = getattr(tvm, ctor_name)(weights=None, num_classes=num_classes, **kw)
        replace_first_conv(net, in_chans)
        make_pools_deterministic(net)
        return Classifier(net, arch=arch, mean=mean, std=std, taps=vgg_taps(net.features, HINT_CONV[arch]))

    build.__name__ = arch
    build.__doc__ = f"torchvision ``{arch}`` (weights=None); taps as ``vgg_taps``; ``kw`` go to torchvision."
    return build


vgg11 = MODELS.register("vgg11")(_tv_vgg("vgg11", "vgg11"))
vgg11_bn = MODELS.register("vgg11_bn")(_tv_vgg("vgg11_bn", "vgg11_bn"))
vgg19 = MODELS.register("vgg19")(_tv_vgg("vgg19", "vgg19"))
vgg19_bn = MODELS.register("vgg19_bn")(_tv_vgg("vgg19_bn", "vgg19_bn"))
