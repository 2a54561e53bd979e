"""Batch transforms: colour jitter, crops, shifts, flips and the augmentation spec builder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdclaims.data import transforms as T

torch.set_num_threads(1)


def _images(n: int = 8, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (so that resampling changes them by small amounts)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, c, 4, 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ colour


def test_color_jitter_range_shape_identity_and_reproducible():
    x = _images()
    y = T.color_jitter(x, 0.4, 0.2, _gen(1))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.allclose(y, x, atol=1e-3)
    assert torch.equal(T.color_jitter(x, 0.0, 0.0, _gen(1)), x)
    assert torch.equal(T.color_jitter(x, 0.4, 0.2, _gen(1)), y)
    assert not torch.equal(T.color_jitter(x, 0.4, 0.2, _gen(2)), y)


def test_color_jitter_draws_per_image():
    x = _images(1).expand(6, -1, -1, -1).contiguous()
    y = T.color_jitter(x, 0.4, 0.2, _gen(0))
    diffs = [(y[i] - y[0]).abs().max() for i in range(1, 6)]
    assert min(diffs) > 1e-3


def test_jitter_strength_grows_with_magnitude():
    x = _images(64)
    change = [float((T.color_jitter(x, s, 0.0, _gen(0)) - x).abs().mean()) for s in (0.1, 0.4, 0.8)]
    assert change[0] < change[1] < change[2]


@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_colour_ops_match_torchvision(factor):
    from torchvision.transforms.v2 import functional as TF

    x = _images(4)
    f = torch.full((4,), factor)
    for ours, theirs in (
        (T.adjust_brightness, TF.adjust_brightness),
        (T.adjust_contrast, TF.adjust_contrast),
        (T.adjust_saturation, TF.adjust_saturation),
    ):
        assert torch.allclose(ours(x, f), torch.stack([theirs(img, factor) for img in x]), atol=1e-5), ours.__name__
    shift = factor - 1.0  # -0.4 or 0.3 of a turn
    expected = torch.stack([TF.adjust_hue(img, shift) for img in x])
    assert torch.allclose(T.adjust_hue(x, torch.full((4,), shift)), expected, atol=1e-4)


def test_hsv_round_trip_and_gray_inputs():
    x = torch.rand(5, 3, 7, 7, generator=_gen(3))
    assert torch.allclose(T.hsv_to_rgb(T.rgb_to_hsv(x)), x, atol=1e-5)
    gray = torch.rand(5, 1, 7, 7, generator=_gen(4))
    out = T.color_jitter(gray, 0.4, 0.2, _gen(0))
    assert out.shape == gray.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_jitter_rejects_bad_magnitudes():
    with pytest.raises(ValueError, match="hue <= 0.5"):
        T.color_jitter(_images(2), 0.4, 0.7)
    with pytest.raises(ValueError, match=">= 0"):
        T.color_jitter(_images(2), -0.1)


# ------------------------------------------------------------------------------------------------ crops and shifts


@pytest.mark.parametrize("ratio", [(1.0, 1.0), (3 / 4, 4 / 3)])
def test_random_crops_full_scale_is_identity(ratio):
    x = _images(size=20)
    x1, x2 = T.random_crops(x, 1.0, _gen(0), ratio=ratio)
    assert torch.allclose(x1, x, atol=1e-6) and torch.allclose(x2, x, atol=1e-6)


def test_crop_ratio_range_keeps_the_crop_inside():
    assert T.crop_ratio_range(1.0, 20, 20, (3 / 4, 4 / 3)) == (1.0, 1.0)
    assert T.crop_ratio_range(0.2, 20, 20, (3 / 4, 4 / 3)) == (3 / 4, 4 / 3)  # small crops: the whole range fits
    lo, hi = T.crop_ratio_range(0.9, 20, 20, (3 / 4, 4 / 3))
    assert lo == pytest.approx(0.9) and hi == pytest.approx(1 / 0.9)
    for r in (lo, hi):  # the extreme crops just fit
        assert math.sqrt(0.9 * 400 * r) <= 20 + 1e-9 and math.sqrt(0.9 * 400 / r) <= 20 + 1e-9
    assert T.crop_ratio_range(1.0, 10, 30, (3 / 4, 4 / 3)) == (3.0, 3.0)  # a wide image: only its own shape fits


def test_random_crops_cover_the_asked_area():
    size = 40
    ramp = torch.arange(size, dtype=torch.float32) / (size - 1)
    coords = torch.stack([ramp[:, None].expand(size, size), ramp[None, :].expand(size, size)])  # channel 0: row
    x = coords.expand(32, 2, size, size).contiguous()
    for scale in (0.3, 0.8, 1.0):
        for view in T.random_crops(x, scale, _gen(0)):
            mid = size // 2  # the sampled coordinate advances by (box side / output side) per output pixel
            h = (view[:, 0, mid + 1, mid] - view[:, 0, mid, mid]) * (size - 1) * size
            w = (view[:, 1, mid, mid + 1] - view[:, 1, mid, mid]) * (size - 1) * size
            assert torch.all(h <= size + 1e-3) and torch.all(w <= size + 1e-3)
            area = h * w / size**2
            assert torch.all((area - scale).abs() < 0.05), (scale, area)
        if scale < 0.5:
            assert float((h / w).max() / (h / w).min()) > 1.3  # free aspect ratio at small scales


def test_random_crops_area_shape_and_reproducibility():
    x = _images(16, size=24)
    x1, x2 = T.random_crops(x, 0.25, _gen(0))
    assert x1.shape == x.shape and x2.shape == x.shape and 0 <= float(x1.min()) and float(x1.max()) <= 1
    assert not torch.allclose(x1, x2, atol=1e-3)
    y1, y2 = T.random_crops(x, 0.25, _gen(0))
    assert torch.equal(x1, y1) and torch.equal(x2, y2)
    # larger crops share more content: the two views get closer as the scale grows
    gap = [float((a - b).abs().mean()) for a, b in (T.random_crops(x, s, _gen(1)) for s in (0.1, 0.5, 0.9))]
    assert gap[0] > gap[2]
    with pytest.raises(ValueError, match="scale"):
        T.random_crops(x, 0.0, _gen(0))


def test_resized_crop_matches_interpolate_of_the_box():
    x = _images(3, size=16)
    top, left = torch.tensor([0, 3, 5]), torch.tensor([2, 0, 6])
    h, w = torch.tensor([8, 10, 11]), torch.tensor([12, 9, 7])
    out = T.resized_crop(x, top, left, h, w)
    for i in range(3):
        box = x[i:i + 1, :, int(top[i]):int(top[i] + h[i]), int(left[i]):int(left[i] + w[i])]
        ref = F.interpolate(box, size=(16, 16), mode="bilinear", align_corners=False)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)


def test_random_shifts_zero_is_identity():
    x = _images(size=18)
    x1, x2 = T.random_shifts(x, 0, _gen(0))
    assert torch.equal(x1, x) and torch.equal(x2, x)


def test_random_shifts_are_integer_translations():
    x = _images(6, size=32)
    x1, x2 = T.random_shifts(x, 4, _gen(0), size=28)  # source = x itself (28 + 4 = 32), two 28x28 windows
    assert x1.shape == (6, 3, 28, 28)
    for view in (x1, x2):
        for i in range(6):
            hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(view[i], x[i, :, a:a + 28, b:b + 28])]
            assert hits, "each view is an exact window of the source"
    assert any(not torch.equal(x1[i], x2[i]) for i in range(6))
    y1, _ = T.random_shifts(x, 4, _gen(0), size=28)
    assert torch.equal(x1, y1)


def test_random_shifts_upsample_small_inputs():
    x = _images(2, size=28)
    x1, x2 = T.random_shifts(x, 4, _gen(0))  # default size 28: source is x resized to 32
    assert x1.shape == x.shape and x2.shape == x.shape and 0 <= float(x1.min()) and float(x1.max()) <= 1


def test_random_resized_crop_properties():
    x = _images(8, size=20)
    y = T.random_resized_crop(x, _gen(0))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(T.random_resized_crop(x, _gen(0)), y)
    assert torch.allclose(T.random_resized_crop(x, _gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-6)


# ------------------------------------------------------------------------------------------------ flips, shift, specs


def test_hflip_and_shift():
    x = _images(4)
    assert torch.equal(T.hflip(x, _gen(0), p=1.0), x.flip(-1)) and torch.equal(T.hflip(x, _gen(0), p=0.0), x)
    mixed = T.hflip(_images(64), _gen(0))
    flipped = sum(bool(torch.equal(a, b.flip(-1))) for a, b in zip(mixed, _images(64)))
    assert 16 < flipped < 48
    assert torch.equal(T.shift(x, _gen(0), max_shift=0), x)
    moved = T.shift(torch.ones(4, 1, 8, 8), _gen(1), max_shift=3)  # zero padding shows as a dark border
    assert moved.shape == (4, 1, 8, 8) and float(moved.min()) == 0.0
    assert float(T.shift(torch.ones(4, 1, 8, 8), _gen(1), max_shift=3, padding="reflect").min()) == 1.0


def test_build_augment_specs():
    x = _images(8)
    aug = T.build_augment([{"name": "color_jitter", "strength": 0.4, "hue": 0.2}, {"name": "random_resized_crop"},
                           {"name": "hflip"}, {"name": "shift", "max_shift": 2, "padding": "reflect"}])
    y = aug(x, _gen(5))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(aug(x, _gen(5)), y) and not torch.equal(aug(x, _gen(6)), y)
    assert torch.equal(T.build_augment([])(x, _gen(0)), x) and torch.equal(T.build_augment([{"name": "none"}])(x), x)
    jitter = T.build_augment([{"name": "color_jitter", "strength": 0.4, "hue": 0.2, "contrast": 0.0}]).steps[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.4, 0.0, 0.4, 0.2)
    assert T.build_augment([{"name": "color_jitter", "brightness": 0.4}]).steps[0].saturation == 0.0
    same = T.color_jitter(x, 0.4, 0.2, _gen(9))
    assert torch.equal(T.build_augment([{"name": "color_jitter", "strength": 0.4, "hue": 0.2}])(x, _gen(9)), same)
    crop = T.build_augment([{"name": "random_resized_crop", "scale": [0.5, 1.0]}]).steps[0]
    assert crop.scale == (0.5, 1.0) and math.isclose(crop.ratio[0], 0.75)


def test_build_augment_errors():
    known = "color_jitter, random_resized_crop, hflip, shift, none"
    with pytest.raises(ValueError, match=f"unknown augmentation 'blur'; known: {known}"):
        T.build_augment([{"name": "blur"}])
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) \\['strenght'\\]; accepted"):
        T.build_augment([{"name": "color_jitter", "strenght": 0.4}])
    with pytest.raises(ValueError, match="scale"):
        T.build_augment([{"name": "random_resized_crop", "scale": [0.9, 0.1]}])
    with pytest.raises(ValueError, match="padding"):
        T.build_augment([{"name": "shift", "padding": "wrap"}])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator():
    x = _images(8, size=24)
    aug = T.build_augment([{"name": "color_jitter", "strength": 0.4, "hue": 0.2}, {"name": "random_resized_crop"},
                           {"name": "hflip"}, {"name": "shift", "max_shift": 2}])
    cpu = aug(x, _gen(0))
    gpu = aug(x.cuda(), _gen(0))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    a, b = T.random_crops(x.cuda(), 0.3, _gen(0))
    c, d = T.random_crops(x, 0.3, _gen(0))
    assert torch.allclose(a.cpu(), c, atol=1e-4) and torch.allclose(b.cpu(), d, atol=1e-4)
    s1, s2 = T.random_shifts(x.cuda(), 4, torch.Generator(device="cuda").manual_seed(0))
    assert s1.is_cuda and s1.shape == x.shape
