"""Statistics for claims: a two-way (images x seeds) bootstrap, directional and equivalence tests, share tests, Holm.

A claim's statistic is a linear combination of NaN-aware means of references (arrays of shape
``(n_seeds, n_units)``, units being images):

    θ = Σ_k c_k · mean(A_k) + constant,   mean(A) = Σ_{s,i} A_si / #{(s, i): A_si is not NaN}.

**Two-way bootstrap** (images and seeds are crossed). Replicate b draws, with replacement, image indices for
each image set (references with the same ``image_set`` key get the same indices: paired) and seed rows for each
row count > 1 (references with the same number of rows share them; one-row references, e.g. a teacher, are
not resampled over seeds). With multinomial counts ``w`` (seeds) and ``v`` (images) the replicate mean is

    mean*(A) = (wᵀ A₀ v) / (wᵀ M v),   A₀ = A with NaN set to 0,  M = 1[A is not NaN],

so a chunk of replicates costs two matrix products per reference and never materialises resampled arrays.

All intervals are the pair of one-sided (1 − α) bounds, i.e. a (1 − 2α) two-sided interval; a directional
claim uses the bound on its side, an equivalence claim (TOST) uses both. Verdicts come from the interval; the
p-value (shift method, for Holm) answers the same question and can disagree with it near the boundary when the
replicates are skewed.

Limits (checked by simulation in tests/test_stats.py): with one seed, or several seeds that differ only by
noise, "supported" under the null comes out at about α. The seed component of the variance rests on S − 1
degrees of freedom, so with two seeds whose offsets outweigh the image-level error the interval is too narrow
(14-22 % false support at α = 5 % in our simulations); more seeds help (about 6-7 % with four to eight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

Alternative = Literal["greater", "less"]
Method = Literal["percentile", "bca"]
Verdict = Literal["supported", "refuted", "inconclusive"]

_CHUNK_ELEMENTS = 2_000_000  # replicates x units per chunk: ~16 MB per float64 count matrix


@dataclass(frozen=True)
class Term:
    """One reference of a statistic: ``coef · mean(values)``.

    ``values`` has shape ``(n_seeds, n_units)``; NaN marks a missing unit. Terms with the same ``image_set``
    share the unit axis (same images, same order) and are resampled with the same image indices.
    """

    coef: float
    values: np.ndarray
    image_set: str = "images"

    def __post_init__(self) -> None:
        arr = _check_array(self.values, f"term '{self.image_set}'")
        object.__setattr__(self, "values", arr)
        if not np.isfinite(self.coef):
            raise ValueError(f"term '{self.image_set}': coefficient must be finite, got {self.coef}")
        object.__setattr__(self, "coef", float(self.coef))


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test.

    ``ci_low``/``ci_high`` are the one-sided (1 − α) bounds, together a (1 − 2α) interval. ``threshold`` is
    the value the claim is compared with (for an equivalence test, the margin). ``resamples`` counts the
    bootstrap replicates actually used (0 for the binomial test).
    """

    __test__ = False  # not a pytest class

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict
    kind: Literal["directional", "equivalence", "share"]
    alpha: float
    n_units: int
    n_seeds: int
    resamples: int
    method: str
    alternative: str = ""
    threshold: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- validation


def _check_array(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (n_seeds, n_units), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{what}: values must be finite or NaN, found inf")
    with_data = int((~np.isnan(arr)).any(axis=0).sum())
    if with_data < 2:
        raise ValueError(f"{what}: need at least 2 units with data, got {with_data}")
    return arr


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def _check_resamples(resamples: int) -> None:
    if int(resamples) != resamples or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples}")


def _check_terms(terms: Sequence[Term], constant: float) -> list[Term]:
    terms = list(terms)
    if not terms:
        raise ValueError("need at least one term")
    if not all(isinstance(t, Term) for t in terms):
        raise ValueError("terms must be Term instances")
    if not np.isfinite(constant):
        raise ValueError(f"constant must be finite, got {constant}")
    width: dict[str, int] = {}
    for t in terms:
        n = width.setdefault(t.image_set, t.values.shape[1])
        if n != t.values.shape[1]:
            raise ValueError(f"image set '{t.image_set}': terms have {n} and {t.values.shape[1]} units")
    return terms


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# ---------------------------------------------------------------------------------------------- bootstrap


