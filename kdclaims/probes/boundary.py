"""Decision-boundary similarity (NeurIPS version, Table 1 and Fig. 7), after Somepalli et al. 2022.

A triplet is three images of three different classes drawn from one domain. With ``d1 = x1 - x0`` and
``d2 = x2 - x0``, the plane through them has the orthonormal basis (Gram-Schmidt)

    u = d1 / |d1|,   v = b / |b|   with   b = d2 - (d2 · u) u,

and the triplet sits at plane coordinates (0, 0), (|d1|, 0), (d2 · u, |b|). The grid covers the bounding box of
those three points widened by ``margin`` times its side on each side, ``resolution`` points per side; grid point
(s, t) is the image ``x0 + s u + t v`` (not clipped to [0, 1]: clipping would bend the plane).

Every model labels the grid (argmax of its logits). A student's score on a triplet compares its labels L with the
teacher's labels T over the G grid points:

- ``measure: agreement`` (default): (1/G) Σ_g 1[L_g = T_g]. Somepalli et al.'s released code computes this and
  calls it the IoU of the two labellings; the paper cites them for its score, so their definition is the default.
- ``measure: miou``: the mean over classes c in L ∪ T of |{L = c} ∩ {T = c}| / |{L = c} ∪ {T = c}|.

``boundary/<domain>[arm]`` has shape (n_seeds, n_triplets); every arm and seed sees the same triplets (paired).

Params (defaults and reasons):
- ``domains``: group names of the evaluation split, or datasets the bank resolves with ``eval_split(name)``;
  without it, one metric ``boundary`` over the whole split.
- ``triplets`` (50): Table 1 averages 50 triplets per domain.
- ``resolution`` (100): grid points per side. The released code uses 500; the score is a share of grid points, so a
  coarser grid shifts it only where boundaries fall between points (about 1/resolution of the extent); 100 keeps
  the CPU cost at 10,000 images per plane and model.
- ``margin`` (0.1): the released code's widening of the triplet's bounding box on each side.
- ``distinct_classes`` (true): the released sampler redraws an image until the three labels differ; with a repeated
  class a plane can lie inside one region and say nothing about boundaries.
- ``seed`` (0): the generator of the triplet draws (``numpy.random.default_rng(seed)``), one stream per domain.
- ``measure`` (``agreement``) as above; ``teacher`` (``teacher``): the model the students are compared with.
- ``figure_planes`` (3) and ``figure_domain`` (the first domain): the label grids of that many triplets (teacher,
  every arm at the first seed, at most ``FIGURE_SIDE`` points per side) go to ``extras["boundary_planes"]`` for the
  report's Fig. 7-like panels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.probes.base import Measurements, ModelBank
from kdclaims.probes.common import batch_size, check_params, model_device, over_slices, require_teacher, students
from kdclaims.registries import PROBES

PROBE = "boundary"
MEASURES = ("agreement", "miou")
FIGURE_SIDE = 64
MAX_DRAWS = 10_000  # redraws allowed per triplet before the split is declared unable to give one


@dataclass(frozen=True)
class Plane:
    """The grid through one triplet: ``origin + coef[:, 0] u + coef[:, 1] v`` for every grid point."""

    origin: Tensor  # (C, H, W) float64
    u: Tensor  # (C, H, W) float64, unit norm
    v: Tensor  # (C, H, W) float64, unit norm, orthogonal to u
    anchors: Tensor  # (3, 2) plane coordinates of the triplet's images
    coef: Tensor  # (resolution**2, 2) float64, row-major over (s, t)
    resolution: int

    def __len__(self) -> int:
        return len(self.coef)

    def images(self, sl: slice) -> Tensor:
        """Grid points ``sl`` as float32 images (n, C, H, W)."""
        c = self.coef[sl]
        pts = self.origin + c[:, 0, None, None, None] * self.u + c[:, 1, None, None, None] * self.v
        return pts.float()


def plane(x0: Tensor, x1: Tensor, x2: Tensor, resolution: int, margin: float) -> Plane:
    """The plane grid through three images (see the module docstring); ``ValueError`` if they are collinear."""
    x0, d1, d2 = x0.double(), (x1 - x0).double(), (x2 - x0).double()
    n1 = d1.norm()
    if n1 <= 1e-12:
        raise ValueError("the first two images of the triplet are identical")
    u = d1 / n1
    along = (d2 * u).sum()
    b = d2 - along * u
    nb = b.norm()
    if nb <= 1e-6 * float(d2.norm()):  # float32 images: relative rounding about 1e-7
        raise ValueError("the three images of the triplet are collinear")
    anchors = torch.tensor([[0.0, 0.0], [float(n1), 0.0], [float(along), float(nb)]], dtype=torch.float64)
    lo, hi = anchors.min(0).values, anchors.max(0).values
    pad = margin * (hi - lo)
    s = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), resolution, dtype=torch.float64)
    t = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), resolution, dtype=torch.float64)
    ss, tt = torch.meshgrid(s, t, indexing="ij")
    return Plane(x0, u, b / nb, anchors, torch.stack([ss.flatten(), tt.flatten()], 1), resolution)


@torch.inference_mode()
def label_plane(model: nn.Module, p: Plane, batch: int) -> Tensor:
    """``argmax_c model(point)_c`` for every grid point of ``p`` (int64, CPU), in batches of ``batch``; the points
    are built on the model's device in float32 (what the model sees anyway)."""
    device = model_device(model)
    o, u, v, coef = (t.to(device=device, dtype=torch.float32) for t in (p.origin, p.u, p.v, p.coef))
    out = torch.empty(len(p), dtype=torch.long)

    def run(sl: slice) -> None:
        c = coef[sl]
        out[sl] = model(o + c[:, 0, None, None, None] * u + c[:, 1, None, None, None] * v).argmax(1).cpu()

    over_slices(len(p), batch, run, device, PROBE)
    return out


