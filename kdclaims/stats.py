"""Statistics for claims: seed-level inference for verdicts, an image-level bootstrap for "these checkpoints", Holm.

A claim's statistic is a linear combination of arm means (each arm an array of shape ``(n_rows, n_units)``;
rows are training seeds, units are images; NaN marks a missing unit):

    θ = Σ_k c_k · mean(A_k) + constant.

Every test answers two questions (docs/statistics.md explains the design and shows its calibration):

**The method** (the verdict). The training seed is the unit of inference. Per seed s the contrast is
d_s = Σ_k c_k · rowmean(A_k[s]) + constant (a fixed model such as a teacher has one row and gives the same value
to every seed); θ̂ = mean_s d_s. Its variance is estimated by the delete-one-seed jackknife, which for per-seed
rows equals s_d²/S (the one-sample t statistic) and also covers rows that come from several seeds (the
Ind-vs-Ind control: one row per pair of seeds), plus the image-sampling variance the seeds share (the
image x arm term of a crossed design, σ̂²_b/n from a two-way decomposition, zero when absent):

    V_images = Σ_g σ̂²_b,g / n_g,   bounds θ̂ ∓ √(t²_{1−α,S−1} V_seed + z²_{1−α} V_images)   (``half_width``),

each part with its own quantile (conservative: Banerjee's solution of the Behrens–Fisher problem); the p-value
is the α at which a bound touches the threshold (the one-sample t-test's p when V_images = 0).

**These checkpoints** (the second answer): the image bootstrap conditional on the trained models. Replicate b
draws n image indices per image set (shared by that set's terms: paired) and keeps every seed row:

    mean*(A) = Σ_s (A₀ v)_s / Σ_s (M v)_s,   A₀ = A with NaN set to 0,  M = 1[A is not NaN],  v = image counts,

two matrix products per reference; the resampled arrays are never materialised. ``two_way_bootstrap`` can also
resample seed rows (the old pooled design, kept for comparison: it is not calibrated, see docs/statistics.md).

A contrast of fixed models only (``Term(fixed=True)``, e.g. ``teacher > tstar``) has no seed replication: the
image-level answer is its verdict. A contrast with student arms but one seed cannot answer the method question:
it is inconclusive. All intervals are the pair of one-sided (1 − α) bounds, i.e. a (1 − 2α) two-sided interval;
a directional claim uses the bound on its side, an equivalence claim (TOST) both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

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
    fixed: bool = False
    row_seeds: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        arr = _check_array(self.values, f"term '{self.image_set}'")
        object.__setattr__(self, "values", arr)
        if not np.isfinite(self.coef):
            raise ValueError(f"term '{self.image_set}': coefficient must be finite, got {self.coef}")
        object.__setattr__(self, "coef", float(self.coef))
        if self.fixed and arr.shape[0] != 1:
            raise ValueError(f"term '{self.image_set}': a fixed model has one row, got {arr.shape[0]}")
        if self.row_seeds is not None:
            rows = tuple(tuple(int(s) for s in r) for r in self.row_seeds)
            if len(rows) != arr.shape[0] or not all(rows):
                raise ValueError(f"term '{self.image_set}': row_seeds needs one non-empty seed tuple per row "
                                 f"({arr.shape[0]} rows), got {self.row_seeds}")
            object.__setattr__(self, "row_seeds", rows)

    def seeds(self) -> tuple[tuple[int, ...], ...]:
        """The seeds behind each row: () for a fixed model, else ``row_seeds`` or row r <- seed r."""
        if self.fixed:
            return ((),)
        return self.row_seeds if self.row_seeds is not None else tuple((r,) for r in range(self.values.shape[0]))


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test: the deciding answer at the top level, both answers in ``seed_level`` and
    ``image_level``.

    ``ci_low``/``ci_high`` are the one-sided (1 − α) bounds of the deciding answer, together a (1 − 2α)
    interval. ``threshold`` is the value the claim is compared with (for an equivalence test, the margin).
    ``decided_by``: ``seeds`` (the method: seed-level t), ``images`` (fixed models only: the image bootstrap is
    the only inference) or ``none`` (student arms with one seed: no method-level answer, inconclusive).
    ``mde``: the minimum detectable effect at 80 % power of the deciding answer (for an equivalence test, the
    smallest margin it could prove when the true difference is 0). ``resamples`` counts the image-bootstrap
    replicates used.
    """

    __test__ = False  # not a pytest class

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict
    kind: Literal["directional", "equivalence"]
    alpha: float
    n_units: int
    n_seeds: int
    resamples: int
    method: str
    alternative: str = ""
    threshold: float = 0.0
    decided_by: Literal["seeds", "images", "none"] = "seeds"
    mde: float = float("nan")
    seed_level: dict | None = None
    image_level: dict | None = None

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
    bca: Q(Φ(z0 + (z0 + z)/(1 − a(z0 + z)))) for z = z_α, z_{1−α}, with bias
    z0 = Φ⁻¹((#{θ* < θ̂} + #{θ* = θ̂}/2)/B) (ties count half, as scipy does: 0/1 data tie often) and
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
        prop = np.mean(reps < theta) + 0.5 * np.mean(reps == theta)
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


def _replicates(terms, constant, resamples, rng, chunk, seeds: bool = True) -> np.ndarray:
    reps = two_way_bootstrap(terms, constant, resamples=resamples, rng=rng, chunk=chunk, seeds=seeds)
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


# ---------------------------------------------------------------------------------------------- seed level


def image_component(d: np.ndarray) -> np.ndarray:
    """Image-sampling variance that all rows share, σ̂²_b/n, from per-row, per-image contributions
    ``d`` of shape ``(..., R, n)`` (R rows, n images; leading axes are independent problems).

    Two-way decomposition d_ri = μ + a_r + b_i + e_ri: with c_i = mean_r d_ri and the residual mean square
    MS_e = Σ (d_ri − d̄_r· − d̄_·i + d̄)² / ((R − 1)(n − 1)), σ̂²_b = max(0, var_i(c_i) − MS_e/R) (MS_e = 0 when
    R = 1, where every image-level variation is shared). Returns σ̂²_b / n.
    """
    d = np.asarray(d, dtype=np.float64)
    r, n = d.shape[-2], d.shape[-1]
    col = d.mean(axis=-2)
    var_col = col.var(axis=-1, ddof=1)
    if r > 1:
        res = d - d.mean(axis=-1, keepdims=True) - col[..., None, :] + col.mean(axis=-1)[..., None, None]
        ms_e = (res**2).sum(axis=(-2, -1)) / ((r - 1) * (n - 1))
        var_col = var_col - ms_e / r
    return np.maximum(var_col, 0.0) / n


def half_width(var_seed, var_images, df, alpha):
    """h(α) = √(t²_{1−α,ν} V_seed + z²_{1−α} V_images): each part with its own quantile (Banerjee's conservative
    answer to the Behrens–Fisher problem). The seed part rests on ν = S − 1 degrees of freedom, the image part on
    hundreds of images (z). One t with Satterthwaite's ν was tried and rejected: ν grows exactly when V_seed comes
    out small by chance (10.7 % false support at S = 2); one t_{S−1} for both parts over-covered (0.95 for 0.90)."""
    with np.errstate(over="ignore"):
        return np.sqrt(sps.t.isf(alpha, df) ** 2 * var_seed + sps.norm.isf(alpha) ** 2 * var_images)


def t_bounds(est, var_seed, var_images, df, alpha: float):
    """One-sided (1 − α) bounds θ̂ ∓ h(α)."""
    h = half_width(var_seed, var_images, df, alpha)
    return est - h, est + h


def t_p(est: float, var_seed: float, var_images: float, df: float, threshold: float, alternative: str) -> float:
    """One-sided p dual to the bounds: the α at which the bound touches the threshold, h(p) = θ̂ − threshold for
    ``greater`` (threshold − θ̂ for ``less``); p = 1 − p(−gap) for a gap on the wrong side, 0.5 at the threshold.
    With V = 0: 0 beyond the threshold, 1 short of it. With no image part it is the one-sample t-test's p."""
    gap = est - threshold if alternative == "greater" else threshold - est
    if var_seed + var_images <= 0:
        return 0.0 if gap > 0 else (0.5 if gap == 0 else 1.0)
    if gap == 0:
        return 0.5
    if var_images <= 0:
        p = float(sps.t.sf(abs(gap) / np.sqrt(var_seed), df))
    elif var_seed <= 0:
        p = float(sps.norm.sf(abs(gap) / np.sqrt(var_images)))
    else:
        f = lambda la: half_width(var_seed, var_images, df, np.exp(la)) - abs(gap)  # noqa: E731, decreasing
        lo = np.log(1e-300)
        p = 1e-300 if f(lo) < 0 else float(np.exp(brentq(f, lo, np.log(0.5), xtol=1e-10)))
    return p if gap > 0 else 1.0 - p


def mde(var_seed, var_images, df, alpha: float, power: float = 0.8):
    """Minimum detectable effect at ``power``:
    √((t_{1−α,ν} + t_{power,ν})² V_seed + (z_{1−α} + z_{power})² V_images)."""
    t = sps.t.isf(alpha, df) + sps.t.ppf(power, df)
    z = sps.norm.isf(alpha) + sps.norm.ppf(power)
    return np.sqrt(t**2 * var_seed + z**2 * var_images)


@dataclass(frozen=True)
class SeedLevel:
    """θ̂ = mean over seeds of the per-seed contrast, V and ν (see the module docstring); ``n_seeds`` = S."""

    estimate: float
    var_seed: float
    var_images: float
    var: float
    df: float
    n_seeds: int


def _seed_set(terms: Sequence[Term]) -> list[int]:
    return sorted({s for t in terms if not t.fixed for row in t.seeds() for s in row})


def _theta_over(terms: Sequence[Term], constant: float, row_means: list[np.ndarray], keep: set[int]) -> float:
    """θ restricted to seeds ``keep``: Σ_k c_k · mean of A_k's row means whose seeds all lie in ``keep``."""
    total = float(constant)
    for t, means in zip(terms, row_means):
        rows = [r for r, ss in enumerate(t.seeds()) if set(ss) <= keep]
        vals = means[rows]
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return float("nan")
        total += t.coef * float(vals.mean())
    return total


def _influence(t: Term) -> np.ndarray:
    """Per-row, per-image contributions to the row means: (A_ri − m_r) · n / N_r, 0 where A is NaN."""
    mask = ~np.isnan(t.values)
    counts = mask.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(mask, t.values, 0.0).sum(axis=1, keepdims=True) / counts
        out = np.where(mask, t.values - means, 0.0) * (t.values.shape[1] / counts)
    return np.nan_to_num(out)


def _image_parts(terms: Sequence[Term]) -> list[tuple[float, int]]:
    """[(σ̂²_b,g / n_g, n_g)] per image set g from the summed influences of its terms (one-row terms broadcast)."""
    parts = []
    for key in dict.fromkeys(t.image_set for t in terms):
        group = [t for t in terms if t.image_set == key]
        rows = {t.values.shape[0] for t in group if t.values.shape[0] > 1}
        if len(rows) > 1:
            raise ValueError(f"image set '{key}': terms have different numbers of seed rows {sorted(rows)}")
        r = rows.pop() if rows else 1
        d = sum(t.coef * np.broadcast_to(_influence(t), (r, t.values.shape[1])) for t in group)
        parts.append((float(image_component(d)), group[0].values.shape[1]))
    return parts


def seed_level(terms: Sequence[Term], constant: float = 0.0) -> SeedLevel | None:
    """The method-level answer: θ̂ over seeds, V = V_seed + image part, ν = S − 1 (module docstring).

    V_seed is the delete-one-seed jackknife (S − 1)/S Σ_s (θ̂_(−s) − θ̄_(−·))², equal to s_d²/S for per-seed rows.
    None when every term is a fixed model; with one seed V and ν are NaN (no seed replication).
    """
    terms = _check_terms(terms, constant)
    seeds = _seed_set(terms)
    if not seeds:
        return None
    with np.errstate(invalid="ignore"), _quiet():
        row_means = [np.nanmean(t.values, axis=1) for t in terms]
    est = _theta_over(terms, constant, row_means, set(seeds))
    s = len(seeds)
    if s < 2:
        return SeedLevel(est, float("nan"), float("nan"), float("nan"), float("nan"), s)
    jack = np.array([_theta_over(terms, constant, row_means, set(seeds) - {x}) for x in seeds])
    var_seed = float((s - 1) / s * np.sum((jack - jack.mean()) ** 2)) if np.isfinite(jack).all() else float("nan")
    parts = _image_parts(terms)
    var_images = float(sum(v for v, _ in parts))
    return SeedLevel(est, var_seed, var_images, var_seed + var_images, float(s - 1), s)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


# ---------------------------------------------------------------------------------------------- tests


def _directional_verdict(lo: float, hi: float, threshold: float, alternative: str) -> str:
    if alternative == "greater":
        return "supported" if lo > threshold else "refuted" if hi < threshold else "inconclusive"
    return "supported" if hi < threshold else "refuted" if lo > threshold else "inconclusive"


def _equivalence_verdict(lo: float, hi: float, margin: float) -> str:
    if -margin < lo and hi < margin:
        return "supported"
    return "refuted" if lo > margin or hi < -margin else "inconclusive"


def seed_answer(terms: Sequence[Term], constant: float = 0.0, *, kind: str, alternative: str = "greater",
                threshold: float = 0.0, alpha: float = 0.05) -> dict | None:
    """The method-level answer that decides verdicts (see ``contrast_test``); None without seed replication."""
    return _seed_answer(seed_level(terms, constant), kind=kind, alternative=alternative, threshold=threshold,
                        alpha=alpha)


def _seed_answer(sl: SeedLevel | None, *, kind: str, alternative: str, threshold: float, alpha: float) -> dict | None:
    """The seed-level answer as a dict (estimate, ci_low, ci_high, p_value, verdict, se, df, n_seeds, mde)."""
    if sl is None or not np.isfinite(sl.var):
        return None
    args = (sl.var_seed, sl.var_images, sl.df)
    lo, hi = (float(x) for x in t_bounds(sl.estimate, *args, alpha))
    if kind == "equivalence":
        p = max(t_p(sl.estimate, *args, -threshold, "greater"), t_p(sl.estimate, *args, threshold, "less"))
        verdict = _equivalence_verdict(lo, hi, threshold)
        power_mde = float(mde(*args, alpha, 0.9))  # TOST at a true 0: each side needs power 0.9
    else:
        p = t_p(sl.estimate, *args, threshold, alternative)
        verdict = _directional_verdict(lo, hi, threshold, alternative)
        power_mde = float(mde(*args, alpha))
    return {"estimate": sl.estimate, "ci_low": lo, "ci_high": hi, "p_value": p, "verdict": verdict,
            "se": float(np.sqrt(sl.var)), "se_seeds": float(np.sqrt(sl.var_seed)),
            "se_images": float(np.sqrt(sl.var_images)), "df": sl.df, "n_seeds": sl.n_seeds, "mde": power_mde,
            "method": "t over seeds"}


def _image_answer(terms, constant, *, kind, alternative, threshold, alpha, resamples, rng, method, chunk) -> dict:
    """The conditional image bootstrap (seed rows kept) as a dict (estimate, ci_low, ci_high, p_value, verdict,
    se, method, resamples, mde)."""
    theta = estimate(terms, constant)
    reps = _replicates(terms, constant, resamples, rng, chunk, seeds=False)
    lo, hi, used = _interval(reps, theta, alpha, method, terms, constant)
    se = float(np.std(reps, ddof=1))
    z = sps.norm.ppf(1.0 - alpha)
    if kind == "equivalence":
        p = max(_shift_p(reps, theta, -threshold, "greater"), _shift_p(reps, theta, threshold, "less"))
        verdict = _equivalence_verdict(lo, hi, threshold)
        power_mde = (z + sps.norm.ppf(0.9)) * se
    else:
        p = _shift_p(reps, theta, threshold, alternative)
        verdict = _directional_verdict(lo, hi, threshold, alternative)
        power_mde = (z + sps.norm.ppf(0.8)) * se
    return {"estimate": theta, "ci_low": lo, "ci_high": hi, "p_value": p, "verdict": verdict, "se": se,
            "method": f"image bootstrap, {used}", "resamples": int(reps.size), "mde": float(power_mde)}


def contrast_test(
    terms: Sequence[Term],
    constant: float = 0.0,
    *,
    kind: Literal["directional", "equivalence"],
    alternative: str = "greater",
    threshold: float = 0.0,
    alpha: float = 0.05,
    resamples: int = 10_000,
    rng: np.random.Generator | int | None,
    method: Method = "percentile",
    chunk: int | None = None,
) -> TestResult:
    """Both answers for θ and the verdict from the right one (the module docstring; docs/statistics.md).

    directional: is θ above (``greater``) or below (``less``) ``threshold``? Supported iff the bound on the
    claimed side is beyond the threshold, refuted iff the other bound is beyond it on the wrong side, else
    inconclusive. equivalence (TOST): is |θ| < ``threshold`` (the margin)? Supported iff both bounds lie inside
    ±margin, refuted iff the interval lies wholly outside, else inconclusive; p = max of the two one-sided p.
    The verdict: seed-level t where a student arm is involved and S ≥ 2; the image bootstrap where every term
    is a fixed model; inconclusive with one seed (``decided_by`` = ``none``, the image answer shown).
    """
    _check_alpha(alpha)
    terms = _check_terms(terms, constant)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if kind == "directional" and alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if kind == "equivalence" and not threshold > 0:
        raise ValueError(f"margin must be > 0, got {threshold}")
    alt = "equivalent" if kind == "equivalence" else alternative
    sl = seed_level(terms, constant)
    seeds = _seed_answer(sl, kind=kind, alternative=alternative, threshold=threshold, alpha=alpha)
    images = _image_answer(terms, constant, kind=kind, alternative=alternative, threshold=threshold, alpha=alpha,
                           resamples=resamples, rng=rng, method=method, chunk=chunk)
    if seeds is not None:
        decided, top, verdict = "seeds", seeds, seeds["verdict"]
    elif sl is None:
        decided, top, verdict = "images", images, images["verdict"]
    else:
        decided, top, verdict = "none", images, "inconclusive"
    n_units, n_seeds = _sizes(terms)
    return TestResult(
        estimate=top["estimate"], ci_low=top["ci_low"], ci_high=top["ci_high"],
        p_value=top["p_value"] if decided != "none" else 1.0, verdict=verdict, kind=kind, alpha=alpha,
        n_units=n_units, n_seeds=sl.n_seeds if sl is not None else n_seeds, resamples=images["resamples"],
        method=top["method"], alternative=alt, threshold=float(threshold), decided_by=decided,
        mde=top["mde"] if decided != "none" else float("nan"), seed_level=seeds, image_level=images,
    )  # fmt: skip


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
    """Is θ above (``greater``) or below (``less``) ``threshold``? ``contrast_test`` with kind directional."""
    return contrast_test(terms, constant, kind="directional", alternative=alternative, threshold=threshold,
                         alpha=alpha, resamples=resamples, rng=rng, method=method, chunk=chunk)


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
    """Is θ within ±``margin`` of 0 (TOST)? ``contrast_test`` with kind equivalence. To test θ ≈ c, put −c
    into ``constant``."""
    _check_alpha(alpha)
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be > 0, got {margin}")
    return contrast_test(terms, constant, kind="equivalence", threshold=margin, alpha=alpha, resamples=resamples,
                         rng=rng, method=method, chunk=chunk)


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
    """(mean, low, high) of one arm for error bars, the same (1 − 2α) band the verdicts use: with several seed
    rows the seed-level t-interval (mean over seeds), with one row the image-bootstrap percentile interval."""
    _check_alpha(alpha)
    terms = [Term(1.0, values)]
    sl = seed_level(terms)
    if sl is not None and np.isfinite(sl.var):
        lo, hi = t_bounds(sl.estimate, sl.var_seed, sl.var_images, sl.df, alpha)
        return sl.estimate, float(lo), float(hi)
    reps = _replicates(terms, 0.0, resamples, rng, None, seeds=False)
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return estimate(terms), float(lo), float(hi)
