"""One PNG per report item, drawn from its ``arms`` (and ``extras["cka_matrix"]``) as ``item.figure`` asks.

Drawing uses matplotlib's object API on an Agg canvas (no pyplot, no global backend switch, safe headless)
under matplotlib's default style, fixed size and DPI, and PNG metadata without the software tag,
so the same item always gives the same PNG bytes.

Kinds (see ``schema.Figure``): ``bars`` (paper Fig 2, 3, 4a), ``lines`` (Fig 4b-d, C.4, C.5, eps sweeps),
``heatmaps`` (Fig 8), ``groups`` (Fig 5, 6, §6.2), ``planes`` (NeurIPS Fig 7: decision regions on planes).
"""

from __future__ import annotations

import io
import logging
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from kdclaims.report.markdown import fmt_ref
from kdclaims.report.schema import ArmStat, ReportItem

log = logging.getLogger("kdclaims.report")
DPI = 100
SHARE_METRICS = frozenset({"closer"})  # metrics that are a share of images, drawn with a chance line at 0.5
# text.parse_math off: labels, arm and setting names come from users and are drawn verbatim ("$\\x$" is not TeX)
_RC = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 9, "figure.titlesize": 10,
       "legend.fontsize": 8, "svg.hashsalt": "kdclaims", "text.parse_math": False}
_FIXED_COLOURS = {"teacher": "#333333", "independent": "#1f77b4", "kl": "#ff7f0e", "hint": "#2ca02c",
                  "crd": "#d62728"}
_PALETTE = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78",
            "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]


# ------------------------------------------------------------------------------------------------------ helpers
def _f(x: Any) -> float:
    """A float, NaN for None and for non-finite values (matplotlib draws nothing there)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


def _base(metric: str) -> str:
    return metric.split("/", 1)[0]


def _qualifier(metric: str) -> str:
    return metric.rsplit("/", 1)[-1]


def _arm_order(item: ReportItem, metrics: Sequence[str]) -> list[str]:
    out: list[str] = []
    for m in metrics:
        for a in item.arms.get(m, {}):
            if a not in out:
                out.append(a)
    return out


def _colours(arms: Sequence[str]) -> dict[str, str]:
    """Fixed colours for the usual arms (the same in every figure), the palette in order for the others."""
    free = iter(c for c in _PALETTE if c not in _FIXED_COLOURS.values())
    return {a: _FIXED_COLOURS.get(a) or next(free, "#555555") for a in arms}


def _stat(item: ReportItem, metric: str, arm: str) -> ArmStat:
    return item.arms.get(metric, {}).get(arm) or ArmStat()


def _cka(item: ReportItem) -> dict[str, np.ndarray]:
    raw = item.extras.get("cka_matrix")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for arm, m in raw.items():
        try:
            arr = np.array([[_f(v) for v in row] for row in m], dtype=np.float64)
        except TypeError:
            continue
        if arr.ndim == 2 and arr.size and np.isfinite(arr).any():
            out[str(arm)] = arr
    return out


def has_figure(item: ReportItem) -> bool:
    """True when ``item.figure.kind`` is not ``none`` and there is something to draw (a finite mean or matrix)."""
    kind = item.figure.kind
    if kind == "none":
        return False
    if kind == "heatmaps":
        return bool(_cka(item))
    if kind == "planes":
        return bool(_planes_of(item))
    return any(math.isfinite(_f(s.mean)) for m in item.figure.metrics for s in item.arms.get(m, {}).values())


def _ci_segments(ax: Axes, xs: Sequence[float], stats: Sequence[ArmStat], cap: float) -> None:
    """Black vertical CI segments with caps of half-width ``cap``; a missing or infinite end is drawn to the mean
    and gets no cap."""
    for x, s in zip(xs, stats):
        mean, lo, hi = _f(s.mean), _f(s.ci_low), _f(s.ci_high)
        ends = [v for v in (lo, hi) if not math.isnan(v)]
        if not ends:
            continue
        a = lo if not math.isnan(lo) else mean
        b = hi if not math.isnan(hi) else mean
        if math.isnan(a) or math.isnan(b):
            continue
        ax.vlines(x, a, b, colors="black", linewidth=1.0, zorder=3)
        ax.hlines(ends, x - cap, x + cap, colors="black", linewidth=1.0, zorder=3)


def _chance_line(ax: Axes, metrics: Sequence[str]) -> list[Line2D]:
    if any(_base(m) in SHARE_METRICS for m in metrics):
        ax.axhline(0.5, color="#b22222", linestyle="--", linewidth=1.0, zorder=1)
        return [Line2D([], [], color="#b22222", linestyle="--", label="chance (0.5)")]
    return []


def _ticks(ax: Axes, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    long = sum(len(s) for s in labels) > 40
    ax.set_xticklabels(labels, rotation=30 if long else 0, ha="right" if long else "center")


def _paper_label(item: ReportItem) -> str:
    """Paper values come from the paper's own setting; on the smoke and cpu tiers that is not what ran here."""
    return "paper" if item.tier == "gpu" else "paper (its own setting)"


