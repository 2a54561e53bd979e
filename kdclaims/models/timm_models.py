"""timm models (``pretrained=False``): anti-aliased ResNets and ``timm/<any timm name>``.

timm is imported inside the builders, so that importing ``kdclaims.models`` stays quick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from kdclaims.models.base import LOGITS, Classifier
from kdclaims.models.common import input_stats, make_pools_deterministic, nhwc_to_nchw, tokens_to_map
from kdclaims.models.resnet import imagenet_resnet_taps
from kdclaims.registries import MODELS

Stats = Sequence[float] | None
Transform = Callable[[Tensor], Tensor]


def _aa_resnet(arch: str, timm_name: str):
    def build(num_classes: int, in_chans: int = 3, mean: Stats = None, std: Stats = None, **kw) -> Classifier:
        import timm
        from timm.layers import BlurPool2d

        mean, std = input_stats(in_chans, mean, std, imagenet=True)
        net = timm.create_model(
            timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, aa_layer=BlurPool2d, **kw
        )
        make_pools_deterministic(net)
        # timm's global_pool flattens: its output is the (B, C) vector ``fc`` consumes
        return Classifier(net, arch=arch, mean=mean, std=std, taps=imagenet_resnet_taps("net.global_pool"))

    build.__name__ = arch
    build.__doc__ = (
        f"Anti-aliased ``{timm_name}`` (Zhang 2019; the paper's ResNet50# of App. C.5): timm's ResNet with a 3x3 "
        "BlurPool2d before every stride-2 step of the stem and the blocks (timm leaves the 1x1 shortcut convs "
        "strided). Taps as ``imagenet_resnet_taps`` (F1 = the stem after its max-pool + blur)."
    )
    return build


resnet18_aa = MODELS.register("resnet18_aa")(_aa_resnet("resnet18_aa", "resnet18"))
resnet50_aa = MODELS.register("resnet50_aa")(_aa_resnet("resnet50_aa", "resnet50"))


# ---- timm/<name>: taps found from the model's feature_info and one dummy forward ----


def _record(net: nn.Module, head: nn.Module, x: Tensor) -> tuple[list[tuple[str, Tensor]], Tensor]:
    """One eval forward; every module's output in order of completion, and the input ``head`` received."""
    outputs: list[tuple[str, Tensor]] = []
    head_in: list[Tensor] = []
    handles = [head.register_forward_pre_hook(lambda _m, inp: head_in.append(inp[0]))]
    for path, mod in net.named_modules():
        if path:

            def hook(_m: nn.Module, _inp: object, out: object, path: str = path) -> None:
                out = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(out, Tensor):
                    outputs.append((path, out))

            handles.append(mod.register_forward_hook(hook))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    if not head_in:
        raise ValueError("the classifier head was not called in the forward pass")
    return outputs, head_in[-1]


def _spatial_transform(shape: torch.Size, chans: int, grid: tuple[int, int]) -> tuple[Transform | None, bool]:
    """How to turn a feature of ``shape`` into (B, C, h, w): (transform, ok)."""
    if len(shape) == 4 and shape[1] == chans:
        return None, True
    if len(shape) == 4 and shape[-1] == chans:
        return nhwc_to_nchw, True
    n_grid = grid[0] * grid[1]
    if len(shape) == 3 and shape[-1] == chans and shape[1] >= n_grid and grid[0] == grid[1]:
        prefix = shape[1] - n_grid
        return (tokens_to_map if prefix == 1 else partial(tokens_to_map, prefix=prefix)), True
    return None, False


