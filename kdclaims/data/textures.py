"""A shape/texture cue-conflict analogue on small grayscale data (the cpu stage of §C.3's shape-bias claim).

Each base image (a Fashion-MNIST garment, or a scikit-learn digit for smoke tests) gives its *shape*: the silhouette
``M = 1[x > MASK_THRESHOLD]``. The silhouette is filled with a *texture*, an oriented sine grating, and the background
is black:

    out = M · (FLOOR + (1 - FLOOR) · G),   G(u, v) = 1/2 + 1/2 · sin(2π (u cos θ + v sin θ) / P + φ)

Texture ``k`` of ``K = 10`` has orientation ``θ_k = ORIENTATIONS[k mod 5]`` and period ``P_k = PERIODS[k div 5]``
(pixels at the output size); every image draws its own phase ``φ ~ U[0, 2π)``, an orientation jitter
``U[-ANGLE_JITTER, ANGLE_JITTER]`` and a period factor ``U[1 - PERIOD_JITTER, 1 + PERIOD_JITTER]``, so a texture is a
family of images, not a template. Garment pixels stay in ``[FLOOR, 1]``: the silhouette is visible in every texture.

``texture`` chooses how textures are assigned (``meta["texture"]`` holds the texture of each image):

- ``class``: texture ``y`` for an image of class ``y`` — texture predicts the label as well as shape (like ImageNet);
- ``random``: a texture drawn uniformly at random — only the shape predicts the label (like Stylized-ImageNet);
- ``conflict``: a texture drawn uniformly from the ``K - 1`` classes other than ``y`` — the cue-conflict test set:
  ``y`` is the shape class, ``meta["texture"] != y`` the texture class.

Random draws are made per base image from a stream keyed by ``(seed, split, dataset, texture)``, so an image looks the
same in any subset (``n``). ``mean``/``std`` are the pixel statistics of ``STATS_IMAGES`` training images in the same
mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.data.digits import digits
from kdclaims.data.mnist import fashion_mnist
from kdclaims.data.paths import stream
from kdclaims.data.sampling import stratified_indices
from kdclaims.fingerprint import cached_reads
from kdclaims.registries import DATASETS

MODES = ("class", "random", "conflict")
NUM_TEXTURES = 10
ORIENTATIONS = (0.0, 36.0, 72.0, 108.0, 144.0)  # degrees
PERIODS = (4.0, 7.0)  # pixels at the output size
ANGLE_JITTER = 6.0  # degrees, half-width of the per-image orientation jitter (< half the 36° spacing)
PERIOD_JITTER = 0.1  # relative half-width of the per-image period jitter (4·1.1 < 7·0.9: the periods never meet)
MASK_THRESHOLD = 0.05  # base pixels brighter than this belong to the silhouette
FLOOR = 0.3  # darkest garment pixel: keeps the silhouette visible under every texture
STATS_IMAGES = 10_000  # label-stratified training images behind ``mean``/``std``
_CHUNK = 8192


def texture_parameters(k: Tensor) -> tuple[Tensor, Tensor]:
    """Nominal (orientation in radians, period in pixels) of texture ids ``k``: ``θ_{k mod 5}``, ``P_{k div 5}``."""
    k = torch.as_tensor(k, dtype=torch.long)
    if bool(((k < 0) | (k >= NUM_TEXTURES)).any()):
        raise ValueError(f"texture ids must lie in [0, {NUM_TEXTURES}), got {k.min().item()}..{k.max().item()}")
    theta = torch.tensor(ORIENTATIONS, dtype=torch.float64).deg2rad()[k % len(ORIENTATIONS)]
    period = torch.tensor(PERIODS, dtype=torch.float64)[k // len(ORIENTATIONS)]
    return theta, period


def silhouette(x: Tensor, threshold: float = MASK_THRESHOLD) -> Tensor:
    """The shape mask ``1[x > threshold]`` of a grayscale batch (B, 1, H, W) as float (B, 1, H, W)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"silhouette: expected a grayscale batch (B, 1, H, W), got {tuple(x.shape)}")
    return (x > threshold).float()


