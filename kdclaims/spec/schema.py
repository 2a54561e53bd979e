"""The claim schema (pydantic v2). ``Claim`` is one claim resolved for one tier and setting.

A claim file is the base document plus optional ``tiers: {smoke|cpu|gpu: overrides}`` and
``settings: {name: overrides}``, deep-merged by ``kdclaims.spec.loader`` before validation here.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdclaims.recipe import Recipe

TIERS = ("smoke", "cpu", "gpu")
Tier = Literal["smoke", "cpu", "gpu"]
ID_RE = r"^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*$"


MAX_SEED = 2**31 - 1  # what every RNG the trainer seeds accepts (NumPy, Python, torch, CUDA)

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fold_extra(data: Any, known: set[str], into: str = "params") -> Any:
    """``{name: x, a: 1}`` -> ``{name: x, params: {a: 1}}``: extra keys are parameters."""
    if isinstance(data, dict):
        extra = {k: v for k, v in data.items() if k not in known}
        if extra:
            data = {k: v for k, v in data.items() if k in known}
            data[into] = {**extra, **(data.get(into) or {})}
    return data


class PaperRef(Strict):
    section: str
    figure: str | None = None
    table: str | None = None

    @field_validator("section", "figure", "table", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v


class DataSpec(Strict):
    """A dataset by registry name; other keys are the builder's parameters (``domains``, ``n``, ...)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        return _fold_extra(data, {"name", "params"})

    def key(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}


class ModelSpec(Strict):
    """An architecture by registry name; ``weights`` loads a file instead of training (teachers)."""

    arch: str
    weights: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"arch": data} if isinstance(data, str) else data


class TeacherSpec(ModelSpec):
    """A teacher: loaded from ``weights`` or trained (independently, seed ``seed``) on ``data`` with ``recipe``."""

    data: DataSpec | None = None  # default: the students' data
    recipe: Recipe | None = None  # default: the students' recipe
    seed: int = Field(0, ge=0)


class MethodSpec(Strict):
    """One student arm: a registered method with parameters, optionally its own teacher and recipe changes."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_*]*$")
    method: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    teacher: str = "teacher"
    recipe: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "method": data}
        if isinstance(data, dict) and "method" not in data and "name" in data:
            data = {**data, "method": data["name"]}
        return data


class Setup(Strict):
    teacher: TeacherSpec
    teachers: dict[str, TeacherSpec] = Field(default_factory=dict)
    student: ModelSpec
    methods: list[MethodSpec] = Field(min_length=1)
    data: DataSpec
    seeds: list[int] = Field(min_length=1)
    recipe: Recipe = Field(default_factory=Recipe)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise ValueError("seeds must be non-negative")
        if any(s > MAX_SEED for s in v):
            raise ValueError(f"seeds must be at most 2**31 - 1 = {MAX_SEED}")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @model_validator(mode="after")
    def _arms(self) -> "Setup":
        names = [m.name for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate method names {dup}; give each arm its own name")
        if "teacher" in self.teachers:
            raise ValueError("teachers: 'teacher' is the main teacher; name extra teachers otherwise")
        for m in self.methods:
            if m.teacher != "teacher" and m.teacher not in self.teachers:
                raise ValueError(f"method {m.name}: unknown teacher '{m.teacher}'; known: {['teacher', *self.teachers]}")
        return self

    def all_teachers(self) -> dict[str, TeacherSpec]:
        return {"teacher": self.teacher, **self.teachers}


class ProbeSpec(Strict):
    """A registered probe; ``images`` caps the evaluation images; other keys are the probe's parameters."""

    name: str
    images: int | None = Field(None, ge=2)
    data: DataSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        return _fold_extra(data, {"name", "images", "data", "params"})


class Expect(Strict):
    """One expected effect: ``compare`` is ``<lhs> (>|<|~=) <rhs>`` over arms of ``metric``.

    Terms are arm names (``kl``, ``independent``, ``teacher``), ``arm[q]`` for sub-metric ``metric/q``,
    numbers, and ``k*arm``; ``{method}`` (or ``distilled``) expands over ``per: method``.
    ``~=`` needs ``margin`` (an equivalence claim). ``paper`` is the paper's value of the left minus right
    side, shown beside ours. ``smoke: true`` asserts the direction at the smoke tier too (a planted effect).
    ``premise: true`` makes it a precondition of the claim, judged first: if it is not supported the item is
    inconclusive (premise failed), never refuted or supported.
    """

    metric: str
    compare: str
    margin: float | None = Field(None, gt=0)
    per: Literal["method"] | list[str] | None = None
    paper: float | None = None
    label: str | None = None
    smoke: bool = False
    premise: bool = False
    why: str | None = None

    @model_validator(mode="after")
    def _parse(self) -> "Expect":
        from kdclaims.spec.compare import parse_compare

        try:
            cmp = parse_compare(self.compare)
        except ValueError as e:
            raise ValueError(f"compare: {e}") from None
        if cmp.op == "~=" and self.margin is None:
            raise ValueError("margin: an equivalence claim ('~=') needs a margin")
        if cmp.op != "~=" and self.margin is not None and self.margin <= 0:
            raise ValueError("margin must be positive")
        return self


