"""The ``report.json`` format, version 1, as pydantic models.

A report is one pytest run: a header (command, machine, time) and one ``ReportItem`` per collected claim item.
Every model forbids unknown keys except ``ReportItem.extras`` (free-form JSON for figures and notes).
Numbers are ``None`` where nothing was measured (skipped and error items); NaN/inf are accepted on input and
written as ``null`` by ``model_dump_json``. An item's top-level ``measured``/``ci_*``/``p_*``/``paper`` are those
of its headline expectation (the one that decided its verdict).
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Verdict = Literal["supported", "refuted", "inconclusive", "skipped", "error"]
ExpectationVerdict = Literal["supported", "refuted", "inconclusive"]
Outcome = Literal["passed", "failed", "skipped", "error"]
Tier = Literal["smoke", "cpu", "gpu"]
RecipeName = Literal["paper", "fast"]
FigureKind = Literal["bars", "lines", "heatmaps", "groups", "planes", "none"]
Number = float | None

VERDICTS: tuple[str, ...] = ("supported", "refuted", "inconclusive", "skipped", "error")
TIERS: tuple[str, ...] = ("smoke", "cpu", "gpu")
REPORT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Machine(_Strict):
    """Where the run happened."""

    python: str
    torch: str
    device: str = Field(description='"cpu" or the accelerator name, e.g. "NVIDIA H100 80GB HBM3"')


class PaperRef(_Strict):
    """Where the claim sits in the paper."""

    section: str
    figure: str | None = None
    table: str | None = None


class Setup(_Strict):
    """The models, methods, data and seeds of one item."""

    teacher: str | None = None
    student: str | None = None
    methods: list[str] = Field(default_factory=list)
    data: str | None = None
    seeds: list[int] = Field(default_factory=list)


class Answer(_Strict):
    """One of a test's two answers: ``seed_level`` (the method: t over training seeds, df = S - 1) or
    ``image_level`` (these checkpoints: the image bootstrap with the models fixed)."""

    estimate: Number = None
    ci_low: Number = None
    ci_high: Number = None
    p_value: Number = None
    verdict: ExpectationVerdict | None = None
    se: Number = None
    se_seeds: Number = None
    se_images: Number = None
    df: Number = None
    n_seeds: int | None = None
    resamples: int | None = None
    mde: Number = None
    method: str | None = None


class Family(_Strict):
    """The declared family an item is judged in (docs/statistics.md): ``alpha`` = the level its claim tests
    used (α/size), ``p`` its one p (the largest of its expectations'), ``p_adjusted`` = min(1, size·p) (what the
    verdict used), ``p_holm_run`` Holm over the family's items of this run (for information)."""

    name: str | None = None
    size: int = 1
    member: bool = False
    alpha: Number = None
    rule: str | None = None
    p: Number = None
    p_adjusted: Number = None
    p_holm_run: Number = None


class Expectation(_Strict):
    """One tested comparison of a claim and its statistics.

    ``kind``: ``greater`` (measured > threshold), ``less`` (measured < threshold) or ``equivalent``
    (|measured - threshold| < margin); ``measured`` is the statistic (e.g. a mean paired difference),
    ``ci_low``/``ci_high`` the interval of the answer that decided (``decided_by``: ``seeds`` = the method,
    ``images`` = fixed models only, ``none`` = one seed, inconclusive), ``seed_level``/``image_level`` both
    answers, ``mde`` the minimum detectable effect at 80 % power, ``p_holm`` the family-adjusted p the verdict
    used (min(1, m·p); None for a premise). A ``premise`` is judged at ``alpha`` before the claim's own tests.
    """

    label: str
    metric: str
    kind: Literal["greater", "less", "equivalent"]
    threshold: Number = 0.0
    margin: Number = None
    measured: Number = None
    ci_low: Number = None
    ci_high: Number = None
    p_value: Number = None
    p_holm: Number = None
    paper: Number = None
    verdict: ExpectationVerdict
    alpha: Number = None
    n_images: int | None = None
    n_seeds: int | None = None
    method: str | None = Field(default=None, description='CI method, e.g. "t over seeds", "image bootstrap, percentile"')
    premise: bool = False
    decided_by: Literal["seeds", "images", "none"] | None = None
    mde: Number = None
    seed_level: Answer | None = None
    image_level: Answer | None = None


class ArmStat(_Strict):
    """Mean of one metric for one arm, its CI, and the paper's value when the paper gives one (``paper_pm``: the
    +- it prints; ``paper_flag``: why the value is suspect and where the paper prints it otherwise)."""

    mean: Number = None
    ci_low: Number = None
    ci_high: Number = None
    paper: Number = None
    paper_pm: Number = None
    paper_flag: str | None = None


