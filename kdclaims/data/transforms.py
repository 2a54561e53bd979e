"""Batch-wise image transforms on (B, C, H, W) tensors in [0, 1], on any device, one random draw per image.

Random numbers come from the ``torch.Generator`` passed in (drawn on the generator's device, then moved to the
data's), so a fixed generator seed reproduces a result on CPU and CUDA alike.

Training augmentation is built from YAML-like specs by ``build_augment``; the agreement probes use
``color_jitter``, ``random_crops`` and ``random_shifts``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[..., Tensor]  # (x, generator) -> x'

# ---------------------------------------------------------------------------------------------------- random draws


def _uniform(n: int | tuple[int, ...], low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """U[low, high) samples drawn on the generator's device, returned on ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    shape = (n,) if isinstance(n, int) else n
    return (low + (high - low) * torch.rand(shape, generator=generator, device=gdev)).to(device)


def _randint(n: int, high: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-sample integers in [0, high) (``high`` a (n,) long tensor >= 1)."""
    u = _uniform(n, 0.0, 1.0, generator, high.device)
    return torch.minimum((u * high).long(), high - 1)


# ---------------------------------------------------------------------------------------------------- colour ops


def _gray(x: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` as (B, 1, H, W); a 1-channel input is its own gray."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """``clamp(f·a + (1 - f)·b, 0, 1)`` with a per-sample factor ``f`` (B,)."""
    f = f.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """``clamp(f·x)``."""
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """``clamp(f·x + (1 - f)·m)``, ``m`` the image's mean luma."""
    return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """``clamp(f·x + (1 - f)·gray(x))``; identity on 1-channel images."""
    return x if x.shape[1] == 1 else _blend(x, _gray(x), f)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> HSV, all three in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB."""
    h, s, v = x.unbind(1)
    h6 = (h % 1.0) * 6
    i = h6.floor()
    f = h6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # sector i -> (r, g, b): 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v) 4 (t,p,v) 5 (v,p,q)
    table = torch.stack([
        torch.stack([v, q, p, p, t, v]),
        torch.stack([t, v, v, q, p, p]),
        torch.stack([p, p, t, v, v, q]),
    ])  # (3, 6, B, H, W)
    idx = i.unsqueeze(0).unsqueeze(0).expand(3, 1, *i.shape)
    return table.gather(1, idx).squeeze(1).permute(1, 0, 2, 3).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (B,) turns, ``shift`` in [-0.5, 0.5]; identity on 1-channel images."""
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([((hsv[:, :1] + shift.view(-1, 1, 1, 1)) % 1.0), hsv[:, 1:]], 1)
    return hsv_to_rgb(hsv)


_COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_colors(
    x: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision-ColorJitter semantics, one draw per image: factors ``U[max(0, 1 - m), 1 + m]`` for brightness,
    contrast and saturation, a hue shift ``U[-hue, hue]``, applied in a random order per image; an op whose magnitude
    is 0 is skipped (so all-zero magnitudes are the identity)."""
    mags = (float(brightness), float(contrast), float(saturation), float(hue))
    if min(mags) < 0 or hue > 0.5:
        raise ValueError(f"jitter magnitudes must be >= 0 and hue <= 0.5, got {mags}")
    n, dev = len(x), x.device
    factors = [_uniform(n, max(0.0, 1 - m), 1 + m, generator, dev) for m in mags[:3]]
    factors.append(_uniform(n, -mags[3], mags[3], generator, dev))
    order = _uniform((n, 4), 0.0, 1.0, generator, dev).argsort(1)
    out = x.clone()
    for step in range(4):
        for k, op in enumerate(_COLOR_OPS):
            if mags[k] == 0:
                continue
            mask = order[:, step] == k
            if bool(mask.any()):
                out[mask] = op(out[mask], factors[k][mask])
    return out


def color_jitter(x: Tensor, strength: float, hue: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """One random colour jitter per image: brightness, contrast and saturation magnitude ``strength``, hue ``hue``."""
    return jitter_colors(x, strength, strength, strength, hue, generator)


# ---------------------------------------------------------------------------------------------------- geometry


def crop(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """Per-sample integer crops ``x[b, :, top_b:top_b+height, left_b:left_b+width]``."""
    b = torch.arange(len(x), device=x.device)[:, None, None]
    rows = (top.to(x.device)[:, None] + torch.arange(height, device=x.device))[:, :, None]
    cols = (left.to(x.device)[:, None] + torch.arange(width, device=x.device))[:, None, :]
    return x[b, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def resized_crop(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                 size: tuple[int, int] | None = None) -> Tensor:
    """Per-sample boxes (pixel units) resampled bilinearly to ``size`` (default the input size), like cropping then
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` each image.

    Output column ``u`` reads input column ``clamp(left + (u + ½)·width/W_out − ½, left, left + width − 1)`` (rows
    alike), all images at once through ``grid_sample``.
    """
    n, _, h_in, w_in = x.shape
    h_out, w_out = size or (h_in, w_in)

    def axis(start: Tensor, length: Tensor, out: int, full: int) -> Tensor:
        start, length = start.to(x.device, torch.float32)[:, None], length.to(x.device, torch.float32)[:, None]
        u = torch.arange(out, device=x.device, dtype=torch.float32)[None]
        src = (start + (u + 0.5) * length / out - 0.5).clamp(min=start, max=start + length - 1)
        return (2 * src + 1) / full - 1  # grid_sample's align_corners=False coordinates

    gx, gy = axis(left, width, w_out, w_in), axis(top, height, h_out, h_in)
    grid = torch.stack([gx[:, None, :].expand(n, h_out, w_out), gy[:, :, None].expand(n, h_out, w_out)], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


def _check_range(name: str, pair: Sequence[float], low: float, high: float) -> tuple[float, float]:
    a, b = (float(v) for v in pair)
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got ({a}, {b})")
    return a, b


def _crop_boxes(n: int, h: int, w: int, area_frac: Tensor, log_ratio: Tensor) -> tuple[Tensor, Tensor]:
    area = area_frac * h * w
    ratio = log_ratio.exp()
    return (area / ratio).sqrt().round(), (area * ratio).sqrt().round()


def random_resized_crop(
    x: Tensor,
    generator: torch.Generator | None = None,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> Tensor:
    """torchvision's RandomResizedCrop box rule per image (10 tries of area ``U[scale]``·HW and log-uniform aspect
    ``ratio``, else a centre crop clamped to ``ratio``), resized back to the input size."""
    s0, s1 = _check_range("scale", scale, 0.0, 1.0)
    r0, r1 = _check_range("ratio", ratio, 1e-6, math.inf)
    n, _, h, w = x.shape
    dev = x.device
    tries = 10
    hh, ww = _crop_boxes(n, h, w, _uniform((n, tries), s0, s1, generator, dev),
                         _uniform((n, tries), math.log(r0), math.log(r1), generator, dev))
    ok = (hh >= 1) & (ww >= 1) & (hh <= h) & (ww <= w)
    first = ok.int().argmax(1, keepdim=True)
    hh, ww, has = hh.gather(1, first).squeeze(1), ww.gather(1, first).squeeze(1), ok.any(1)
    in_ratio = w / h
    if in_ratio < r0:
        fw, fh = float(w), float(round(w / r0))
    elif in_ratio > r1:
        fh, fw = float(h), float(round(h * r1))
    else:
        fh, fw = float(h), float(w)
    hh = torch.where(has, hh, torch.full_like(hh, fh))
    ww = torch.where(has, ww, torch.full_like(ww, fw))
    top = _randint(n, (h - hh + 1).long(), generator)
    left = _randint(n, (w - ww + 1).long(), generator)
    return resized_crop(x, top, left, hh, ww)


def crop_ratio_range(scale: float, h: int, w: int, ratio: Sequence[float]) -> tuple[float, float]:
    """The aspect ratios (w/h) in ``ratio`` at which a crop of area ``scale``·HW fits inside an H x W image.

    A crop fits iff ``scale·W/H <= r <= W/(scale·H)``; when ``ratio`` misses that interval, its nearest point.
    """
    lo_fit, hi_fit = scale * w / h, w / (scale * h)
    lo, hi = max(float(ratio[0]), lo_fit), min(float(ratio[1]), hi_fit)
    if lo > hi:
        lo = hi = min(max(float(ratio[0]), lo_fit), hi_fit)
    return lo, hi


def random_crops(
    x: Tensor,
    scale: float,
    generator: torch.Generator | None = None,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[Tensor, Tensor]:
    """Two random crops per image, each of area ``scale``·HW, at uniform random positions, resized back to the input
    size (C.4's crop-agreement pair). The aspect ratio of each crop is log-uniform over the part of ``ratio`` at
    which such a crop fits in the image (``crop_ratio_range``): free at small scales, 1 at scale 1 (the whole image).
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    _check_range("ratio", ratio, 1e-6, math.inf)
    n, _, h, w = x.shape
    r0, r1 = crop_ratio_range(float(scale), h, w, ratio)
    out = []
    for _ in range(2):
        frac = torch.full((n,), float(scale), device=x.device)
        hh, ww = _crop_boxes(n, h, w, frac, _uniform(n, math.log(r0), math.log(r1), generator, x.device))
        hh, ww = hh.clamp(1, h), ww.clamp(1, w)  # rounding only
        top = _randint(n, (h - hh + 1).long(), generator)
        left = _randint(n, (w - ww + 1).long(), generator)
        out.append(resized_crop(x, top, left, hh, ww))
    return out[0], out[1]


def _square_source(x: Tensor, side: int) -> Tensor:
    """Centre ``side x side`` crop of ``x``; when ``x`` is smaller, first resize its short side to ``side``."""
    _, _, h, w = x.shape
    if min(h, w) < side:
        scale = side / min(h, w)
        h, w = max(side, round(h * scale)), max(side, round(w * scale))
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, :, top:top + side, left:left + side]


def random_shifts(
    x: Tensor,
    max_shift: int,
    generator: torch.Generator | None = None,
    size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Two ``size x size`` crops per image at independent integer offsets in ``[0, max_shift]`` (C.5's shift pair).

    The source is the centre ``(size + max_shift)`` square of ``x`` (resized up first when ``x`` is smaller);
    ``size`` defaults to the input's short side, so the source is then ``x`` upsampled by ``(size + max_shift)/size``.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    size = int(size or min(x.shape[-2:]))
    src = _square_source(x, size + int(max_shift))
    n = len(x)
    span = torch.full((n,), int(max_shift) + 1, dtype=torch.long, device=x.device)
    pairs = []
    for _ in range(2):
        top, left = _randint(n, span, generator), _randint(n, span, generator)
        pairs.append(crop(src, top, left, size, size))
    return pairs[0], pairs[1]


def hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _uniform(len(x), 0.0, 1.0, generator, x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def shift(x: Tensor, generator: torch.Generator | None = None, max_shift: int = 4, padding: str = "zero") -> Tensor:
    """Pad each side by ``max_shift`` (zeros or reflection), then crop back to the input size at a random offset in
    ``[0, 2·max_shift]`` per axis: a random translation by up to ``max_shift`` pixels."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if padding not in ("zero", "reflect"):
        raise ValueError(f"padding must be 'zero' or 'reflect', got '{padding}'")
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, mode="constant" if padding == "zero" else "reflect")
    span = torch.full((n,), 2 * max_shift + 1, dtype=torch.long, device=x.device)
    return crop(padded, _randint(n, span, generator), _randint(n, span, generator), h, w)


# ---------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ColorJitter:
    brightness: float
    contrast: float
    saturation: float
    hue: float

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return jitter_colors(x, self.brightness, self.contrast, self.saturation, self.hue, generator)


@dataclass(frozen=True)
class RandomResizedCrop:
    scale: tuple[float, float]
    ratio: tuple[float, float]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return random_resized_crop(x, generator, self.scale, self.ratio)


@dataclass(frozen=True)
class HFlip:
    p: float

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return hflip(x, generator, self.p)


@dataclass(frozen=True)
class Shift:
    max_shift: int
    padding: str

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return shift(x, generator, self.max_shift, self.padding)


@dataclass(frozen=True)
class Identity:
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


@dataclass(frozen=True)
class Sequential:
    steps: tuple[Augment, ...]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x


def _color_jitter_spec(
    strength: float | None = None,
    brightness: float | None = None,
    contrast: float | None = None,
    saturation: float | None = None,
    hue: float = 0.0,
) -> ColorJitter:
    base = 0.0 if strength is None else float(strength)
    pick = lambda v: base if v is None else float(v)  # noqa: E731
    mags = ColorJitter(pick(brightness), pick(contrast), pick(saturation), float(hue))
    if min(mags.brightness, mags.contrast, mags.saturation, mags.hue) < 0 or mags.hue > 0.5:
        raise ValueError(f"color_jitter magnitudes must be >= 0 and hue <= 0.5, got {mags}")
    return mags


def _rrc_spec(scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> RandomResizedCrop:
    return RandomResizedCrop(_check_range("scale", scale, 0.0, 1.0), _check_range("ratio", ratio, 1e-6, math.inf))


def _hflip_spec(p: float = 0.5) -> HFlip:
    if not 0 <= p <= 1:
        raise ValueError(f"hflip p must be in [0, 1], got {p}")
    return HFlip(float(p))


def _shift_spec(max_shift: int = 4, padding: str = "zero") -> Shift:
    if int(max_shift) < 0 or padding not in ("zero", "reflect"):
        raise ValueError(f"shift needs max_shift >= 0 and padding 'zero' or 'reflect', got {max_shift}, '{padding}'")
    return Shift(int(max_shift), padding)


AUGMENTS: dict[str, Callable[..., Augment]] = {
    "color_jitter": _color_jitter_spec,  # strength (b/c/s, each overridable), hue
    "random_resized_crop": _rrc_spec,  # scale, ratio
    "hflip": _hflip_spec,  # p
    "shift": _shift_spec,  # max_shift, padding
    "none": Identity,
}


def build_augment(specs: Sequence[Mapping]) -> Augment:
    """``[{name: color_jitter, strength: 0.4, hue: 0.2}, {name: hflip}]`` -> a callable ``(x, generator) -> x'``
    applying each step in order (an empty list is the identity)."""
    steps = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in AUGMENTS:
            raise ValueError(f"unknown augmentation '{name}'; known: {', '.join(AUGMENTS)}")
        factory = AUGMENTS[name]
        accepted = list(inspect.signature(factory).parameters)
        unknown = sorted(set(spec) - set(accepted))
        if unknown:
            raise ValueError(f"augmentation '{name}': unknown parameter(s) {unknown}; accepted: {accepted or 'none'}")
        steps.append(factory(**spec))
    return Sequential(tuple(steps))