def region_score(labels: Tensor | np.ndarray, reference: Tensor | np.ndarray, measure: str = "agreement") -> float:
    """Similarity of two labellings of the same grid (see the module docstring for both measures)."""
    a, b = np.asarray(labels).ravel(), np.asarray(reference).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"labellings must be non-empty and of one shape, got {a.shape} and {b.shape}")
    if measure == "agreement":
        return float(np.mean(a == b))
    if measure == "miou":
        ious = [np.sum((a == c) & (b == c)) / np.sum((a == c) | (b == c)) for c in np.union1d(a, b)]
        return float(np.mean(ious))
    raise ValueError(f"probe '{PROBE}': measure must be one of {list(MEASURES)}, got {measure!r}")


def sample_triplets(y: np.ndarray, n: int, rng: np.random.Generator, distinct: bool = True) -> np.ndarray:
    """``n`` index triplets (n, 3) into ``y``: uniform draws, each redrawn while its label repeats one already in the
    triplet (when ``distinct``), as Somepalli et al.'s sampler does."""
    if distinct and len(np.unique(y)) < 3:
        raise ValueError(f"probe '{PROBE}': a triplet needs images of 3 different classes; the split has "
                         f"{len(np.unique(y))}")
    if len(y) < 3:
        raise ValueError(f"probe '{PROBE}': a triplet needs 3 images; the split has {len(y)}")
    out = np.empty((n, 3), dtype=np.int64)
    for k in range(n):
        chosen: list[int] = []
        for _ in range(MAX_DRAWS):
            i = int(rng.integers(len(y)))
            if i not in chosen and not (distinct and y[i] in y[chosen]):
                chosen.append(i)
                if len(chosen) == 3:
                    break
        if len(chosen) < 3:
            raise ValueError(f"probe '{PROBE}': no triplet found after {MAX_DRAWS} draws")
        out[k] = chosen
    return out


