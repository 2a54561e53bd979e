"""Grad-CAM maps, batched in torch, and the same maps through the ``pytorch_grad_cam`` package.

For an image, a class ``c`` with score ``z_c`` and a layer with activation ``A`` (K channels, h x w):

    w_k = (1 / hw) * sum_ij dz_c / dA_kij
    cam = ReLU(sum_k w_k A_k)

then, as ``pytorch_grad_cam`` (1.5) does: min-max normalise at the layer's resolution,
``m <- (m - min m) / (1e-7 + max(m - min m))``, resize bilinearly (half-pixel centres, as cv2's INTER_LINEAR)
to the input size, and min-max normalise again with the same formula. An all-zero map stays all zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.models.base import LOGITS, Classifier

EPS = 1e-7  # the package's epsilon in its min-max scaling
Transform = Callable[[Tensor], Tensor]


def minmax(cam: Tensor) -> Tensor:
    """Per map: ``(m - min m) / (1e-7 + max(m - min m))`` over the last two axes."""
    flat = cam.flatten(-2)
    flat = flat - flat.amin(-1, keepdim=True)
    flat = flat / (EPS + flat.amax(-1, keepdim=True))
    return flat.view_as(cam)


def _first(out: object) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out  # type: ignore[return-value]


def gradcam_torch(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    target: Tensor,
    out_size: tuple[int, int] | None = None,
    transform: Transform | None = None,
) -> Tensor:
    """Grad-CAM maps ``(B, H, W)`` of classes ``target`` (B,) at ``module``'s output, resized to ``out_size``.

    ``out_size`` defaults to the input's ``(H, W)``. ``transform`` reshapes the module's output and its gradient
    alike (e.g. ViT tokens to a (B, C, h, w) map) before the formula is applied.
    Images are independent (the model must be in eval mode); no parameter gradient is accumulated and the
    hook is removed on return.
    """
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        store["a"] = _first(out)

    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            xin = x.detach().clone().requires_grad_(True)
            logits = model(xin)
            if "a" not in store:
                raise RuntimeError("Grad-CAM: the target module was not called in the forward pass")
            act = store.pop("a")
            score = logits.gather(1, target.to(logits.device).long().view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    if transform is not None:  # reshape activation and gradient alike, as the package's reshape_transform does
        act, grad = transform(act.detach()), transform(grad)
    if act.ndim != 4:
        raise ValueError(f"Grad-CAM needs a (B, C, h, w) activation, got shape {tuple(act.shape)}")
    act, grad = act.detach().float(), grad.float()
    weights = grad.mean((2, 3), keepdim=True)
    cam = minmax((weights * act).sum(1).clamp_min(0))
    size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(cam.clamp_min(0))


def gradcam_package(
    model: nn.Module, module: nn.Module, x: Tensor, target: Tensor, transform: Transform | None = None
) -> Tensor:
    """The same maps ``(B, H, W)`` through ``pytorch_grad_cam.GradCAM`` (float32, on the CPU).

    The package calls ``model.eval()`` and leaves parameter gradients behind: the model's mode is restored and
    its gradients are cleared afterwards. Its hooks are released by the ``with`` block.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            xin = x.detach().clone().requires_grad_(True)  # a path for gradients even when parameters are frozen
            with GradCAM(model=model, target_layers=[module], reshape_transform=transform) as cam:
                maps = cam(input_tensor=xin, targets=targets)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return torch.from_numpy(maps)


def cam_module(model: Classifier, layer: str) -> tuple[nn.Module, Transform | None]:
    """The module behind tap (or module path) ``layer`` and the tap's reshaping transform, if any."""
    path = model.tap_path(layer)
    if path == LOGITS:
        raise ValueError(f"Grad-CAM on model {model.arch}: tap '{layer}' is the logits, not a spatial layer")
    return dict(model.named_modules())[path], model.tap_transforms.get(layer)


def layer_extent(model: nn.Module, module: nn.Module, x: Tensor, transform: Transform | None = None) -> tuple[int, ...]:
    """Shape of ``module``'s (transformed) output for a batch ``x``, found with one forward pass."""
    shape: list[tuple[int, ...]] = []

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        a = _first(out)
        shape.append(tuple((transform(a) if transform is not None else a).shape))

    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    if not shape:
        raise RuntimeError("the target module was not called in the forward pass")
    return shape[0]