def timm_taps(net: nn.Module, image_size: tuple[int, int]) -> tuple[dict[str, str], dict[str, Transform]]:
    """Taps of a timm model, from ``net.feature_info`` and one dummy forward at ``image_size``.

    F1..F5 = five evenly spaced feature_info locations (the last one included; with fewer than five locations,
    F1..Fn only), each turned to (B, C, h, w) (NHWC maps are permuted; token sequences lose their prefix tokens
    and are folded to a square grid). hint = the location at stride 8 (ResNets' second stage), else the middle one.
    cam = the last location with extent >= 2x2, or for class-token-pooled transformers the last block's
    ``norm1``. F6 = penultimate = the output of the last module to return exactly the tensor the classifier
    consumes (a (B, C) vector); F7 = logits.
    """
    info = getattr(net, "feature_info", None)
    if not info:
        raise ValueError(f"timm model {type(net).__name__} has no feature_info; its taps cannot be located")
    info = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    head = net.get_classifier()
    in_chans = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    outputs, head_in = _record(net, head, torch.zeros(1, in_chans, *image_size))
    last_out = {path: out for path, out in outputs}
    mods = dict(net.named_modules())

    spatial: list[tuple[str, Transform | None, tuple[int, ...], int]] = []
    for entry in info:
        path = entry["module"]
        if path not in last_out:
            continue
        grid = (image_size[0] // entry["reduction"], image_size[1] // entry["reduction"])
        tf, ok = _spatial_transform(last_out[path].shape, entry["num_chs"], grid)
        if ok:
            fmap = tf(last_out[path]) if tf else last_out[path]
            spatial.append((path, tf, tuple(fmap.shape[-2:]), entry["reduction"]))
    if not spatial:
        raise ValueError(f"no spatial feature found in timm model {type(net).__name__}'s feature_info")

    n = len(spatial)
    picks = [round(k * (n - 1) / 4) for k in range(5)] if n >= 5 else list(range(n))
    taps: dict[str, str] = {}
    transforms: dict[str, Transform] = {}

    def put(name: str, path: str, tf: Transform | None) -> None:
        taps[name] = "net." + path
        if tf is not None:
            transforms[name] = tf

    for k, i in enumerate(picks, start=1):
        put(f"F{k}", spatial[i][0], spatial[i][1])
    hint = next((s for s in spatial if s[3] == 8), spatial[n // 2])
    put("hint", hint[0], hint[1])
    cam = next((s for s in reversed(spatial) if min(s[2]) >= 2), spatial[-1])
    norm1 = cam[0] + ".norm1"
    if getattr(net, "global_pool", None) == "token" and cam[1] is not None and norm1 in mods:
        cam = (norm1, cam[1])
    put("cam", cam[0], cam[1])

    pen = [path for path, out in outputs if out is head_in and out.ndim == 2 and mods[path] is not head]
    if pen:
        put("F6", pen[-1], None)
        put("penultimate", pen[-1], None)
    taps["F7"] = LOGITS
    return taps, transforms


def timm_builder(name: str) -> Callable[..., Classifier]:
    """Builder for ``timm/<name>``: ``timm.create_model(name, pretrained=False, ...)``, taps from ``timm_taps``.

    ``image_size`` (int) sets the size of the dummy forward that locates the taps (default: the model's
    pretrained_cfg input size); mean/std default to the model's pretrained_cfg statistics.
    """

    def build(
        num_classes: int,
        in_chans: int = 3,
        mean: Stats = None,
        std: Stats = None,
        image_size: int | None = None,
        **kw,
    ) -> Classifier:
        import timm

        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)
        make_pools_deterministic(net)
        cfg = getattr(net, "pretrained_cfg", None) or {}
        if in_chans == 3 and mean is None and std is None and "mean" in cfg and "std" in cfg:
            mean, std = cfg["mean"], cfg["std"]
        mean, std = input_stats(in_chans, mean, std, imagenet=True)
        size = (image_size, image_size) if image_size else tuple(cfg.get("input_size", (3, 224, 224))[-2:])
        taps, transforms = timm_taps(net, size)
        return Classifier(net, arch=f"timm/{name}", mean=mean, std=std, taps=taps, tap_transforms=transforms)

    build.__name__ = f"timm_{name}"
    return build


MODELS.register_prefix("timm/", timm_builder)