def _legend(fig: MplFigure, handles: list[Any]) -> None:
    """One legend under the axes, where it cannot hide data."""
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)


# ------------------------------------------------------------------------------------------------------- kinds
def _bars(fig: MplFigure, item: ReportItem) -> None:
    metrics = [m for m in item.figure.metrics if item.arms.get(m)]
    same_scale = len({_base(m) for m in metrics}) == 1
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=same_scale)[0]
    colours = _colours(_arm_order(item, metrics))
    legend: dict[str, Any] = {"measured (CI)": Patch(facecolor="#999999", label="measured (CI)")}
    for ax, metric in zip(axes, metrics):
        arms = list(item.arms[metric])
        stats = [_stat(item, metric, a) for a in arms]
        with_paper = any(not math.isnan(_f(s.paper)) for s in stats)
        w = 0.38 if with_paper else 0.6
        xs = [i - w / 2 if with_paper else float(i) for i in range(len(arms))]
        ax.bar(xs, [_f(s.mean) for s in stats], width=w, color=[colours[a] for a in arms], zorder=2)
        _ci_segments(ax, xs, stats, w / 4)
        for x, s in zip(xs, stats):
            if math.isnan(_f(s.mean)):
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#555555")
        if with_paper:
            px = [i + w / 2 for i in range(len(arms))]
            ax.bar(px, [_f(s.paper) for s in stats], width=w, facecolor="none", hatch="///",
                   edgecolor=[colours[a] for a in arms], linewidth=1.0, zorder=2)
            legend["paper"] = Patch(facecolor="none", edgecolor="#555555", hatch="///", label=_paper_label(item))
        legend.update((h.get_label(), h) for h in _chance_line(ax, [metric]))
        _ticks(ax, arms)
        if ax is axes[0] or not same_scale:
            ax.set_ylabel(item.figure.ylabel or (metric if len(metrics) == 1 or not same_scale else _base(metric)))
        if item.figure.xlabel:
            ax.set_xlabel(item.figure.xlabel)
        if len(metrics) > 1:
            ax.set_title(metric)
    _legend(fig, list(legend.values()))


