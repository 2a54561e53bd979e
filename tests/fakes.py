"""Test doubles for the probes: a ModelBank over given modules, tiny CNN classifiers and synthetic splits."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.models.common import tokens_to_map

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
NUM_CLASSES = 3


class FakeBank:
    """A ``ModelBank`` over fixed models: ``models[(arm, seed)]`` for students, ``models[name]`` for teachers.

    ``splits`` maps the ``data`` argument of ``eval_split`` (``None`` for the default) to a ``Split``.
    """

    def __init__(
        self,
        models: dict[Any, nn.Module],
        seeds: list[int],
        arms: list[str],
        teachers: list[str],
        splits: dict[Any, Split],
    ):
        self._models, self.seeds, self.arms, self.teachers = models, list(seeds), list(arms), list(teachers)
        self._splits = splits
        self.device = torch.device("cpu")

    def model(self, name: str, seed: int | None = None) -> Classifier:
        return self._models[name] if name in self.teachers else self._models[(name, seed)]

    def eval_split(self, data: Any = None) -> Split:
        return self._splits[data]

    def arm_method(self, arm: str) -> str:
        return arm

    def all_models(self) -> list[nn.Module]:
        return list(self._models.values())


class TinyCNN(nn.Module):
    """conv(3->8) ReLU conv(8->16, stride) ReLU [tap 'cam' = index 3] GAP linear."""

    def __init__(self, num_classes: int = NUM_CLASSES, stride: int = 2, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, width, 3, stride=stride, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean((2, 3)))


class TinyTokenNet(nn.Module):
    """A ViT-shaped toy: conv patches -> tokens (B, 1 + h*w, C) with a class token -> ``block`` (the tap, its
    output is tokens) -> mean over tokens -> linear."""

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, width))
        self.block = nn.Sequential(nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1)
        return self.head(self.block(tokens).mean(1))


class Constant(nn.Module):
    """Logits that ignore the input."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.logits = nn.Parameter(torch.linspace(-1.0, 1.0, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(len(x), -1)


def tiny_classifier(seed: int, num_classes: int = NUM_CLASSES, stride: int = 2) -> Classifier:
    torch.manual_seed(seed)
    net = TinyCNN(num_classes, stride)
    taps = {"cam": "net.body.3", "early": "net.body.1"}
    return Classifier(net, arch="tiny_cnn", mean=MEAN, std=STD, taps=taps).eval()


def token_classifier(seed: int) -> Classifier:
    """``TinyTokenNet`` with tap ``cam`` on its token block, reshaped to a map by ``tokens_to_map``."""
    torch.manual_seed(seed)
    return Classifier(TinyTokenNet(), arch="tiny_tokens", mean=MEAN, std=STD, taps={"cam": "net.block"},
                      tap_transforms={"cam": tokens_to_map}).eval()


def constant_classifier(num_classes: int = NUM_CLASSES) -> Classifier:
    return Classifier(Constant(num_classes), arch="constant", mean=MEAN, std=STD, taps={}).eval()


def image_split(n: int = 48, size: int = 16, seed: int = 0, name: str = "test") -> Split:
    """Smooth random colour images (blobs) in [0, 1]; the label (of 3) is the channel with the largest mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, max(1, size // 4), max(1, size // 4), generator=g)
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return Split(name, x, x.mean((2, 3)).argmax(1), num_classes=NUM_CLASSES, mean=MEAN, std=STD)


@functools.lru_cache(maxsize=None)
def trained_classifier(seed: int, steps: int = 30, stride: int = 2) -> Classifier:
    """A tiny CNN fitted for a few Adam steps to ``image_split``'s task, so that its predictions vary.

    Cached: callers share one object and must not modify it.
    """
    model = tiny_classifier(seed, stride=stride).train()
    data = image_split(256, size=16, seed=1000 + seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def hooks_left(models: list[nn.Module]) -> list[str]:
    """Names of modules that still carry a forward, pre-forward or backward hook."""
    left = []
    for i, model in enumerate(models):
        for name, m in model.named_modules():
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
                left.append(f"model {i}: {name or '<root>'}")
    return left
