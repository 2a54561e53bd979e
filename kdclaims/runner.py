"""Run one claim item: models (trained or cached) -> probe (cached when its inputs are unchanged) -> statistics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdclaims.bank import Bank, RunContext
from kdclaims.evaluate import ClaimOutcome, evaluate, well_formed
from kdclaims.probes.base import Measurements
from kdclaims.spec.schema import Claim
from kdclaims.store import recipe_key

log = logging.getLogger("kdclaims.runner")
PROBE_FORMAT = 2  # 2: localisation's Ind-vs-Ind control has a row per pair of seeds


class Missing(Exception):
    """What the item needs and this machine lacks (CUDA, data, weights); the item is skipped with this text."""


@dataclass
class ItemResult:
    claim: Claim
    outcome: ClaimOutcome
    measurements: Measurements
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)
    probe_cached: bool = False

    @property
    def verdict(self) -> str:
        return self.outcome.verdict

    def problems(self) -> list[str]:
        return well_formed(self.outcome)


def missing_requirements(claim: Claim, ctx: RunContext) -> list[str]:
    """Things the item needs that are absent, each with the option or path that would supply it."""
    out = []
    if ctx.device.type == "cuda" and not torch.cuda.is_available():
        out.append("CUDA: no CUDA device is available (run on a GPU machine, or pass --kd-device cpu to force the CPU)")
    needs = ["cuda"] if claim.needs is None and claim.tier == "gpu" else (claim.needs or [])
    if "cuda" in needs and ctx.device.type != "cuda":
        out.append("CUDA: the gpu tier runs the paper's settings on a CUDA device (found none; --kd-device cuda)")
    from kdclaims.models.weights import resolve_weights

    for name, t in claim.setup.all_teachers().items():
        if t.weights:
            try:
                resolve_weights(t.weights, ctx.weights_dir)
            except FileNotFoundError as e:
                out.append(f"weights of {name}: {e}")
            except ValueError as e:
                out.append(f"weights of {name}: {e}")
    if out:  # skipped anyway: also name the data it would need, so that one message lists everything to supply
        out += missing_data(claim, ctx)
    return out


def missing_data(claim: Claim, ctx: RunContext) -> list[str]:
    """The datasets of the item (students', teachers', probes') whose files are absent, with the layout expected."""
    from kdclaims.data import DataNotFound, build_dataset

    specs = [claim.setup.data, *(t.data for t in claim.setup.all_teachers().values()),
             *(p.data for p in (claim.probe, *claim.extra_probes))]
    out, seen = [], set()
    for spec in specs:
        if spec is None or repr(spec.key()) in seen:
            continue
        seen.add(repr(spec.key()))
        try:
            build_dataset(spec.name, "test", ctx.data_root, **spec.params)
        except DataNotFound as e:
            if f"data: {e}" not in out:
                out.append(f"data: {e}")
        except Exception:  # noqa: BLE001  (any other problem is reported when the item runs)
            continue
    return out


def probe_key(claim: Claim, bank: Bank) -> dict[str, Any]:
    """The probe cache's recipe: the probe specs, the data spec and every model's store key (which carries the
    training data's fingerprint and a weights file's sha256). The evaluation data is checked apart: the cache
    entry stores the fingerprint of every split the probe read (``Bank.reads``)."""
    models = {f"{arm}:{s}": recipe_key(bank.model_key(arm, s)) for arm in bank.arms for s in bank.seeds}
    for t in bank.teachers:
        models[t] = recipe_key(bank.model_key(t))
    return {"format": PROBE_FORMAT, "probe": claim.probe.model_dump(mode="json"),
            "extra_probes": [p.model_dump(mode="json") for p in claim.extra_probes], "setup_data": claim.setup.data.key(),
            "models": models, "tier": claim.tier}


def merge_measurements(into: Measurements, other: Measurements, name: str) -> None:
    """Add another probe's metrics (a metric measured twice is an error) and its extras under its name."""
    for metric, arms in other.values.items():
        if metric in into.values:
            raise ValueError(f"extra probe {name} measures '{metric}' again; the main probe already did")
        into.values[metric] = arms
    into.extras[name] = other.extras


def run_claim(claim: Claim, ctx: RunContext, *, use_probe_cache: bool = True) -> ItemResult:
    """Train or load every model the probe asks for, run the probe, test every expectation."""
    from kdclaims.registries import PROBES, load_all

    load_all()
    missing = missing_requirements(claim, ctx)
    if missing:
        raise Missing("; ".join(missing))
    t0 = time.time()
    bank = Bank(claim, ctx)
    probe = PROBES.get(claim.probe.name)
    try:
        key = recipe_key(probe_key(claim, bank))
        m = _cached_measurements(ctx, bank, key) if use_probe_cache else None
        cached = m is not None
        if m is None:
            m = probe(bank, dict(claim.probe.params))
            for spec in claim.extra_probes:
                merge_measurements(m, PROBES.get(spec.name)(bank.for_probe(spec), dict(spec.params)), spec.name)
            ctx.store.save_measurements(key, m, reads=bank.reads())
        else:
            log.info("probe cache hit: %s[%s]", claim.id, claim.tier)
    except FileNotFoundError as e:  # data or weights the machine lacks (DataNotFound, WeightsNotFound)
        raise Missing(str(e)) from e
    outcome = evaluate(claim, m, events=bank.events)
    return ItemResult(claim, outcome, m, time.time() - t0, bank.events, cached)


def _cached_measurements(ctx: RunContext, bank: Bank, key: str) -> Measurements | None:
    """The probe cache's entry, when every split it read still has the content it had then."""
    hit = ctx.store.load_measurements(key, with_reads=True)
    if hit is None:
        return None
    m, reads = hit
    changed = bank.changed_reads(reads)
    if changed:
        log.warning("probe cache entry %s is stale: data changed since it was measured (%s); measuring again",
                    key[:12], ", ".join(changed))
        return None
    return m


def report_item(claim: Claim, *, nodeid: str, outcome: str, verdict: str, message: str = "",
                result: ItemResult | None = None, seconds: float = 0.0, recipe: str | None = None) -> dict[str, Any]:
    """The report.json entry of one item (see ``kdclaims.report.schema``)."""
    s = claim.setup
    item: dict[str, Any] = {
        "nodeid": nodeid, "id": claim.id, "title": claim.title, "setting": claim.setting, "tier": claim.tier,
        "recipe": recipe, "outcome": outcome, "verdict": verdict, "message": message,
        "paper_ref": claim.paper.model_dump(), "statement": claim.statement,
        "setup": {"teacher": s.teacher.arch, "student": s.student.arch, "methods": [m.name for m in s.methods],
                  "data": s.data.name, "seeds": list(s.seeds)},
        "statistic": (f"verdict: over training seeds (t, S-1 df, plus the image term all seeds share); these "
                      f"checkpoints: image bootstrap ({claim.significance.method}, {claim.significance.resamples} "
                      f"resamples); "
                      f"alpha {claim.significance.alpha}"),
        "metric": None, "measured": None, "ci_low": None, "ci_high": None, "p_value": None, "p_holm": None,
        "paper": None, "n_images": None, "n_seeds": None, "seconds": round(seconds, 3),
        "expectations": [], "arms": {}, "figure": claim.report.model_dump(), "extras": {},
    }
    if result is not None:
        h = result.outcome.headline
        item.update(metric=h.metric, measured=h.measured, ci_low=h.ci_low, ci_high=h.ci_high, p_value=h.p_value,
                    paper=h.paper, n_images=h.n_images, n_seeds=h.n_seeds)
        item["expectations"] = [e.to_dict() for e in result.outcome.expectations]
        item["verdict_text"] = result.outcome.verdict_text
        item["premises_failed"] = list(result.outcome.premises_failed)
        item["family"] = dict(result.outcome.family)
        item["arms"] = result.outcome.arms
        item["extras"] = {**result.measurements.extras, "models": result.events, "probe_cached": result.probe_cached}
        if not item["figure"]["metrics"]:
            item["figure"]["metrics"] = sorted({e.metric for e in result.outcome.expectations})
    return item