def _lines(fig: MplFigure, item: ReportItem) -> None:
    metrics = item.figure.metrics
    x = item.figure.x
    numeric = x is not None and all(isinstance(v, (int, float)) for v in x)
    xs = [float(v) for v in x] if numeric and x is not None else list(range(len(metrics)))
    ax = fig.subplots()
    arms = _arm_order(item, metrics)
    colours = _colours(arms)
    any_paper = False
    for arm in arms:
        stats = [_stat(item, m, arm) for m in metrics]
        y = [_f(s.mean) for s in stats]
        lo = [_f(s.ci_low) for s in stats]
        hi = [_f(s.ci_high) for s in stats]
        ax.plot(xs, y, color=colours[arm], marker=".", label=arm, zorder=3)
        ax.fill_between(xs, lo, hi, color=colours[arm], alpha=0.2, linewidth=0, zorder=2)
        pts = [(xv, _f(s.paper)) for xv, s in zip(xs, stats) if not math.isnan(_f(s.paper))]
        if pts:
            any_paper = True
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker="o", markersize=6,
                    markerfacecolor="none", markeredgecolor=colours[arm], zorder=4)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="#999999", alpha=0.3, label="CI band"))
    if any_paper:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none",
                              markeredgecolor="#333333", label=_paper_label(item)))
    handles += _chance_line(ax, metrics)
    if not numeric:
        _ticks(ax, [str(v) for v in x] if x is not None else [_qualifier(m) for m in metrics])
    ax.set_xlabel(item.figure.xlabel or "")
    bases = sorted({_base(m) for m in metrics})
    ax.set_ylabel(item.figure.ylabel or (bases[0] if len(bases) == 1 else "value"))
    _legend(fig, handles)


def _heatmaps(fig: MplFigure, item: ReportItem) -> None:
    mats = _cka(item)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    image = None
    for ax, (arm, m) in zip(axes, mats.items()):
        image = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="viridis", origin="upper")
        ax.set_title(arm)
        ax.set_xticks(range(m.shape[1]), [f"F{j + 1}" for j in range(m.shape[1])])
        ax.set_yticks(range(m.shape[0]), [f"F{i + 1}" for i in range(m.shape[0])])
        if max(m.shape) <= 10:
            for (i, j), v in np.ndenumerate(m):
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, in_layout=False,
                            color="white" if v < 0.55 else "black")
        if item.figure.xlabel:
            ax.set_xlabel(item.figure.xlabel)
        if item.figure.ylabel:
            ax.set_ylabel(item.figure.ylabel)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="CKA")


def _groups(fig: MplFigure, item: ReportItem) -> None:
    metrics = item.figure.metrics
    arms = _arm_order(item, metrics)
    colours = _colours(arms)
    ax = fig.subplots()
    w = 0.8 / max(len(arms), 1)
    any_paper = False
    for k, arm in enumerate(arms):
        xs = [g - 0.4 + w * (k + 0.5) for g in range(len(metrics))]
        stats = [_stat(item, m, arm) for m in metrics]
        ax.bar(xs, [_f(s.mean) for s in stats], width=w * 0.95, color=colours[arm], label=arm, zorder=2)
        _ci_segments(ax, xs, stats, w / 4)
        pts = [(xv, _f(s.paper)) for xv, s in zip(xs, stats) if not math.isnan(_f(s.paper))]
        if pts:
            any_paper = True
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker="D", markersize=4,
                    markerfacecolor="white", markeredgecolor="black", zorder=4)
    handles, _ = ax.get_legend_handles_labels()
    if any_paper:
        handles.append(Line2D([], [], linestyle="none", marker="D", markersize=4, markerfacecolor="white",
                              markeredgecolor="black", label=_paper_label(item)))
    handles += _chance_line(ax, metrics)
    bases = sorted({_base(m) for m in metrics})
    labels = [_qualifier(m) for m in metrics] if len(bases) == 1 else list(metrics)
    _ticks(ax, [str(v) for v in item.figure.x] if item.figure.x is not None else labels)
    ax.set_ylabel(item.figure.ylabel or (bases[0] if len(bases) == 1 else "value"))
    if item.figure.xlabel:
        ax.set_xlabel(item.figure.xlabel)
    _legend(fig, handles)


def _planes_of(item: ReportItem) -> list[dict[str, Any]]:
    """The label grids the boundary probe left in ``extras`` (directly, or under an extra probe's name)."""
    raw = item.extras.get("boundary_planes")
    if raw is None and isinstance(item.extras.get("boundary"), dict):
        raw = item.extras["boundary"].get("boundary_planes")
    return [p for p in raw or [] if isinstance(p, dict) and isinstance(p.get("grids"), dict) and p["grids"]]


