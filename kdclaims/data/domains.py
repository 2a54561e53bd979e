"""Domains of a grayscale dataset (§6.1 of the paper) and the shared builder for grayscale splits.

Every domain renders a grayscale image ``x`` (values in [0, 1], 1 channel) as a 3-channel image:

- ``orig``: ``x`` replicated to 3 channels;
- ``inverted``: ``1 - x`` replicated;
- ``color``: the background painted one random colour ``c`` per image, the foreground kept:
  ``out = a·x + (1 - a)·c`` with the foreground weight ``a = min(1, x / FAINT)``;
- ``m`` (MNIST-M style, Ganin et al. 2016): ``out = |P - x|`` per channel, ``P`` a random square patch of one of
  scikit-learn's two sample photos (side ``max(size, 28)`` pixels, resized to the image size).

``colorize`` (not a domain) paints foreground and background each a random colour: ``out = x·f + (1 - x)·b``.
Random draws are made per base image for the whole dataset from a stream keyed by ``(seed, split, dataset, domain)``,
so an image looks the same whatever subset is taken, and the test split uses a different stream from train.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdclaims.data.base import Split
from kdclaims.data.paths import stream
from kdclaims.data.sampling import select
from kdclaims.data.sklearn_assets import sample_photo_arrays
from kdclaims.fingerprint import cached_reads

DOMAINS = ("orig", "color", "m", "inverted")
FAINT = 0.2  # pixels darker than this are (partly) background in the ``color`` domain
M_PATCH_MIN = 28  # smallest photo patch side for the ``m`` domain (MNIST-M used 28x28 patches)
_CHUNK = 8192


@cached_reads(1)
def sample_photos() -> Tensor:
    """scikit-learn's two sample photos (china, flower) as a (2, 3, 427, 640) float tensor in [0, 1]."""
    images = np.stack(sample_photo_arrays())  # (2, H, W, 3) uint8
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255).contiguous()


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear (antialiased) resize of a (N, C, H, W) batch to ``size x size``, clamped to [0, 1]."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def _draw(domain: str, n_base: int, size: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Per-base-image random parameters of a domain."""
    if domain == "color":
        return {"color": torch.rand(n_base, 3, generator=generator)}
    if domain == "colorize":
        return {"fg": torch.rand(n_base, 3, generator=generator), "bg": torch.rand(n_base, 3, generator=generator)}
    if domain == "m":
        photos = sample_photos()
        side = max(size, M_PATCH_MIN)
        h, w = photos.shape[-2:]
        return {
            "photo": torch.randint(0, len(photos), (n_base,), generator=generator),
            "top": torch.randint(0, h - side + 1, (n_base,), generator=generator),
            "left": torch.randint(0, w - side + 1, (n_base,), generator=generator),
        }
    return {}


