"""Model registry, builders and feature taps: every model's taps exist, sit where they should, and leave no hooks."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from kdclaims.models import TAP_NAMES, FeatureTaps, create_model
from kdclaims.models.base import Classifier
from kdclaims.models.common import DeterministicAdaptiveAvgPool2d, replace_first_conv
from kdclaims.registries import MODELS
from kdclaims.registry import UnknownName

torch.set_num_threads(1)

TAPS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "penultimate", "hint", "cam")
assert TAP_NAMES == TAPS
NC = 10  # classes


def _rn(c: tuple[int, ...], s: int) -> dict[str, tuple[int, ...]]:
    """ImageNet ResNet tap shapes at input size s (stem /4, stages /4 /8 /16 /32) for stage widths c."""
    f = {"F1": (64, s // 4, s // 4)} | {f"F{i + 2}": (c[i], s // (4 * 2**i), s // (4 * 2**i)) for i in range(4)}
    return f | {"F6": (c[3],), "penultimate": (c[3],), "hint": f["F3"], "cam": f["F5"]}


def _vgg(s: int) -> dict[str, tuple[int, ...]]:
    chans = (64, 128, 256, 512, 512)
    f = {f"F{i + 1}": (c, s // 2 ** (i + 1), s // 2 ** (i + 1)) for i, c in enumerate(chans)}
    return f | {"F6": (4096,), "penultimate": (4096,), "hint": (256, s // 4, s // 4), "cam": f["F5"]}


def _swin(c: int) -> dict[str, tuple[int, ...]]:  # at 224px
    f = {f"F{i + 1}": (c * 2**i, 56 // 2**i, 56 // 2**i) for i in range(4)}
    return f | {"F5": (8 * c, 7, 7), "F6": (8 * c,), "penultimate": (8 * c,), "hint": f["F2"], "cam": (8 * c, 7, 7)}


def _cifar(s: int) -> dict[str, tuple[int, ...]]:
    f = {"F1": (16, s, s), "F2": (16, s, s), "F3": (32, s // 2, s // 2), "F4": (64, s // 4, s // 4)}
    f["F5"] = (64, s // 4, s // 4)
    return f | {"F6": (64,), "penultimate": (64,), "hint": f["F3"], "cam": f["F5"]}


def _tiny(w: int, s: int) -> dict[str, tuple[int, ...]]:
    f = {"F1": (w, s, s), "F2": (w, s // 2, s // 2), "F3": (2 * w, s // 2, s // 2), "F4": (2 * w, s // 4, s // 4)}
    return f | {"F5": (2 * w,), "F6": (4 * w,), "penultimate": (4 * w,), "hint": f["F2"], "cam": f["F4"]}


def _mnist(c1: int, c2: int) -> dict[str, tuple[int, ...]]:  # at 28px: 3x3 valid convs -> 26, 24; pool -> 12
    f = {"F1": (c1, 26, 26), "F2": (c1, 26, 26), "F3": (c2, 24, 24), "F4": (c2, 24, 24), "F5": (c2, 12, 12)}
    return f | {"F6": (128,), "penultimate": (128,), "hint": f["F4"], "cam": f["F5"]}


_ZOO = {  # name -> tap shapes at 32 px (CIFAR forms: wrn 8x8 at the end, vgg 2x2, shufflenet 4x4)
    "wrn_40_2": {"F1": (16, 32, 32), "F2": (32, 32, 32), "F3": (64, 16, 16), "F4": (128, 8, 8), "F5": (128, 8, 8),
                 "F6": (128,)},
    "vgg8_cifar": {"F1": (64, 32, 32), "F2": (128, 16, 16), "F3": (256, 8, 8), "F4": (512, 4, 4), "F5": (512, 2, 2),
                   "F6": (512,)},
    "vgg13_cifar": {"F1": (64, 32, 32), "F2": (128, 16, 16), "F3": (256, 8, 8), "F4": (512, 2, 2),
                    "F5": (512, 2, 2), "F6": (512,)},
    "shufflenet_v1": {"F1": (24, 32, 32), "F2": (240, 16, 16), "F3": (480, 8, 8), "F4": (960, 4, 4),
                      "F5": (960, 4, 4), "F6": (960,)},
}
_ZOO = {k: v | {"penultimate": v["F6"], "hint": v["F3"], "cam": v["F5"]} for k, v in _ZOO.items()}

_VIT = {f"F{i}": (768, 7, 7) for i in range(1, 6)} | {"F6": (768,), "penultimate": (768,)}
_VIT |= {"hint": (768, 7, 7), "cam": (768, 7, 7)}

# name -> (input size, expected per-image tap shapes, module path of the classification head)
EXPECTED: dict[str, tuple[int, dict[str, tuple[int, ...]], str]] = {
    "tiny_cnn": (32, _tiny(8, 32), "net.fc2"),
    "tiny_cnn_wide": (32, _tiny(16, 32), "net.fc2"),
    "mnist_net": (28, _mnist(32, 64), "net.fc2"),
    "mnist_net_small": (28, _mnist(16, 32), "net.fc2"),
    "mnist_net_wide": (28, _mnist(64, 128), "net.fc2"),
    "resnet20": (32, _cifar(32), "net.fc"),
    "resnet8": (32, _cifar(32), "net.fc"),
    "resnet18": (64, _rn((64, 128, 256, 512), 64), "net.fc"),
    "resnet50": (64, _rn((256, 512, 1024, 2048), 64), "net.fc"),
    "resnet18_aa": (64, _rn((64, 128, 256, 512), 64), "net.fc"),
    "resnet50_aa": (64, _rn((256, 512, 1024, 2048), 64), "net.fc"),
    "vgg11": (64, _vgg(64), "net.classifier.6"),
    "vgg11_bn": (64, _vgg(64), "net.classifier.6"),
    "vgg19": (64, _vgg(64), "net.classifier.6"),
    "vgg19_bn": (64, _vgg(64), "net.classifier.6"),
    "vit_b_32": (224, _VIT, "net.heads"),
    "swin_t": (224, _swin(96), "net.head"),
    "swin_b": (224, _swin(128), "net.head"),
    **{name: (32, shapes, "net.fc") for name, shapes in _ZOO.items()},
}


@lru_cache(maxsize=None)
def built(name: str) -> Classifier:
    torch.manual_seed(0)
    return create_model(name, NC)


def run_taps(model: Classifier, x: torch.Tensor, names=TAPS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with FeatureTaps(model, names) as taps:
        logits = model(x)
    return logits, dict(taps.features)


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_registry_holds_the_required_models():
    assert set(EXPECTED) <= set(MODELS), sorted(set(EXPECTED) - set(MODELS))
    assert "timm/resnet18" in MODELS
    assert set(MODELS) == set(EXPECTED), "a registered model is missing from the shape table of this test"


# the large ImageNet architectures take seconds each on 2 cores: CI runs them in its `-m slow` step
SLOW_ARCHS = {"swin_b", "vgg19_bn", "vgg19", "vgg11_bn", "vit_b_32", "resnet50_aa"}


def _arch_params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ARCHS else n for n in names]


@pytest.mark.parametrize("name", _arch_params(sorted(EXPECTED)))
def test_taps_shapes_and_head_input(name: str):
    size, shapes, head_path = EXPECTED[name]
    model = built(name).train()  # train mode: dropout active, the penultimate tap must still be the head's input
    torch.manual_seed(1)
    batch = 2 if size <= 32 else 1  # big nets: one image (BatchNorm still sees >= 2x2 values per channel)
    x = torch.rand(batch, 3, size, size)
    logits, feats = run_taps(model, x)
    assert logits.shape == (batch, NC)
    assert set(feats) == set(TAPS)
    got = {k: tuple(v.shape[1:]) for k, v in feats.items()}
    assert got == shapes | {"F7": (NC,)}
    assert torch.equal(feats["F7"], logits)
    head = model.get_submodule(head_path)
    assert torch.allclose(head(feats["penultimate"]), logits, atol=1e-5, rtol=1e-5)
    assert hooks_left(model) == 0
    cam = feats["cam"]
    assert cam.ndim == 4 and min(cam.shape[-2:]) >= 2, "the CAM layer needs spatial extent"


def test_resnet18_taps_at_224_match_the_paper():
    """Sec. 4.3 / App. A: F1 is 56x56x64, the Hint layer 28x28; Grad-CAM at layer4 (7x7)."""
    model = built("resnet18").eval()
    with torch.no_grad():
        _, f = run_taps(model, torch.rand(1, 3, 224, 224), ["F1", "hint", "cam"])
    assert f["F1"].shape == (1, 64, 56, 56)
    assert f["hint"].shape == (1, 128, 28, 28)
    assert f["cam"].shape == (1, 512, 7, 7)


@pytest.mark.parametrize("name,conv", [("vgg11", 4), pytest.param("vgg11_bn", 4, marks=pytest.mark.slow),
                                       pytest.param("vgg19", 7, marks=pytest.mark.slow),
                                       pytest.param("vgg19_bn", 7, marks=pytest.mark.slow)])
def test_vgg_hint_follows_the_right_conv(name: str, conv: int):
    """App. A: VGG11's Hint layer comes after its 4th conv, VGG19's after its 7th (both 56x56 at 224px)."""
    model = built(name)
    index = int(model.taps["hint"].rsplit(".", 1)[1])
    features = model.net.features
    assert isinstance(features[index], nn.ReLU)
    assert sum(isinstance(m, nn.Conv2d) for m in features[:index]) == conv
    assert isinstance(features[index - 1], (nn.Conv2d, nn.BatchNorm2d))  # the ReLU right after that conv (+BN)


@pytest.mark.slow
def test_vit_taps_are_the_tokens_folded():
    model = built("vit_b_32").eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad(), FeatureTaps(model, ["hint", "F6"]) as taps, FeatureTaps(model, ["net.encoder"]) as raw:
        model(x)
    tokens = raw["net.encoder"]  # (1, 50, 768): class token, then 7x7 patches row by row
    assert tokens.shape == (1, 50, 768)
    assert torch.equal(taps["F6"], tokens[:, 0])
    assert torch.equal(taps["hint"][0, :, 2, 5], tokens[0, 1 + 2 * 7 + 5])


def test_swin_stage_taps_are_nchw():
    model = built("swin_t").eval()
    with torch.no_grad(), FeatureTaps(model, ["F2"]) as taps, FeatureTaps(model, ["net.features.3"]) as raw:
        model(torch.rand(1, 3, 224, 224))
    assert raw["net.features.3"].shape == (1, 28, 28, 192)  # torchvision's Swin stages are NHWC
    assert torch.equal(taps["F2"], raw["net.features.3"].permute(0, 3, 1, 2))


def test_no_hook_remains_after_an_error_inside_the_block():
    model = built("tiny_cnn")
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureTaps(model, TAPS):
            model(torch.rand(1, 3, 16, 16))
            raise RuntimeError("boom")
    assert hooks_left(model) == 0


@pytest.mark.parametrize("size", [8, 16, 32])
def test_small_nets_work_from_8_to_32_pixels_with_a_cam_of_extent(size: int):
    for name in ("tiny_cnn", "resnet8"):
        _, f = run_taps(built(name).eval(), torch.rand(1, 3, size, size), ["cam", "F7"])
        assert min(f["cam"].shape[-2:]) >= 2 and f["F7"].shape == (1, NC)
    m = create_model("mnist_net_small", NC, in_chans=1, image_size=size)
    _, f = run_taps(m.eval(), torch.rand(1, 1, size, size), ["cam", "F7"])
    assert min(f["cam"].shape[-2:]) >= 2 and f["F7"].shape == (1, NC)


@pytest.mark.parametrize("size", [8, 28, 32])
def test_mnist_net_flatten_follows_the_input_size(size: int):
    model = create_model("mnist_net", NC, in_chans=1, image_size=size)
    assert model.net.fc1.in_features == 64 * ((size - 4) // 2) ** 2
    assert model(torch.rand(2, 1, size, size)).shape == (2, NC)


def test_mnist_net_is_the_papers_network():
    """App. A: Conv(32) -> Conv(64) -> MaxPool -> Dropout(0.25) -> Linear(9216, 128) -> Dropout(0.5) -> Linear."""
    net = create_model("mnist_net", NC, in_chans=1).net
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv2.out_channels) == (1, 32, 64)
    assert (net.fc1.in_features, net.fc1.out_features, net.fc2.out_features) == (9216, 128, NC)
    assert (net.dropout1.p, net.dropout2.p) == (0.25, 0.5)
    names = [type(m).__name__ for m in net]
    assert names == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout", "Flatten", "Linear", "ReLU",
                     "Dropout", "Linear"]


def test_model_sizes():
    n = {k: sum(p.numel() for p in built(k).parameters()) for k in ("tiny_cnn", "tiny_cnn_wide", "resnet20", "resnet8")}
    assert 1_000 < n["tiny_cnn"] < 10_000
    assert n["tiny_cnn"] < n["tiny_cnn_wide"] < 50_000
    assert 0.26e6 < n["resnet20"] < 0.28e6  # He et al. 2016, Table 6: 0.27M
    assert n["resnet8"] < n["resnet20"]
    wide = create_model("resnet8", NC, width=2)
    assert wide.net.fc.in_features == 128


@pytest.mark.parametrize(
    "name,size",
    [("tiny_cnn", 16), ("mnist_net", 28), ("resnet8", 32), ("resnet18", 64), ("resnet18_aa", 64),
     ("swin_t", 64), ("timm/resnet18", 64)],
)
def test_in_chans_1(name: str, size: int):
    model = create_model(name, NC, in_chans=1).eval()
    first = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    assert model.mean.shape == (1, 1, 1, 1) and model.std.shape == (1, 1, 1, 1)
    with torch.no_grad():
        logits, f = run_taps(model, torch.rand(1, 1, size, size), ["F1", "hint"])
    assert logits.shape == (1, NC) and f["F1"].ndim == 4 and f["hint"].ndim == 4


def test_replace_first_conv_keeps_the_geometry():
    seq = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 8, 3))
    replace_first_conv(seq, 4)
    c = seq[0]
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) == (4, 8, (5, 5), (2, 2), (2, 2))
    assert seq[2].in_channels == 8


def test_mean_std_defaults_and_checks():
    assert torch.allclose(built("resnet18").mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(built("tiny_cnn").std.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    m = create_model("tiny_cnn", NC, in_chans=2, mean=(0.1, 0.2), std=(0.3, 0.4))
    assert m.mean.flatten().tolist() == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="in_chans"):
        create_model("tiny_cnn", NC, in_chans=1, mean=(0.1, 0.2), std=(0.3, 0.4))
    with pytest.raises(UnknownName, match="tiny_cnn"):
        create_model("no_such_model", NC)


POOL_CASES = [
    ((7, 7), (7, 7)), ((14, 14), (7, 7)), ((5, 6), 1), ((2, 2), (7, 7)), ((9, 9), (4, 4)),
    ((8, 8), (None, 2)),
]


@pytest.mark.parametrize("hw,out", POOL_CASES)
def test_deterministic_adaptive_pool_equals_torch(hw: tuple[int, int], out):
    x = torch.randn(2, 3, *hw)
    assert torch.allclose(DeterministicAdaptiveAvgPool2d(out)(x), nn.AdaptiveAvgPool2d(out)(x), atol=1e-6)


def test_no_adaptive_avg_pool_left_in_imagenet_models():
    for name in ("resnet18", "vgg11", "swin_t", "resnet18_aa"):
        assert not any(type(m) is nn.AdaptiveAvgPool2d for m in built(name).modules()), name


def test_timm_prefix_vit_tokens_and_cam():
    model = create_model("timm/vit_tiny_patch16_224", NC).eval()
    assert model.arch == "timm/vit_tiny_patch16_224"
    assert model.taps["cam"].endswith(".norm1")  # class-token pooling: patch tokens get no gradient at the output
    with torch.no_grad():
        logits, f = run_taps(model, torch.rand(1, 3, 224, 224))
    assert {k: tuple(v.shape[1:]) for k, v in f.items() if v.ndim == 4} == {
        k: (192, 14, 14) for k in ("F1", "F2", "F3", "F4", "F5", "hint", "cam")
    }
    assert torch.allclose(model.net.get_classifier()(f["penultimate"]), logits, atol=1e-5)


def test_models_deep_copy_and_their_tap_transforms_pickle():
    import copy
    import pickle

    twin = copy.deepcopy(built("resnet18")).eval()
    _, f = run_taps(twin, torch.rand(1, 3, 64, 64), ["F6"])
    assert f["F6"].shape == (1, 512)
    for name in ("resnet18", "vit_b_32", "swin_t"):
        transforms = pickle.loads(pickle.dumps(built(name).tap_transforms))
        assert set(transforms) == set(built(name).tap_transforms)


def test_cifar_zoo_sizes_match_the_crd_release():
    """Parameter counts at 100 classes as in CRD's CIFAR-100 zoo (wrn_40_2 2.26M, vgg8 3.97M, vgg13 9.46M,
    ShuffleV1 0.95M; ours 1.0M); fails if a width, depth or group count is wrong."""
    n = {k: sum(p.numel() for p in create_model(k, 100).parameters()) / 1e6
         for k in ("wrn_40_2", "vgg8_cifar", "vgg13_cifar", "shufflenet_v1")}
    assert 2.2 < n["wrn_40_2"] < 2.3 and 3.9 < n["vgg8_cifar"] < 4.0 and 9.4 < n["vgg13_cifar"] < 9.5
    assert 0.9 < n["shufflenet_v1"] < 1.05
