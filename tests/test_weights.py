"""Weights from local files: reference resolution, strict loading, clear errors, and no code run from a pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from torchvision.models import get_weight

from kdclaims.models import WeightsNotFound, create_model, load_weights, resolve_weights
from kdclaims.models.weights import UnsafeCheckpoint, UnsafePath, torchvision_filename

torch.set_num_threads(1)

RESNET50_V1 = "resnet50-0676ba61.pth"  # torchvision 0.29's file name for ResNet50_Weights.IMAGENET1K_V1


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_file_names():
    assert torchvision_filename("resnet50", "IMAGENET1K_V1") == RESNET50_V1
    assert torchvision_filename("vgg19_bn", "IMAGENET1K_V1").startswith("vgg19_bn-")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):  # lists the known tags
        torchvision_filename("resnet50", "NO_SUCH_TAG")
    with pytest.raises(ValueError, match="no model"):
        torchvision_filename("no_such_net", "IMAGENET1K_V1")


def test_round_trip_under_the_torchvision_file_name(tmp_path: Path):
    torch.manual_seed(0)
    source = create_model("resnet18", 1000)
    torch.manual_seed(1)
    target = create_model("resnet18", 1000)
    assert not same_weights(source.net, target.net)
    # torch.hub's own naming of a downloaded file: the basename of the URL's path
    name = os.path.basename(urlparse(get_weight("ResNet18_Weights.IMAGENET1K_V1").url).path)
    torch.save(source.net.state_dict(), tmp_path / name)
    ref = "torchvision/resnet18-IMAGENET1K_V1"
    assert resolve_weights(ref, tmp_path) == tmp_path / name
    load_weights(target, ref, tmp_path)
    assert same_weights(source.net, target.net)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "classifier"])
def test_file_references_and_wrapped_checkpoints(tmp_path: Path, wrap: str):
    torch.manual_seed(0)
    source = create_model("tiny_cnn", 10)
    target = create_model("tiny_cnn", 10)
    sd = source.net.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {}},
        "module_prefix": {"state_dict": {"module." + k: v for k, v in sd.items()}},
        "classifier": source.state_dict(),  # keys "net.*"
    }[wrap]
    (tmp_path / "sub").mkdir()
    torch.save(obj, tmp_path / "sub" / "w.pth")
    load_weights(target, "file:sub/w.pth", tmp_path)
    assert same_weights(source.net, target.net)


def test_plain_and_absolute_paths(tmp_path: Path):
    model = create_model("tiny_cnn", 10)
    torch.save(model.net.state_dict(), tmp_path / "w.pth")
    assert resolve_weights("w.pth", tmp_path) == tmp_path / "w.pth"
    assert resolve_weights("a/../w.pth", tmp_path) == tmp_path / "w.pth"  # stays inside: allowed
    assert resolve_weights(f"file:{tmp_path / 'w.pth'}", None) == tmp_path / "w.pth"
    load_weights(create_model("tiny_cnn", 10), str(tmp_path / "w.pth"), Path("/nonexistent"))


def test_strict_load_names_the_file(tmp_path: Path):
    torch.save(create_model("tiny_cnn", 10).net.state_dict(), tmp_path / "w.pth")
    with pytest.raises(RuntimeError, match=r"w\.pth.*do not fit model tiny_cnn_wide"):
        load_weights(create_model("tiny_cnn_wide", 10), "file:w.pth", tmp_path)
    sd = create_model("tiny_cnn", 10).net.state_dict()
    sd.pop("fc2.bias")
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="fc2.bias"):
        load_weights(create_model("tiny_cnn", 10), "file:partial.pth", tmp_path)


def test_missing_file_message(tmp_path: Path):
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights("torchvision/resnet50-IMAGENET1K_V1", tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert RESNET50_V1 in msg and str(tmp_path) in msg and "--kd-weights DIR" in msg
    with pytest.raises(WeightsNotFound, match=r"'teacher\.pth'"):
        load_weights(create_model("tiny_cnn", 10), "file:teacher.pth", tmp_path)


def test_default_torchvision_dir_is_torch_hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights("torchvision/resnet50-IMAGENET1K_V1", None)
    assert info.value.directory == tmp_path / "hub" / "checkpoints"


class Evil:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_executing_pickle_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(1), "payload": Evil(marker)}, tmp_path / "evil.pth")
    model = create_model("tiny_cnn", 10)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    with pytest.raises(UnsafeCheckpoint) as info:
        load_weights(model, "file:evil.pth", tmp_path)
    assert isinstance(info.value, pickle.UnpicklingError)
    msg = str(info.value)
    assert "evil.pth" in msg and "weights_only=True" in msg and "state dict" in msg
    assert not marker.exists(), "the pickle's payload ran"
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())


@pytest.mark.parametrize("ref", ["file:../w.pth", "../w.pth", "a/../../w.pth", "file:./../../etc/passwd"])
def test_escape_from_the_weights_dir_is_refused(tmp_path: Path, ref: str):
    inner = tmp_path / "weights"
    inner.mkdir()
    torch.save(create_model("tiny_cnn", 10).net.state_dict(), tmp_path / "w.pth")  # exists, but outside
    with pytest.raises(UnsafePath, match="leaves the weights directory"):
        resolve_weights(ref, inner)


def test_not_a_state_dict(tmp_path: Path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        load_weights(create_model("tiny_cnn", 10), "file:list.pth", tmp_path)


def test_malformed_references(tmp_path: Path):
    for ref in ("torchvision/resnet50", "torchvision/-IMAGENET1K_V1", "file:"):
        with pytest.raises(ValueError):
            resolve_weights(ref, tmp_path)


def test_nothing_is_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_network(*_a, **_k):
        raise AssertionError("a download was attempted")

    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsNotFound):
        load_weights(create_model("tiny_cnn", 10), "torchvision/resnet18-IMAGENET1K_V1", tmp_path)