def _photo_patches(photo: Tensor, top: Tensor, left: Tensor, side: int) -> Tensor:
    photos = sample_photos()
    ar = torch.arange(side)
    rows = (top[:, None] + ar)[:, :, None]  # (B, side, 1)
    cols = (left[:, None] + ar)[:, None, :]  # (B, 1, side)
    return photos[photo[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (B, 3, side, side)


def render(domain: str, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """Render a (B, 1, H, W) grayscale batch in ``domain`` (see the module docstring); ``params`` indexed per image."""
    if x.shape[1] != 1:
        raise ValueError(f"domains apply to grayscale images, got {x.shape[1]} channels")
    rgb = x.expand(-1, 3, -1, -1)
    if domain == "orig":
        return rgb.clone()
    if domain == "inverted":
        return 1.0 - rgb
    if domain == "color":
        a = (x / FAINT).clamp(max=1.0)
        return a * rgb + (1 - a) * params["color"][:, :, None, None]
    if domain == "colorize":
        return rgb * params["fg"][:, :, None, None] + (1 - rgb) * params["bg"][:, :, None, None]
    if domain == "m":
        size = x.shape[-1]
        side = max(size, M_PATCH_MIN)
        patch = resize(_photo_patches(params["photo"], params["top"], params["left"], side), size)
        return (patch - rgb).abs()
    raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")


def to_unit(x: Tensor) -> Tensor:
    """Float pixels in [0, 1]: uint8 is divided by 255, floats are passed through."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def _render_rows(domain: str, base: Tensor, rows: Tensor, params: Mapping[str, Tensor], size: int) -> Tensor:
    out = torch.empty(len(rows), 3, size, size)
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start:start + _CHUNK]
        chunk = resize(to_unit(base[idx]), size)
        out[start:start + len(idx)] = render(domain, chunk, {k: v[idx] for k, v in params.items()})
    return out


def gray_split(
    name: str,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    split: str,
    seed: int,
    mean: float,
    std: float,
    size: int | None = None,
    domain: str | None = None,
    domains: Sequence[str] | None = None,
    composition: Mapping[str, int] | None = None,
    n: int | None = None,
    colorize: bool = False,
) -> Split:
    """Grayscale images ``x`` (N, 1, H, W; uint8 or float in [0, 1]) as a split: resized, in domains, subsampled.

    ``domain``/``domains`` give a 3-channel split, the listed domains concatenated in order, with ``groups`` = domain
    id and ``meta["source_index"]`` = index of the base image. ``n`` caps the size (stratified by domain and label,
    seeded); ``composition`` takes exactly that many images of each named domain. Selection happens before
    rendering, so only the chosen images are rendered. ``mean``/``std`` are the base training set's gray statistics
    (replicated to 3 channels for 3-channel output).
    """
    if domain is not None and domains is not None:
        raise ValueError("give either 'domain' or 'domains', not both")
    names = [domain] if domain is not None else (list(domains) if domains is not None else [])
    if domains is not None and not names:
        raise ValueError("'domains' is empty")
    for d in names:
        if d not in DOMAINS:
            raise ValueError(f"unknown domain '{d}'; known: {', '.join(DOMAINS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"'domains' repeats a name: {names}")
    if colorize and names:
        raise ValueError("'colorize' paints the grayscale images itself; it cannot be combined with 'domain(s)'")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name}: base images must be (N, 1, H, W), got {tuple(x.shape)}")
    size = int(size) if size is not None else int(x.shape[-1])
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")

    n_base = len(y)
    k = max(1, len(names))
    labels = y.repeat(k)
    groups = torch.arange(len(names)).repeat_interleave(n_base) if names else None
    index = select(labels, groups, names, n=n, composition=composition, generator=stream(seed, split, name, "select"))
    selected = index
    if index is None:
        index = torch.arange(n_base * k)
    dom, src = index // n_base, index % n_base

    if not names:
        if colorize:
            params = _draw("colorize", n_base, size, stream(seed, split, name, "colorize"))
            xs = _render_rows("colorize", x, src, params, size)
        else:
            whole = selected is None or len(src) == n_base  # src is then arange(n_base): skip the gather
            xs = resize(to_unit(x if whole else x[src]), size)
            xs = xs.clone() if xs.data_ptr() == x.data_ptr() else xs  # never hand out the caller's (cached) tensor
        channels = 3 if colorize else 1
        return Split(
            name=f"{name}-{split}" + ("-colorize" if colorize else ""),
            x=xs,
            y=y[src].long(),
            num_classes=num_classes,
            mean=(mean,) * channels,
            std=(std,) * channels,
        )

    xs = torch.empty(len(index), 3, size, size)
    for d, dname in enumerate(names):
        rows = torch.nonzero(dom == d).flatten()
        if len(rows):
            params = _draw(dname, n_base, size, stream(seed, split, name, dname))
            xs[rows] = _render_rows(dname, x, src[rows], params, size)
    return Split(
        name=f"{name}-{split}-" + "+".join(names),
        x=xs,
        y=y[src].long(),
        num_classes=num_classes,
        mean=(mean,) * 3,
        std=(std,) * 3,
        groups=dom.long(),
        group_names=names,
        meta={"source_index": src.long()},
    )