def _int_param(params: dict[str, Any], name: str, default: int, low: int) -> int:
    v = params.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"probe '{PROBE}': {name} must be an int >= {low}, got {v!r}")
    return v


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """The probe's parameters checked, with their defaults."""
    check_params(PROBE, params, optional=("domains", "triplets", "resolution", "margin", "distinct_classes", "seed",
                                          "measure", "teacher", "figure_planes", "figure_domain"))
    margin = params.get("margin", 0.1)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin <= 10:
        raise ValueError(f"probe '{PROBE}': margin must be a number in [0, 10], got {margin!r}")
    measure = params.get("measure", "agreement")
    if measure not in MEASURES:
        raise ValueError(f"probe '{PROBE}': measure must be one of {list(MEASURES)}, got {measure!r}")
    distinct = params.get("distinct_classes", True)
    if not isinstance(distinct, bool):
        raise ValueError(f"probe '{PROBE}': distinct_classes must be true or false, got {distinct!r}")
    return {"triplets": _int_param(params, "triplets", 50, 2), "resolution": _int_param(params, "resolution", 100, 2),
            "margin": float(margin), "distinct": distinct, "seed": _int_param(params, "seed", 0, 0),
            "measure": measure, "figure_planes": _int_param(params, "figure_planes", 3, 0)}


def _domains(bank: ModelBank, split: Split, domains: Any) -> list[tuple[str, str, Split]]:
    """``(name, metric, images)`` per domain: a group of ``split`` or else a dataset of the bank."""
    if domains is None:
        return [("all", PROBE, split)]
    if isinstance(domains, str) or not isinstance(domains, (list, tuple)) or not domains:
        raise ValueError(f"probe '{PROBE}': domains must be a non-empty list of names, got {domains!r}")
    return [(d, f"{PROBE}/{d}", split.group(d) if d in split.group_names else bank.eval_split(d)) for d in domains]


def _thin(labels: Tensor, resolution: int) -> list[list[int]]:
    """A label grid as nested lists, every k-th point per side so that at most ``FIGURE_SIDE`` remain."""
    step = max(1, -(-resolution // FIGURE_SIDE))
    return labels.view(resolution, resolution)[::step, ::step].tolist()


@PROBES.register(PROBE)
def boundary(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    """Per-triplet similarity of each student's decision regions to the teacher's (module docstring)."""
    cfg = _settings(params)
    bs = batch_size(PROBE, params)
    teacher_name = require_teacher(PROBE, bank, params.get("teacher", "teacher"))
    domains = _domains(bank, bank.eval_split(params.get("data")), params.get("domains"))
    fig_domain = params.get("figure_domain", domains[0][0])
    if fig_domain not in [d for d, _, _ in domains]:
        raise ValueError(f"probe '{PROBE}': figure_domain '{fig_domain}' is not one of the domains")
    teacher, models = bank.model(teacher_name), list(students(bank))
    out, planes, used = Measurements(), [], {}
    for k, (name, metric, sub) in enumerate(domains):
        rng = np.random.default_rng([cfg["seed"], k])
        trip = sample_triplets(sub.y.cpu().numpy(), cfg["triplets"], rng, cfg["distinct"])
        rows = {arm: np.empty((len(bank.seeds), len(trip))) for arm in bank.arms}
        for j, (i0, i1, i2) in enumerate(trip):
            try:
                p = plane(sub.x[i0], sub.x[i1], sub.x[i2], cfg["resolution"], cfg["margin"])
            except ValueError as e:
                raise ValueError(f"probe '{PROBE}': {name} triplet {j} (images {i0}, {i1}, {i2}): {e}") from None
            ref = label_plane(teacher, p, bs)
            drawn = {teacher_name: ref} if name == fig_domain and j < cfg["figure_planes"] else None
            for arm, row, _seed, model in models:
                lab = label_plane(model, p, bs)
                rows[arm][row, j] = region_score(lab, ref, cfg["measure"])
                if drawn is not None and row == 0:
                    drawn[arm] = lab
            if drawn is not None:
                planes.append({"domain": name, "triplet": [int(i) for i in (i0, i1, i2)],
                               "labels_of_triplet": [int(sub.y[i]) for i in (i0, i1, i2)],
                               "anchors": p.anchors.tolist(), "extent": [p.coef[0].tolist(), p.coef[-1].tolist()],
                               "grids": {m: _thin(g, cfg["resolution"]) for m, g in drawn.items()}})
        for arm in bank.arms:
            out.add(metric, arm, rows[arm])
        used[metric] = trip.tolist()
    out.extras.update(teacher=teacher_name, measure=cfg["measure"], resolution=cfg["resolution"],
                      margin=cfg["margin"], triplets=used, boundary_planes=planes)
    return out
