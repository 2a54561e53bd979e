"""Turn a claim's expectations and a probe's measurements into tested, reportable results.

Order of judgement (docs/statistics.md): premises first, at the claim's α (an expectation with ``premise: true``,
and every model's convergence flag in the bank's events); if one fails, the item is *inconclusive (premise
failed: ...)*, never refuted or supported. Then the claim's own expectations, each at the family level α/m (m =
the size of the tier's declared family when the item is a member, else 1); the item's p is the largest of
theirs (an intersection-union test) and its verdict the worst of theirs.
"""

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
    premise: bool = False
    decided_by: str = "seeds"  # seeds | images | none (see kdclaims.stats.TestResult)
    mde: float | None = None
    seed_level: dict | None = None
    image_level: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("smoke_asserts")
        return d


@dataclass
class ClaimOutcome:
    verdict: str
    expectations: list[ExpectationResult]
    arms: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    premises_failed: list[str] = field(default_factory=list)
    family: dict[str, Any] = field(default_factory=dict)  # name, size, member, alpha (the level used), p (IUT)

    @property
    def claim_tests(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.premise] or self.expectations

    @property
    def headline(self) -> ExpectationResult:
        tests = self.claim_tests
        worst = max(VERDICT_ORDER[e.verdict] for e in tests)
        return next(e for e in tests if VERDICT_ORDER[e.verdict] == worst)

    @property
    def verdict_text(self) -> str:
        """The verdict in words: ``inconclusive (premise failed: <label>; ...)`` when a premise failed."""
        if self.premises_failed:
            return f"inconclusive (premise failed: {'; '.join(self.premises_failed)})"
        return self.verdict


def row_seeds(m: Measurements) -> dict[str, dict[str, list[list[int]]]]:
    """``row_seeds[metric][arm]``: the seed indices behind each row where a probe's rows are not one per seed
    (``extras["row_seeds"]`` of the main probe or of an extra probe, e.g. the Ind-vs-Ind pairs)."""
    out: dict[str, dict[str, list[list[int]]]] = {}
    for extras in (m.extras, *(v for v in m.extras.values() if isinstance(v, dict))):
        for metric, arms in (extras.get("row_seeds") or {}).items():
            out.setdefault(metric, {}).update(arms)
    return out


def _terms(cmp: Comparison, metric: str, m: Measurements, teachers: set[str]) -> list[stats.Term]:
    terms, rows = [], row_seeds(m)
    for coef, ref in cmp.terms:
        name = ref.metric(metric)
        if name not in m.values:
            raise MeasurementError(f"metric '{name}' was not measured; the probe gave: {sorted(m.values)}")
        if ref.arm not in m.values[name]:
            raise MeasurementError(f"metric '{name}' has no arm '{ref.arm}'; arms: {sorted(m.values[name])}")
        values = m.values[name][ref.arm]
        seeds = rows.get(name, {}).get(ref.arm)
        terms.append(stats.Term(coef, values, image_set=name, fixed=ref.arm in teachers and values.shape[0] == 1,
                                row_seeds=tuple(map(tuple, seeds)) if seeds is not None else None))
    return terms


def run_comparison(cmp: Comparison, metric: str, m: Measurements, *, margin: float | None, alpha: float,
                    resamples: int, method: str, seed: int, teachers: set[str] = frozenset()) -> stats.TestResult:
    """``Σ coef·mean + constant (op) 0`` tested by ``stats.contrast_test`` (arms named in ``teachers`` are fixed
    models); the statistic reported excludes the constant (``closer > 0.5`` reports the share and tests it
    against the threshold 0.5)."""
    terms = _terms(cmp, metric, m, set(teachers))
    threshold = -cmp.constant
    rng = np.random.default_rng(seed)
    if cmp.op == "~=":
        r = stats.equivalence_test(terms, -threshold, margin=margin, alpha=alpha, resamples=resamples, rng=rng,
                                   method=method)
        # report the statistic itself (not its distance to the threshold), in both answers
        return replace(r, estimate=r.estimate + threshold, ci_low=r.ci_low + threshold, ci_high=r.ci_high + threshold,
                       seed_level=_shift(r.seed_level, threshold), image_level=_shift(r.image_level, threshold))
    return stats.directional_test(terms, 0.0, alternative="greater" if cmp.op == ">" else "less",
                                  threshold=threshold, alpha=alpha, resamples=resamples, rng=rng, method=method)


