"""Turn a claim's expectations and a probe's measurements into tested, reportable results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from kdclaims import stats
from kdclaims.probes.base import Measurements
from kdclaims.spec.compare import Comparison, expand
from kdclaims.spec.schema import Claim, RefValue

VERDICT_ORDER = {"supported": 0, "inconclusive": 1, "refuted": 2}


class MeasurementError(ValueError):
    """An expectation names a metric or arm the probe did not produce."""


@dataclass
class ExpectationResult:
    label: str
    metric: str
    kind: str  # greater | less | equivalent
    threshold: float
    margin: float | None
    measured: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    alpha: float
    n_images: int
    n_seeds: int
    method: str
    paper: float | None = None
    p_holm: float | None = None
    smoke_asserts: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("smoke_asserts")
        return d


@dataclass
class ClaimOutcome:
    verdict: str
    expectations: list[ExpectationResult]
    arms: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    @property
    def headline(self) -> ExpectationResult:
        worst = max(VERDICT_ORDER[e.verdict] for e in self.expectations)
        return next(e for e in self.expectations if VERDICT_ORDER[e.verdict] == worst)


def _terms(cmp: Comparison, metric: str, m: Measurements) -> list[stats.Term]:
    terms = []
    for coef, ref in cmp.terms:
        name = ref.metric(metric)
        if name not in m.values:
            raise MeasurementError(f"metric '{name}' was not measured; the probe gave: {sorted(m.values)}")
        if ref.arm not in m.values[name]:
            raise MeasurementError(f"metric '{name}' has no arm '{ref.arm}'; arms: {sorted(m.values[name])}")
        terms.append(stats.Term(coef, m.values[name][ref.arm], image_set=name))
    return terms


def run_comparison(cmp: Comparison, metric: str, m: Measurements, *, margin: float | None, alpha: float,
                    resamples: int, method: str, seed: int) -> stats.TestResult:
    """``Σ coef·mean + constant (op) 0`` tested on the bootstrap; the statistic reported excludes the constant
    (``closer > 0.5`` reports the share and tests it against the threshold 0.5)."""
    terms = _terms(cmp, metric, m)
    threshold = -cmp.constant
    rng = np.random.default_rng(seed)
    if cmp.op == "~=":
        r = stats.equivalence_test(terms, -threshold, margin=margin, alpha=alpha, resamples=resamples, rng=rng,
                                   method=method)
        # report the statistic itself (not its distance to the threshold)
        return replace(r, estimate=r.estimate + threshold, ci_low=r.ci_low + threshold, ci_high=r.ci_high + threshold)
    return stats.directional_test(terms, 0.0, alternative="greater" if cmp.op == ">" else "less",
                                  threshold=threshold, alpha=alpha, resamples=resamples, rng=rng, method=method)


def paper_contrast(claim: Claim, cmp: Comparison, metric: str) -> float | None:
    """The paper's value of the same contrast, from ``reference[metric][arm]``, when every arm has one."""
    total = 0.0
    for coef, ref in cmp.terms:
        table = claim.reference.get(ref.metric(metric))
        value = _num(table.get(ref.arm)) if isinstance(table, dict) else None
        if value is None:
            return None
        total += coef * value
    if len(cmp.terms) == 1:
        return total  # a single arm against a threshold: the paper's value of that arm
    return total + cmp.constant


def distilled_arms(claim: Claim) -> list[str]:
    return [mth.name for mth in claim.setup.methods if mth.method != "independent"]


def evaluate(claim: Claim, m: Measurements, *, seed: int = 0, arm_resamples: int = 1000) -> ClaimOutcome:
    sig = claim.significance
    results: list[ExpectationResult] = []
    for i, exp in enumerate(claim.expect):
        for j, (label, cmp) in enumerate(expand(exp, distilled_arms(claim))):
            r = run_comparison(cmp, exp.metric, m, margin=exp.margin, alpha=sig.alpha, resamples=sig.resamples,
                                method=sig.method, seed=seed + 1000 * i + j)
            results.append(ExpectationResult(
                label=label, metric=exp.metric,
                kind="equivalent" if cmp.op == "~=" else ("greater" if cmp.op == ">" else "less"),
                threshold=-cmp.constant, margin=exp.margin, measured=r.estimate, ci_low=r.ci_low,
                ci_high=r.ci_high, p_value=r.p_value, verdict=r.verdict, alpha=sig.alpha, n_images=r.n_units,
                n_seeds=r.n_seeds, method=r.method, smoke_asserts=exp.smoke,
                paper=exp.paper if exp.paper is not None else paper_contrast(claim, cmp, exp.metric),
            ))
    worst = max(VERDICT_ORDER[r.verdict] for r in results)
    verdict = next(v for v, k in VERDICT_ORDER.items() if k == worst)
    return ClaimOutcome(verdict, results, arm_summary(claim, m, seed=seed, resamples=arm_resamples))


def arm_summary(claim: Claim, m: Measurements, *, seed: int, resamples: int) -> dict[str, dict[str, dict]]:
    """Mean and (1 − 2α) bootstrap interval of every metric and arm, with the paper's value where known."""
    out: dict[str, dict[str, dict]] = {}
    rng = np.random.default_rng(seed)
    for metric, arms in m.values.items():
        ref = claim.reference.get(metric, {})
        for arm, values in arms.items():
            entry: dict[str, Any] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                                     "ci_low": None, "ci_high": None, "paper": _num(ref.get(arm))}
            if isinstance(ref.get(arm), RefValue):
                entry.update(paper_pm=ref[arm].pm, paper_flag=ref[arm].flag())
            if np.isfinite(values).sum() >= 2 and values.shape[1] >= 2:
                try:
                    mean, lo, hi = stats.mean_ci(values, alpha=claim.significance.alpha, resamples=resamples, rng=rng)
                    entry.update(mean=mean, ci_low=lo, ci_high=hi)
                except ValueError:
                    pass
            out.setdefault(metric, {})[arm] = entry
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, RefValue):
        v = v.value
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return float(np.mean(v))  # a range such as [48, 52] is shown by its middle
    return None


def well_formed(outcome: ClaimOutcome) -> list[str]:
    """Problems that make a result malformed: non-finite numbers, unordered CI, a verdict the CI contradicts."""
    problems = []
    for e in outcome.expectations:
        nums = [e.measured, e.ci_low, e.ci_high, e.p_value]
        if not all(np.isfinite(nums)):
            problems.append(f"{e.label}: non-finite statistic {nums}")
            continue
        if not e.ci_low <= e.ci_high:
            problems.append(f"{e.label}: CI not ordered [{e.ci_low}, {e.ci_high}]")
        if not 0 <= e.p_value <= 1:
            problems.append(f"{e.label}: p-value {e.p_value} outside [0, 1]")
        if e.kind == "greater":
            expected = "supported" if e.ci_low > e.threshold else "refuted" if e.ci_high < e.threshold else "inconclusive"
        elif e.kind == "less":
            expected = "supported" if e.ci_high < e.threshold else "refuted" if e.ci_low > e.threshold else "inconclusive"
        else:
            lo, hi, t, mg = e.ci_low, e.ci_high, e.threshold, e.margin
            expected = ("supported" if t - mg < lo and hi < t + mg else
                        "refuted" if lo > t + mg or hi < t - mg else "inconclusive")
        if expected != e.verdict:
            problems.append(f"{e.label}: verdict {e.verdict} does not follow from its CI ({expected})")
    return problems
