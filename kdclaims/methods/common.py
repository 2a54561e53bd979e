"""Shared plumbing of the distillation methods: strict builder parameters, CE, feature taps, shape inference."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.methods.base import Distiller
from kdclaims.models.base import Classifier, FeatureTaps

_FIXED = ("student", "teacher", "train_split")


def method_builder(name: str, cls: type[Distiller]) -> Callable[[Callable[..., Distiller]], Callable[..., Distiller]]:
    """Wrap a builder ``(student, teacher, train_split, *, p1=..., ...)`` so that unknown params raise.

    A YAML typo such as ``tua: 4`` must fail loudly: the wrapper raises ``TypeError`` naming the method and the
    parameters it accepts. The wrapped builder carries ``method``, ``accepted_params``, ``needs_teacher`` and
    ``needs_index`` (read from ``cls``) so that callers can decide what to load before building anything.
    """

    def deco(builder: Callable[..., Distiller]) -> Callable[..., Distiller]:
        sig = inspect.signature(builder)
        names = list(sig.parameters)
        if tuple(names[:3]) != _FIXED:
            raise TypeError(f"builder of method '{name}' must start with {_FIXED}, got {names[:3]}")
        rest = list(sig.parameters.values())[3:]
        if any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in rest):
            raise TypeError(f"builder of method '{name}': method parameters must be explicit keyword-only")
        accepted = tuple(p.name for p in rest)

        @functools.wraps(builder)
        def wrapped(student: Classifier, teacher: Classifier | None, train_split: Any, **params: Any) -> Distiller:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise TypeError(
                    f"method '{name}' got unknown parameter(s) {unknown}; accepted: {list(accepted)}"
                )
            if cls.needs_teacher and teacher is None:
                raise ValueError(f"method '{name}' needs a teacher, got None")
            return builder(student, teacher, train_split, **params)

        wrapped.method = name  # type: ignore[attr-defined]
        wrapped.accepted_params = accepted  # type: ignore[attr-defined]
        wrapped.needs_teacher = cls.needs_teacher  # type: ignore[attr-defined]
        wrapped.needs_index = cls.needs_index  # type: ignore[attr-defined]
        return wrapped

    return deco


def method_params(builder: Callable[..., Distiller]) -> dict[str, Any]:
    """The parameters a registered builder accepts, with their defaults."""
    sig = inspect.signature(builder)  # follows __wrapped__
    return {n: p.default for n, p in sig.parameters.items() if n not in _FIXED}


def check_range(method: str, name: str, value: float, *, low: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, raising ``ValueError`` unless ``value >= low`` (``> low`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"method '{method}': {name} must be a number, got {value!r}")
    ok = value > low if strict else value >= low
    if not ok:
        raise ValueError(f"method '{method}': {name} must be {'>' if strict else '>='} {low}, got {value}")
    return float(value)


def seed_from_torch(seed: int | None) -> int:
    """``seed`` itself, or one drawn from torch's global RNG (so a run seeded with ``torch.manual_seed`` repeats)."""
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**62, (), generator=None).item())