def _shift(answer: dict | None, by: float) -> dict | None:
    if answer is None:
        return None
    return {**answer, **{k: answer[k] + by for k in ("estimate", "ci_low", "ci_high")}}


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


def item_name(claim: Claim) -> str:
    """The name a family lists an item by: ``id``, or ``id[setting]`` for a claim with settings."""
    return f"{claim.id}[{claim.setting}]" if claim.setting else claim.id


def family_of(claim: Claim) -> dict[str, Any]:
    """The declared family of this item at its tier: name, size m, membership and the level α/m its claim
    tests use (an item outside every family is judged alone: m = 1)."""
    fam, alpha = claim.family, claim.significance.alpha
    member = fam is not None and item_name(claim) in fam.members
    size = len(fam.members) if member else 1
    return {"name": fam.name if member else None, "size": size, "member": member, "alpha": alpha / size,
            "rule": "Bonferroni within the declared family (Holm with every other member at p = 1)"}


def convergence_failures(events: list[dict[str, Any]] | None) -> list[str]:
    """``model <name> seed <s> did not converge`` for every model whose training says ``converged: False``."""
    out = []
    for ev in events or []:
        if ev.get("converged") is False:
            seed = "" if ev.get("seed") is None else f" seed {ev['seed']}"
            out.append(f"model {ev.get('model')}{seed} did not converge")
    return out


def evaluate(claim: Claim, m: Measurements, *, seed: int = 0, arm_resamples: int = 1000,
             events: list[dict[str, Any]] | None = None) -> ClaimOutcome:
    """Premises at α, claim expectations at the family level, IUT verdict (module docstring)."""
    sig, fam = claim.significance, family_of(claim)
    teachers = set(claim.setup.all_teachers())
    results: list[ExpectationResult] = []
    for i, exp in enumerate(claim.expect):
        alpha = sig.alpha if exp.premise else fam["alpha"]
        for j, (label, cmp) in enumerate(expand(exp, distilled_arms(claim))):
            r = run_comparison(cmp, exp.metric, m, margin=exp.margin, alpha=alpha, resamples=sig.resamples,
                                method=sig.method, seed=seed + 1000 * i + j, teachers=teachers)
            results.append(ExpectationResult(
                label=label, metric=exp.metric,
                kind="equivalent" if cmp.op == "~=" else ("greater" if cmp.op == ">" else "less"),
                threshold=-cmp.constant, margin=exp.margin, measured=r.estimate, ci_low=r.ci_low,
                ci_high=r.ci_high, p_value=r.p_value, verdict=r.verdict, alpha=alpha, n_images=r.n_units,
                n_seeds=r.n_seeds, method=r.method, smoke_asserts=exp.smoke, premise=exp.premise,
                decided_by=r.decided_by, mde=r.mde if np.isfinite(r.mde) else None, seed_level=r.seed_level,
                image_level=r.image_level,
                paper=exp.paper if exp.paper is not None else paper_contrast(claim, cmp, exp.metric),
            ))
    for r in results:
        r.p_holm = None if r.premise else min(1.0, fam["size"] * r.p_value)
    failed = [r.label for r in results if r.premise and r.verdict != "supported"] + convergence_failures(events)
    tests = [r for r in results if not r.premise]
    worst = max(VERDICT_ORDER[r.verdict] for r in tests)
    verdict = "inconclusive" if failed else next(v for v, k in VERDICT_ORDER.items() if k == worst)
    fam["p"] = 1.0 if failed else max(r.p_value for r in tests)
    fam["p_adjusted"] = min(1.0, fam["size"] * fam["p"])
    return ClaimOutcome(verdict, results, arm_summary(claim, m, seed=seed, resamples=arm_resamples), failed, fam)


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
        if e.decided_by == "none":
            expected = "inconclusive"
        elif e.kind == "greater":
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