def _planes(fig: MplFigure, item: ReportItem) -> None:
    """One row per plane, one column per model (the teacher first): each grid point coloured by its class, the
    triplet's three images marked where they lie on the plane."""
    planes = _planes_of(item)
    names = list(dict.fromkeys(n for p in planes for n in p["grids"]))
    axes = fig.subplots(len(planes), len(names), squeeze=False)
    for r, p in enumerate(planes):
        (s0, t0), (s1, t1) = p.get("extent") or [(0, 0), (1, 1)]
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            grid = p["grids"].get(name)
            if grid is None:
                continue
            # grid[i][j]: i along the first plane axis (s), j along the second (t); imshow wants rows = t
            ax.imshow(np.asarray(grid, dtype=float).T, cmap="tab10", vmin=-0.5, vmax=9.5, origin="lower",
                      extent=(s0, s1, t0, t1), aspect="auto", interpolation="nearest")
            for (s, t), mark in zip(p.get("anchors") or [], "o^X"):
                ax.plot(s, t, marker=mark, color="black", markerfacecolor="white", markersize=5)
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(f"{p.get('domain', '')} {p.get('labels_of_triplet', '')}", fontsize=7)
    classes = sorted({int(v) for p in planes for g in p["grids"].values() for row in g for v in row})
    cmap = matplotlib.colormaps["tab10"]
    _legend(fig, [Patch(facecolor=cmap(k % 10), label=f"class {k}") for k in classes[:10]]
            + [Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                      label="triplet images")])


_DRAW: dict[str, Callable[[MplFigure, ReportItem], None]] = {
    "bars": _bars, "lines": _lines, "heatmaps": _heatmaps, "groups": _groups, "planes": _planes}


def _size(item: ReportItem) -> tuple[float, float]:
    kind, metrics = item.figure.kind, item.figure.metrics
    n_arms = len(_arm_order(item, metrics))
    if kind == "bars":
        panels = max(sum(1 for m in metrics if item.arms.get(m)), 1)
        return (min(max(4.0, 1.2 + 0.9 * n_arms) * panels, 16.0), 3.8)
    if kind == "heatmaps":
        return (min(3.4 * len(_cka(item)) + 1.2, 16.0), 3.8)
    if kind == "planes":
        planes = _planes_of(item)
        cols = len({n for p in planes for n in p["grids"]})
        return (min(1.2 + 2.0 * cols, 16.0), min(1.0 + 2.0 * len(planes), 16.0))
    if kind == "groups":
        return (min(max(5.5, 1.5 + 0.35 * len(metrics) * max(n_arms, 1)), 16.0), 4.0)
    return (6.4, 4.0)


def figure_png(item: ReportItem) -> bytes | None:
    """The item's figure as PNG bytes, or None when ``has_figure(item)`` is False. Deterministic. A figure that
    cannot be drawn becomes a small PNG that says why (the report's tables never depend on a figure)."""
    if not has_figure(item):
        return None
    try:
        return _draw_png(item)
    except Exception as e:  # noqa: BLE001 - any plotting failure: an error note instead of the figure
        log.error("figure of %s could not be drawn: %s: %s", item.nodeid, type(e).__name__, e)
        return _error_png(f"figure could not be drawn: {type(e).__name__}: {e}")


def _draw_png(item: ReportItem) -> bytes:
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = MplFigure(figsize=_size(item), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        _DRAW[item.figure.kind](fig, item)
        ref = fmt_ref(item.paper_ref).replace("§", "sec. ")
        title = item.label + (f"  (paper {ref})" if ref else "")
        width_chars = int(fig.get_figwidth() * 13)
        fig.suptitle("\n".join(textwrap.wrap(title, width_chars)) or title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _error_png(text: str) -> bytes:
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = MplFigure(figsize=(6.4, 1.2), dpi=DPI)
        FigureCanvasAgg(fig)
        fig.text(0.02, 0.5, "\n".join(textwrap.wrap(text[:400], 90)), va="center", color="#b00020")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