def draw(texture: str, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-image draws for ``y.numel()`` images: texture id, phase, orientation jitter, period factor."""
    if texture not in MODES:
        raise ValueError(f"texture must be one of {MODES}, got {texture!r}")
    n = len(y)
    if texture == "class":
        tex = y.clone()
    elif texture == "random":
        tex = torch.randint(0, NUM_TEXTURES, (n,), generator=generator)
    else:  # conflict: uniform over the other K - 1 classes
        tex = (y + 1 + torch.randint(0, NUM_TEXTURES - 1, (n,), generator=generator)) % NUM_TEXTURES
    return {
        "texture": tex.long(),
        "phase": torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi,
        "angle": (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(ANGLE_JITTER),
        "period": 1 + (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * PERIOD_JITTER,
    }


def grating(texture: Tensor, phase: Tensor, angle: Tensor, period: Tensor, size: int) -> Tensor:
    """Textures ``G`` (module docstring) as float (B, 1, size, size) in [0, 1]; ``angle`` and ``period`` are the
    per-image jitter (radians added to ``θ``, factor on ``P``).

    Separable form: with ``a = 2π cos θ / P`` and ``b = 2π sin θ / P``,
    ``sin(a·u + b·v + φ) = cos(b·v)·sin(a·u + φ) + sin(b·v)·cos(a·u + φ)``: sines of (B, size) vectors only.
    """
    theta, p = texture_parameters(texture)
    theta, p = theta + angle, p * period
    coords = torch.arange(size, dtype=torch.float64)
    a = (2 * math.pi * theta.cos() / p)[:, None]
    b = (2 * math.pi * theta.sin() / p)[:, None]
    hu = a * coords + phase[:, None]  # (B, size) over columns u
    hv = b * coords  # (B, size) over rows v
    su, cu, sv, cv = (t.float() for t in (hu.sin(), hu.cos(), hv.sin(), hv.cos()))
    s = cv[:, :, None] * su[:, None, :] + sv[:, :, None] * cu[:, None, :]  # (B, v, u)
    return (0.5 + 0.5 * s).clamp_(0, 1).unsqueeze(1)


def render(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """``M(x) · (FLOOR + (1 - FLOOR) · G)`` for a grayscale batch (B, 1, H, W) and per-image ``params`` (``draw``)."""
    g = grating(params["texture"], params["phase"], params["angle"], params["period"], x.shape[-1])
    return silhouette(x) * (FLOOR + (1 - FLOOR) * g)


def _render_rows(base: Tensor, rows: Tensor, params: dict[str, Tensor]) -> Tensor:
    out = torch.empty(len(rows), 1, base.shape[-2], base.shape[-1])
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start:start + _CHUNK]
        out[start:start + len(idx)] = render(base[idx], {k: v[idx] for k, v in params.items()})
    return out


BaseBuilder = Callable[..., Split]


@cached_reads(8)
def _train_stats(name: str, texture: str, size: int | None, root: str | None, seed: int) -> tuple[float, float]:
    """Mean and std of the pixels of ``STATS_IMAGES`` training images rendered in ``texture`` mode."""
    s = _textured(name, "train", None if root is None else Path(root), seed, texture=texture, n=STATS_IMAGES,
                  size=size, stats=(0.0, 1.0))
    return float(s.x.mean()), float(s.x.std(unbiased=False))


_BASES: dict[str, BaseBuilder] = {"textured_fashion": fashion_mnist, "textured_digits": digits}


def _textured(
    name: str,
    split: str,
    root: Path | None,
    seed: int,
    *,
    texture: str,
    n: int | None,
    size: int | None,
    stats: tuple[float, float] | None = None,
) -> Split:
    if texture not in MODES:
        raise ValueError(f"{name}: texture must be one of {MODES}, got {texture!r}")
    base = _BASES[name](split, root, seed, size=size)  # grayscale (N, 1, S, S) in [0, 1]
    if base.num_classes != NUM_TEXTURES:
        raise ValueError(f"{name}: the base data has {base.num_classes} classes, the textures {NUM_TEXTURES}")
    params = draw(texture, base.y, stream(seed, split, name, texture))
    if n is None:
        rows = torch.arange(len(base))
    else:
        rows = stratified_indices(base.y, int(n), stream(seed, split, name, "select"))
    x = _render_rows(base.x, rows, params)
    if stats is None:
        stats = _train_stats(name, texture, size, None if root is None else str(root), seed)
    mean, std = stats
    return Split(
        name=f"{name}-{split}-{texture}",
        x=x,
        y=base.y[rows].long(),
        num_classes=NUM_TEXTURES,
        mean=(mean,),
        std=(std,),
        meta={"texture": params["texture"][rows], "source_index": rows.long()},
    )


@DATASETS.register("textured_fashion")
def textured_fashion(
    split: str, root: Path | None, seed: int, *, texture: str = "class", n: int | None = None, size: int | None = None
) -> Split:
    """Fashion-MNIST silhouettes filled with gratings (module docstring); ``texture``: class | random | conflict;
    ``n`` keeps a seeded label-stratified subset; ``size`` resizes the base images first (default 28)."""
    return _textured("textured_fashion", split, root, seed, texture=texture, n=n, size=size)


@DATASETS.register("textured_digits")
def textured_digits(
    split: str, root: Path | None, seed: int, *, texture: str = "class", n: int | None = None, size: int | None = 16
) -> Split:
    """scikit-learn's digits (upsampled to ``size``, default 16) filled with gratings: the smoke-test twin of
    ``textured_fashion``; ``root`` unused."""
    return _textured("textured_digits", split, root, seed, texture=texture, n=n, size=size)
