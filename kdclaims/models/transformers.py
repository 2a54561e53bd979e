"""torchvision vision transformers (``weights=None``): ``vit_b_32``, ``swin_t``, ``swin_b``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import (
    class_token,
    input_stats,
    make_pools_deterministic,
    nhwc_to_nchw,
    replace_first_conv,
    tokens_to_map,
)
from kdclaims.registries import MODELS

Stats = Sequence[float] | None


def vit_taps(num_layers: int) -> tuple[dict[str, str], dict[str, Callable]]:
    """Taps of a torchvision ViT with ``num_layers`` encoder blocks (12 for ViT-B/32, which gives blocks 1, 4, 6, 9).

    F1..F4 = the outputs of blocks ``round(k * L / 5) - 1`` (k = 1..4), F5 = hint = the encoder output (after its
    final LayerNorm; Appendix A's ViT Hint layer), each with the class token dropped and the 49 patch tokens
    folded into a (B, 768, 7, 7) map at 224px; F6 = penultimate = the class token of the encoder output (what
    ``heads`` consumes); F7 = logits. cam = the first LayerNorm of the last block, folded the same way: the
    gradient of the logits reaches patch tokens there, whereas at the encoder output only the class token has
    one (pytorch_grad_cam's usual ViT target). Pass ``tap_transforms["cam"]`` to Grad-CAM as its reshape.
    """
    block = "net.encoder.layers.encoder_layer_{}"
    taps = {f"F{k}": block.format(round(k * num_layers / 5) - 1) for k in range(1, 5)}
    taps |= {"F5": "net.encoder", "hint": "net.encoder", "F6": "net.encoder", "penultimate": "net.encoder"}
    taps |= {"F7": LOGITS, "cam": block.format(num_layers - 1) + ".ln_1"}
    transforms = {name: tokens_to_map for name in ("F1", "F2", "F3", "F4", "F5", "hint", "cam")}
    transforms |= {"F6": class_token, "penultimate": class_token}
    return taps, transforms


def swin_taps() -> tuple[dict[str, str], dict[str, Callable]]:
    """Taps of a torchvision Swin: F1..F4 = the four stages ``features.1/3/5/7`` (NHWC, turned to NCHW:
    56, 28, 14, 7 px at 224px), F5 = the final norm's output, taken after the model's own permute to NCHW
    (``net.permute``), F6 = penultimate = the pooled, flattened feature (``net.flatten``), F7 = logits;
    hint = stage 2 (``features.3``, 28x28, Appendix A); cam = F5 (7x7 at 224px)."""
    taps = {f"F{k}": f"net.features.{i}" for k, i in enumerate((1, 3, 5, 7), start=1)}
    taps |= {"F5": "net.permute", "F6": "net.flatten", "F7": LOGITS, "penultimate": "net.flatten"}
    taps |= {"hint": "net.features.3", "cam": "net.permute"}
    transforms = {name: nhwc_to_nchw for name in ("F1", "F2", "F3", "F4", "hint")}
    return taps, transforms


def _build(arch: str, ctor_name: str, taps_of: Callable[[nn.Module], tuple[dict, dict]]):
    def build(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, **kw) -> Classifier:
        mean, std = input_stats(in_chans, mean, std, imagenet=True)
        import torchvision.models as tvm  # imported when a model is built: a run that only reads caches skips it

        net = getattr(tvm, ctor_name)(weights=None, num_classes=num_classes, **kw)
        replace_first_conv(net, in_chans)
        make_pools_deterministic(net)
        taps, transforms = taps_of(net)
        return Classifier(net, arch=arch, mean=mean, std=std, taps=taps, tap_transforms=transforms)

    build.__name__ = arch
    build.__doc__ = f"torchvision ``{arch}`` (weights=None); ``kw`` go to torchvision (e.g. ``image_size`` for ViT)."
    return build


def _vit(net: nn.Module) -> tuple[dict, dict]:
    return vit_taps(len(net.encoder.layers))


def _swin(_net: nn.Module) -> tuple[dict, dict]:
    return swin_taps()


vit_b_32 = MODELS.register("vit_b_32")(_build("vit_b_32", "vit_b_32", _vit))
swin_t = MODELS.register("swin_t")(_build("swin_t", "swin_t", _swin))
swin_b = MODELS.register("swin_b")(_build("swin_b", "swin_b", _swin))
