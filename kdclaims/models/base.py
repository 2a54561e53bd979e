"""The model wrapper every registered model returns, and forward-hook feature taps keyed by module path."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

LOGITS = "logits"  # tap name for the model's own output


class Classifier(nn.Module):
    """``x in [0, 1] -> normalise -> net -> logits``.

    ``taps`` maps tap names (``F1``..``F7``, ``penultimate``, ``hint``, ``cam``) to dotted module paths inside
    this wrapper (e.g. ``net.layer2``) or to ``"logits"``. ``tap_transforms`` optionally reshapes a tap's raw
    output (a ViT's tokens into a (B, C, 7, 7) map, a tuple output into a tensor).
    The wrapped network is never modified: taps are forward hooks (``FeatureTaps``).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        mean: Iterable[float],
        std: Iterable[float],
        taps: dict[str, str],
        tap_transforms: dict[str, Callable[[Tensor], Tensor]] | None = None,
    ):
        super().__init__()
        self.net = net
        self.arch = arch
        mean, std = list(mean), list(std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.taps = dict(taps)
        self.tap_transforms = dict(tap_transforms or {})

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)

    def tap_path(self, name: str) -> str:
        """Module path of a tap; a name that is already a module path passes through."""
        if name in self.taps:
            return self.taps[name]
        if name == LOGITS or name in dict(self.named_modules()):
            return name
        raise KeyError(f"model {self.arch} has no tap '{name}'; taps: {sorted(self.taps)}")


class FeatureTaps:
    """Collect features at named taps during a forward pass, through forward hooks removed on exit.

    >>> with FeatureTaps(model, ["F3", "penultimate"]) as taps:
    ...     logits = model(x)
    ...     f3 = taps["F3"]
    Features keep their autograd graph (distillation losses backpropagate through them).
    """

    def __init__(self, model: Classifier, names: Iterable[str]):
        self.model = model
        self.names = list(names)
        self.features: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "FeatureTaps":
        modules = dict(self.model.named_modules())
        for name in self.names:
            path = self.model.tap_path(name)
            module = self.model if path == LOGITS else modules[path]
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        transform = self.model.tap_transforms.get(name)

        def hook(_module: nn.Module, _inp, out) -> None:
            if isinstance(out, (tuple, list)):
                out = out[0]
            self.features[name] = transform(out) if transform else out

        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> Tensor:
        return self.features[name]