def estimate(terms: Sequence[Term], constant: float = 0.0) -> float:
    """Point estimate θ̂ = Σ_k c_k · nanmean(A_k) + constant (the mean over all non-NaN seed x unit cells)."""
    terms = _check_terms(terms, constant)
    return float(sum(t.coef * np.nanmean(t.values) for t in terms) + constant)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Index draws (B, k) -> counts (B, n): counts[b, j] = #{i: idx[b, i] = j}."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _from_counts(
    terms: Sequence[Term],
    constant: float,
    seed_counts: Mapping[int, np.ndarray],
    image_counts: Mapping[str, np.ndarray],
) -> np.ndarray:
    """θ* = Σ_k c_k (wᵀ A₀ v)/(wᵀ M v) + constant for each replicate (row) of the count matrices."""
    out = np.full(next(iter(image_counts.values())).shape[0], float(constant))
    for t in terms:
        v = image_counts[t.image_set]  # (B, n)
        mask = ~np.isnan(t.values)
        num = v @ np.where(mask, t.values, 0.0).T  # (B, S)
        den = v @ mask.T.astype(np.float64)
        s = t.values.shape[0]
        if s > 1 and s in seed_counts:
            w = seed_counts[s]  # (B, S)
            num, den = (w * num).sum(axis=1), (w * den).sum(axis=1)
        else:
            num, den = num.sum(axis=1), den.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out += t.coef * (num / den)  # NaN where the replicate drew no data for this reference
    return out