RefNumber = float | tuple[float, float]  # a value, or [low, high] for a range the paper states


class RefValue(Strict):
    """One of the paper's values, as ``reference: {metric: {arm: value}}`` gives it.

    A plain number or ``[low, high]`` is shorthand for ``{value: ...}``. ``pm``: the +- printed beside it.
    ``suspect``: why the value should not be taken at face value (the paper contradicts itself there).
    ``also``: the same quantity as printed elsewhere in the paper, ``{where: value}``, where that differs (another
    table, a figure, the text, or the other version of the paper). The report marks values with either.
    """

    value: RefNumber
    pm: float | None = Field(None, ge=0)
    suspect: str | None = Field(None, min_length=3)
    also: dict[str, RefNumber] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"value": data} if isinstance(data, (int, float, list, tuple)) else data

    @field_validator("value")
    @classmethod
    def _range(cls, v: RefNumber) -> RefNumber:
        if isinstance(v, tuple) and v[0] > v[1]:
            raise ValueError(f"a range is [low, high], got {list(v)}")
        return v

    def flag(self) -> str | None:
        """The report's mark: ``suspect: ...; also <where> <value>; ...``, or None for a plain value."""
        parts = [f"suspect: {self.suspect}"] if self.suspect else []
        parts += [f"also {where} {_fmt_ref(v)}" for where, v in self.also.items()]
        return "; ".join(parts) or None


def _fmt_ref(v: RefNumber) -> str:
    return f"{v[0]:g}-{v[1]:g}" if isinstance(v, tuple) else f"{v:g}"


class Significance(Strict):
    alpha: float = Field(0.05, gt=0, lt=0.5)
    resamples: int = Field(10_000, ge=100, le=1_000_000)
    method: Literal["percentile", "bca"] = "percentile"
    unit: list[Literal["image", "seed"]] = Field(default_factory=lambda: ["image", "seed"])


class FamilySpec(Strict):
    """The claims a tier tests together, declared before any run: Bonferroni within it (docs/statistics.md).
    ``members`` are item names: ``id``, or ``id[setting]`` for a claim with settings."""

    name: str = Field(min_length=1)
    members: list[str] = Field(min_length=1)

    @field_validator("members")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"members listed twice: {dup}")
        return v


class FigureSpec(Strict):
    kind: Literal["bars", "lines", "heatmaps", "groups", "planes", "none"] = "bars"
    metrics: list[str] = Field(default_factory=list)
    x: list[float | str] | None = None
    xlabel: str | None = None
    ylabel: str | None = None


class FastSpec(Strict):
    """A shorter recipe for ``--kd-recipe fast`` (gpu tier): partial overrides of the student recipe, applied to
    every arm in place of the arms' own recipe changes."""

    recipe: dict[str, Any] = Field(default_factory=dict)
    why: str | None = None


class Claim(Strict):
    """One claim, resolved for one tier (and setting)."""

    id: str = Field(pattern=ID_RE)
    version: int = Field(1, ge=1)
    title: str = Field(min_length=1)
    paper: PaperRef
    statement: str = Field(min_length=10)
    setup: Setup
    probe: ProbeSpec
    extra_probes: list[ProbeSpec] = Field(default_factory=list)  # more measurements on the same models
    expect: list[Expect] = Field(min_length=1)
    reference: dict[str, dict[str, RefValue]] = Field(default_factory=dict)  # {metric: {arm: paper's value}}
    significance: Significance = Field(default_factory=Significance)
    family: FamilySpec | None = None
    report: FigureSpec = Field(default_factory=FigureSpec)
    tags: list[str] = Field(default_factory=list)
    notes: dict[str, str] = Field(default_factory=dict)  # design choices with one-line reasons (eps, layer, ...)
    fast: FastSpec | None = None
    tier: Tier = "smoke"
    setting: str | None = None
    needs: list[Literal["cuda"]] | None = None  # gpu tier: ["cuda"] unless a claim says [] (e.g. MNIST runs anywhere)

    @model_validator(mode="after")
    def _expect_names(self) -> "Claim":
        from kdclaims.spec.compare import check_names

        arms = [m.name for m in self.setup.methods]
        teachers = list(self.setup.all_teachers())
        for i, e in enumerate(self.expect):
            try:
                check_names(e, arms, teachers)
            except ValueError as err:
                raise ValueError(f"expect[{i}].compare: {err}") from None
        if all(e.premise for e in self.expect):
            raise ValueError("expect: every expectation is a premise; a claim needs at least one test of its own")
        return self