class Figure(_Strict):
    """What to draw for an item.

    - ``bars``: one bar per arm for each metric in ``metrics`` (CI error bars, the paper's value beside ours).
    - ``lines``: ``metrics[i]`` is the metric at ``x[i]``; one line per arm with a CI band.
    - ``heatmaps``: one matrix per arm from ``extras["cka_matrix"][arm]``, shared colour scale 0..1.
    - ``groups``: grouped bars, one group per metric, one colour per arm.
    - ``planes``: decision regions on planes through three images, one row per plane and one column per model,
      from ``extras["boundary_planes"]`` (the boundary probe).
    ``x`` may hold numbers or category labels; when given it has one entry per metric.
    """

    kind: FigureKind = "none"
    metrics: list[str] = Field(default_factory=list)
    x: list[float | str] | None = None
    xlabel: str | None = None
    ylabel: str | None = None

    @model_validator(mode="after")
    def _x_matches_metrics(self) -> Figure:
        if self.x is not None and len(self.x) != len(self.metrics):
            raise ValueError(f"x has {len(self.x)} entries but metrics has {len(self.metrics)}")
        return self


class ReportItem(_Strict):
    """One claim item (a YAML claim at one tier, setting and recipe) and what came of it."""

    nodeid: str
    id: str
    title: str = ""
    setting: str | None = None
    tier: Tier
    recipe: RecipeName | None = None
    outcome: Outcome
    verdict: Verdict
    verdict_text: str = Field("", description='the verdict in words, e.g. "inconclusive (premise failed: ...)"')
    premises_failed: list[str] = Field(default_factory=list)
    family: Family | None = None
    message: str = ""
    paper_ref: PaperRef | None = None
    statement: str = ""
    setup: Setup | None = None
    statistic: str = ""
    metric: str | None = None
    measured: Number = None
    ci_low: Number = None
    ci_high: Number = None
    p_value: Number = None
    p_holm: Number = None
    paper: Number = None
    n_images: int | None = None
    n_seeds: int | None = None
    seconds: Number = None
    expectations: list[Expectation] = Field(default_factory=list)
    arms: dict[str, dict[str, ArmStat]] = Field(default_factory=dict)
    figure: Figure = Field(default_factory=Figure)
    extras: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        """``id[tier/setting/recipe]`` (absent parts left out), the item's short name in tables."""
        inside = "/".join(p for p in (self.tier, self.setting, self.recipe) if p)
        return f"{self.id}[{inside}]"

    @property
    def delta(self) -> float | None:
        """measured - paper, when both are finite."""
        if _finite(self.measured) and _finite(self.paper):
            return float(self.measured) - float(self.paper)  # type: ignore[arg-type]
        return None


class Report(_Strict):
    """A whole run: header plus items, in collection order."""

    version: Literal[1] = REPORT_VERSION
    kdclaims_version: str
    created: str = Field(description="ISO-8601 time in UTC, e.g. 2025-01-31T12:00:00Z")
    command: str
    machine: Machine
    items: list[ReportItem] = Field(default_factory=list)

    @field_validator("created")
    @classmethod
    def _iso8601(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"not an ISO-8601 time: {v!r}") from e
        return v

    def counts(self) -> dict[str, dict[str, int]]:
        """``counts[tier][verdict]`` for every tier and verdict (zeros included), plus a ``"total"`` row."""
        table = {t: {v: 0 for v in VERDICTS} for t in (*TIERS, "total")}
        for it in self.items:
            table[it.tier][it.verdict] += 1
            table["total"][it.verdict] += 1
        return table

    def slugs(self) -> list[str]:
        """A unique, file- and anchor-safe name per item, in item order (from the nodeid's last part)."""
        seen: dict[str, int] = {}
        out = []
        for it in self.items:
            base = slugify(it.nodeid.rsplit("::", 1)[-1]) or "item"
            if len(base) > MAX_SLUG:  # a file name: keep it well under NAME_MAX, unique by a hash of the node id
                base = base[: MAX_SLUG - 13].rstrip("-") + "-" + hashlib.sha256(it.nodeid.encode()).hexdigest()[:12]
            n = seen.get(base, 0) + 1
            seen[base] = n
            out.append(base if n == 1 else f"{base}-{n}")
        return out


MAX_SLUG = 96


def slugify(text: str) -> str:
    """Lower-case ``[a-z0-9-]`` form of ``text``: other runs of characters become one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def as_report(report: Report | Mapping[str, Any]) -> Report:
    """``report`` itself, or the decoded ``report.json`` dict validated into a ``Report``."""
    return report if isinstance(report, Report) else Report.model_validate(report)


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json`` (for editors and other tools)."""
    return Report.model_json_schema()