def replicates_from_indices(
    terms: Sequence[Term],
    constant: float,
    seed_idx: Mapping[int, np.ndarray],
    image_idx: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Replicate statistics for given draws: ``seed_idx[S]`` (B, S) rows for references with S rows,
    ``image_idx[key]`` (B, n) units for image set ``key``. Replicate b equals θ computed on
    ``A_k[seed_idx[S_k][b]][:, image_idx[key_k][b]]`` for every k (NaN if a reference got no data).
    A row count missing from ``seed_idx`` is not resampled over seeds."""
    terms = _check_terms(terms, constant)
    widths = {t.image_set: t.values.shape[1] for t in terms}
    ic = {k: _counts(np.asarray(image_idx[k]), n) for k, n in widths.items()}
    sc = {s: _counts(np.asarray(i), s) for s, i in seed_idx.items()}
    return _from_counts(terms, constant, sc, ic)


def two_way_bootstrap(
    terms: Sequence[Term],
    constant: float = 0.0,
    *,
    resamples: int,
    rng: np.random.Generator | int | None,
    chunk: int | None = None,
    seeds: bool = True,
) -> np.ndarray:
    """Bootstrap replicates θ*_1..θ*_B of θ = Σ_k c_k mean(A_k) + constant, resampling images and seeds.

    Each replicate draws n_key image indices per image set (shared by its terms) and, if ``seeds``, S seed
    rows per row count S > 1 (shared by all terms with S rows); θ* = Σ_k c_k (wᵀA₀v)/(wᵀMv) + constant (see
    the module docstring). ``seeds=False`` gives the images-only bootstrap, kept for comparison. Work is done
    ``chunk`` replicates at a time (default: about 2e6 replicate x unit cells per chunk) so memory stays
    bounded. Replicates whose resample holds no data for some reference are NaN.
    """
    terms = _check_terms(terms, constant)
    _check_resamples(resamples)
    gen = _rng(rng)
    widths = {t.image_set: t.values.shape[1] for t in terms}
    rows = sorted({t.values.shape[0] for t in terms if t.values.shape[0] > 1}) if seeds else []
    if chunk is None:
        chunk = max(1, _CHUNK_ELEMENTS // sum(widths.values()))
    elif chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        sc = {s: _counts(gen.integers(0, s, size=(b, s)), s) for s in rows}
        ic = {k: _counts(gen.integers(0, n, size=(b, n)), n) for k, n in widths.items()}
        out[start : start + b] = _from_counts(terms, constant, sc, ic)
    return out


# ---------------------------------------------------------------------------------------------- intervals


def _jackknife(terms: Sequence[Term], constant: float) -> np.ndarray:
    """Leave-one-unit-out θ_(i) for one image set and one row per term: Σ_k c_k (S_k − a_ki)/(N_k − m_ki)."""
    out = np.full(terms[0].values.shape[1], float(constant))
    for t in terms:
        a = t.values[0]
        m = ~np.isnan(a)
        a0 = np.where(m, a, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out += t.coef * (a0.sum() - a0) / (m.sum() - m)
    return out


def _bca_eligible(terms: Sequence[Term]) -> bool:
    return len({t.image_set for t in terms}) == 1 and all(t.values.shape[0] == 1 for t in terms)


def _interval(
    reps: np.ndarray, theta: float, alpha: float, method: str, terms: Sequence[Term], constant: float
) -> tuple[float, float, str]:
    """(q_lo, q_hi, method used): the α and 1 − α bootstrap quantiles.

    percentile: q_lo = Q(α), q_hi = Q(1 − α) of the replicates.
    bca: Q(Φ(z0 + (z0 + z)/(1 − a(z0 + z)))) for z = z_α, z_{1−α}, with bias z0 = Φ⁻¹(#{θ* < θ̂}/B) and
    acceleration a = Σ d_i³ / (6 (Σ d_i²)^{3/2}), d_i = mean(θ_(·)) − θ_(i) from the leave-one-image-out
    jackknife. BCa is done only with one image set and one seed row per term (the jackknife over crossed
    images x seeds is not standard); otherwise, or if z0 is infinite or the adjustment degenerates, the
    percentile interval is used and ``method`` says so.
    """
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    levels = np.array([alpha, 1.0 - alpha])
    used = "percentile"
    if method == "bca" and _bca_eligible(terms):
        prop = np.mean(reps < theta)
        if 0.0 < prop < 1.0:
            z0 = sps.norm.ppf(prop)
            jack = _jackknife(terms, constant)
            jack = jack[np.isfinite(jack)]
            d = jack.mean() - jack
            ss = np.sum(d**2)
            acc = np.sum(d**3) / (6.0 * ss**1.5) if ss > 0 else 0.0
            z = sps.norm.ppf(levels)
            adjusted = sps.norm.cdf(z0 + (z0 + z) / (1.0 - acc * (z0 + z)))
            if np.all(np.isfinite(adjusted)) and np.all(1.0 - acc * (z0 + z) > 0):
                levels, used = adjusted, "bca"
    lo, hi = np.quantile(reps, levels)
    return float(lo), float(hi), used


def _shift_p(reps: np.ndarray, theta: float, threshold: float, alternative: str) -> float:
    """Bootstrap p-value by the shift method: the null distribution is θ* − θ̂ + threshold.

    greater: p = (1 + #{b: θ*_b − θ̂ ≥ θ̂ − threshold}) / (B + 1);
    less:    p = (1 + #{b: θ*_b − θ̂ ≤ θ̂ − threshold}) / (B + 1).
    """
    diff = reps - theta
    gap = theta - threshold
    hits = np.sum(diff >= gap) if alternative == "greater" else np.sum(diff <= gap)
    return float((1 + hits) / (reps.size + 1))


def _replicates(terms, constant, resamples, rng, chunk) -> np.ndarray:
    reps = two_way_bootstrap(terms, constant, resamples=resamples, rng=rng, chunk=chunk)
    reps = reps[np.isfinite(reps)]
    if 2 * reps.size < resamples:
        raise ValueError(
            f"only {reps.size} of {resamples} bootstrap resamples held data for every reference: "
            "too few units with data"
        )
    return reps


def _sizes(terms: Sequence[Term]) -> tuple[int, int]:
    units = {t.image_set: t.values.shape[1] for t in terms}
    return sum(units.values()), max(t.values.shape[0] for t in terms)


# ---------------------------------------------------------------------------------------------- tests


def directional_test(
    terms: Sequence[Term],
    constant: float = 0.0,
    *,
    alternative: Alternative,
    threshold: float = 0.0,
    alpha: float = 0.05,
    resamples: int = 10_000,
    rng: np.random.Generator | int | None,
    method: Method = "percentile",
    chunk: int | None = None,
) -> TestResult:
    """Is θ above (``greater``) or below (``less``) ``threshold``? Two-way bootstrap.

    Bounds: ci_low = Q(α), ci_high = Q(1 − α) (percentile or BCa). For ``greater``: supported iff
    ci_low > threshold; refuted iff ci_high < threshold (the interval excludes the claimed side); else
    inconclusive. ``less`` mirrors this. p-value by the shift method (null distribution θ* − θ̂ + threshold):
    p = (1 + #{b: θ*_b − θ̂ ≥ θ̂ − threshold}) / (B + 1) for ``greater``, ≤ for ``less``. Replicates with no
    data for some reference are dropped (ValueError if that is more than half); ``resamples`` in the result
    counts those kept.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    _check_alpha(alpha)
    terms = _check_terms(terms, constant)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    theta = estimate(terms, constant)
    reps = _replicates(terms, constant, resamples, rng, chunk)
    lo, hi, used = _interval(reps, theta, alpha, method, terms, constant)
    if alternative == "greater":
        verdict = "supported" if lo > threshold else "refuted" if hi < threshold else "inconclusive"
    else:
        verdict = "supported" if hi < threshold else "refuted" if lo > threshold else "inconclusive"
    n_units, n_seeds = _sizes(terms)
    return TestResult(
        estimate=theta, ci_low=lo, ci_high=hi, p_value=_shift_p(reps, theta, threshold, alternative),
        verdict=verdict, kind="directional", alpha=alpha, n_units=n_units, n_seeds=n_seeds,
        resamples=int(reps.size), method=used, alternative=alternative, threshold=float(threshold),
    )  # fmt: skip


def equivalence_test(
    terms: Sequence[Term],
    constant: float = 0.0,
    *,
    margin: float,
    alpha: float = 0.05,
    resamples: int = 10_000,
    rng: np.random.Generator | int | None,
    method: Method = "percentile",
    chunk: int | None = None,
) -> TestResult:
    """Is θ within ±``margin`` of 0? Two one-sided tests (TOST) via the two-way bootstrap.

    With the (1 − 2α) interval [Q(α), Q(1 − α)]: supported iff −margin < Q(α) and Q(1 − α) < margin;
    refuted iff Q(α) > margin or Q(1 − α) < −margin (the interval lies wholly outside the band); else
    inconclusive — a wide interval is never a pass. p = max(p_{θ > −margin}, p_{θ < margin}) (shift method).
    To test θ ≈ c, put −c into ``constant``.
    """
    _check_alpha(alpha)
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be > 0, got {margin}")
    terms = _check_terms(terms, constant)
    theta = estimate(terms, constant)
    reps = _replicates(terms, constant, resamples, rng, chunk)
    lo, hi, used = _interval(reps, theta, alpha, method, terms, constant)
    if -margin < lo and hi < margin:
        verdict = "supported"
    elif lo > margin or hi < -margin:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    p = max(_shift_p(reps, theta, -margin, "greater"), _shift_p(reps, theta, margin, "less"))
    n_units, n_seeds = _sizes(terms)
    return TestResult(
        estimate=theta, ci_low=lo, ci_high=hi, p_value=p, verdict=verdict, kind="equivalence", alpha=alpha,
        n_units=n_units, n_seeds=n_seeds, resamples=int(reps.size), method=used, alternative="equivalent",
        threshold=float(margin),
    )  # fmt: skip


def share_test(
    successes: np.ndarray,
    threshold: float = 0.5,
    alternative: Alternative = "greater",
    alpha: float = 0.05,
) -> TestResult:
    """Is the share of units with success above (``greater``) or below (``less``) ``threshold``? One seed.

    k = Σ x_i successes out of n units with data (NaN dropped); p = ``binomtest(k, n, threshold, alternative)``;
    bounds = Wilson (1 − 2α) interval, i.e. each one-sided at 1 − α. Verdict as in ``directional_test``.
    With several seed rows the units are not independent trials: put the 0/1 array into a ``Term`` and use
    ``directional_test`` (the share is the mean, and the two-way bootstrap carries the seed variation).
    """
    _check_alpha(alpha)
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    x = np.asarray(successes, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(
            f"share_test takes one seed (shape (n,) or (1, n)), got {x.shape}; for several seeds use "
            "directional_test([Term(1.0, successes)], threshold=...) (two-way bootstrap)"
        )
    x = x[~np.isnan(x)]
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("successes must be 0, 1 or NaN")
    if x.size < 2:
        raise ValueError(f"need at least 2 units with data, got {x.size}")
    k, n = int(x.sum()), int(x.size)
    p = float(sps.binomtest(k, n, threshold, alternative=alternative).pvalue)
    ci = sps.binomtest(k, n, threshold).proportion_ci(confidence_level=1.0 - 2.0 * alpha, method="wilson")
    lo, hi = float(ci.low), float(ci.high)
    if alternative == "greater":
        verdict = "supported" if lo > threshold else "refuted" if hi < threshold else "inconclusive"
    else:
        verdict = "supported" if hi < threshold else "refuted" if lo > threshold else "inconclusive"
    return TestResult(
        estimate=k / n, ci_low=lo, ci_high=hi, p_value=p, verdict=verdict, kind="share", alpha=alpha,
        n_units=n, n_seeds=1, resamples=0, method="binomial-wilson", alternative=alternative,
        threshold=float(threshold),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- helpers


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    With the m non-NaN p-values sorted p_(1) ≤ … ≤ p_(m): p̃_(j) = min(1, max_{i ≤ j} (m − i + 1) p_(i)).
    NaN entries are passed through and do not count in m.
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be one-dimensional")
    ok = ~np.isnan(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = p.copy()
    q = p[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        fill = np.empty(m)
        fill[order] = adj
        out[ok] = fill
    return out


def mean_ci(
    values: np.ndarray,
    *,
    alpha: float = 0.05,
    resamples: int = 10_000,
    rng: np.random.Generator | int | None,
) -> tuple[float, float, float]:
    """(nanmean, Q(α), Q(1 − α)) of one reference under the two-way bootstrap: the (1 − 2α) percentile
    interval, the same band the tests report, for error bars in figures."""
    _check_alpha(alpha)
    terms = [Term(1.0, values)]
    reps = _replicates(terms, 0.0, resamples, rng, None)
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return estimate(terms), float(lo), float(hi)