class CEDistiller(Distiller):
    """A distiller whose loss includes ``gamma * CE(student_logits, y)``.

    ``label_smoothing`` (an attribute, default 0) lets the trainer apply ``Recipe.label_smoothing`` to this CE.
    """

    label_smoothing: float = 0.0

    def __init__(self, student: Classifier, teacher: Classifier | None, *, gamma: float):
        super().__init__(student, teacher)
        self.gamma = gamma

    def ce(self, logits: Tensor, y: Tensor) -> Tensor:
        """``gamma * CE``, computed in float32 (``mean_i -log softmax(z_i)[y_i]``)."""
        return self.gamma * F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)

    def student_taps(self, x: Tensor, names: Iterable[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and its features at ``names`` (with autograd graph)."""
        with FeatureTaps(self.student, names) as taps:
            logits = self.student(x)
        return logits, dict(taps.features)

    @torch.no_grad()
    def teacher_taps(self, x: Tensor, names: Iterable[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher logits and its features at ``names``, without gradient (from the cache during a cached step)."""
        assert self.teacher is not None
        names = list(names)
        if self._teacher_cache is not None and self._cache_rows is not None and len(x) == len(self._cache_rows):
            feats = self._teacher_cache.taps_at(self._cache_rows, names)
            if feats is not None:
                logits = self._teacher_cache.logits_at(self._cache_rows).to(x.device)
                return logits, {k: v.to(x.device) for k, v in feats.items()}
        with FeatureTaps(self.teacher, names) as taps:
            logits = self.teacher(x)
        return logits, dict(taps.features)


def model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def infer_shapes(model: Classifier, names: Sequence[str], sample_shape: Sequence[int]) -> dict[str, torch.Size]:
    """Per-sample shapes of the features at ``names``, from one dummy forward of two zero images.

    Runs in eval mode without gradient and restores every submodule's mode, so BatchNorm statistics stay untouched.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        x = torch.zeros((2, *sample_shape), device=model_device(model))
        with FeatureTaps(model, names) as taps:
            model(x)
        return {n: taps[n].shape[1:] for n in names}
    finally:
        for m, mode in modes.items():
            m.training = mode


def sample_shape(train_split: Any) -> tuple[int, ...]:
    """(C, H, W) of the split's images."""
    return (train_split.channels, train_split.image_size, train_split.image_size)


def flat(f: Tensor) -> Tensor:
    """(B, ...) -> (B, D) in float32."""
    return f.reshape(f.shape[0], -1).float()


def _average_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n_out, n_in) rows averaging the windows ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``."""
    m = torch.zeros(n_out, n_in, device=device, dtype=dtype)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def pool_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Average-pool a (B, C, H, W) map to ``size`` with adaptive average pooling's windows.

    Whole ratios use fixed windows; other sizes use two averaging matrices (``A_h x A_w^T``), which equals
    ``adaptive_avg_pool2d`` but has a deterministic backward on CUDA.
    """
    h, w = x.shape[-2:]
    ho, wo = int(size[0]), int(size[1])
    if (h, w) == (ho, wo):
        return x
    if h % ho == 0 and w % wo == 0:
        return F.avg_pool2d(x, (h // ho, w // wo))
    a_h = _average_matrix(h, ho, x.device, x.dtype)
    a_w = _average_matrix(w, wo, x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", a_h, x, a_w)


class PoolTo(nn.Module):
    """``pool_to`` as a module (a no-op when the size already matches)."""

    def __init__(self, size: Sequence[int]):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: Tensor) -> Tensor:
        return pool_to(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def default_taps(student: Classifier, teacher: Classifier, wanted: Sequence[str]) -> list[str]:
    """The names in ``wanted`` that both models expose as taps, in order."""
    return [n for n in wanted if n in student.taps and n in teacher.taps]


def check_taps(method: str, model: Classifier, names: Iterable[str], who: str) -> None:
    """Raise ``ValueError`` naming the method when ``model`` has no tap (or module path) called one of ``names``."""
    for n in names:
        try:
            model.tap_path(n)
        except KeyError as e:
            raise ValueError(f"method '{method}': {who}: {e.args[0]}") from None


def rank_world() -> tuple[int, int]:
    """``(rank, world)`` of the initialised process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate ``t`` (rows may differ in number across ranks) from every rank, in rank order; ``t`` alone
    without a process group."""
    _, world = rank_world()
    if world == 1:
        return t
    dist = torch.distributed
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(s.item() for s in sizes))
    padded = torch.zeros((most, *t.shape[1:]), device=t.device, dtype=t.dtype)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over ranks (``t`` itself without a process group)."""
    _, world = rank_world()
    if world == 1:
        return t
    t = t.clone()
    torch.distributed.all_reduce(t)
    return t / world


class DeviceGenerators:
    """One ``torch.Generator`` per device, seeded with ``seed + rank`` on first use.

    ``state()``/``load()`` round-trip the generators through a module's extra state, so a run resumed from a
    checkpoint draws the same numbers as an uninterrupted one.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._gens: dict[str, torch.Generator] = {}

    def get(self, device: torch.device | str) -> torch.Generator:
        key = str(torch.device(device))
        if key not in self._gens:
            self._gens[key] = torch.Generator(device=key).manual_seed(self.seed + rank_world()[0])
        return self._gens[key]

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed, "states": {k: g.get_state() for k, g in self._gens.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._gens = {}
        for key, s in state["states"].items():
            if torch.device(key).type == "cuda" and not torch.cuda.is_available():
                continue  # a CUDA stream resumed without CUDA starts afresh from the seed
            g = torch.Generator(device=key)
            g.set_state(s.cpu())
            self._gens[key] = g
