"""``kdclaims tune``: choose each distilled arm's weights the paper's way, on validation images, before any probe.

For every distilled arm of one claim item whose method has a grid, each grid point (a partial set of the arm's
parameters) trains one student per seed on the training images minus a held-out validation share; the point with
the highest mean validation accuracy over seeds wins (ties: the first in grid order). Only ``Bank`` training and
``evaluate`` on the validation images run: no probe, no test image. The choice goes to a YAML file that the
claims include (``tiers.<tier>.setup.methods``), with its provenance in ``tiers.<tier>.notes``.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdclaims.spec.schema import Claim, MethodSpec

# gamma weights CE, alpha the KL term, beta the feature term (the paper's names, Appendix A)
DEFAULT_GRID: dict[str, list[dict[str, Any]]] = {
    "kl": [{"gamma": 0.1, "alpha": 0.9, "tau": 8.0}, {"gamma": 0.5, "alpha": 0.5, "tau": 4.0},
           {"gamma": 0.5, "alpha": 0.5, "tau": 8.0}, {"gamma": 0.9, "alpha": 0.1, "tau": 4.0}],
    "hint": [{"beta": 0.5}, {"beta": 2.0}, {"beta": 5.0}],
    "crd": [{"beta": 0.1}, {"beta": 0.8}],
}


@dataclass
class ArmResult:
    """One arm's grid: ``scores[i]`` the validation accuracy per seed of grid point ``i``."""

    arm: str
    method: str
    base: dict[str, Any]
    grid: list[dict[str, Any]]
    scores: list[list[float]] = field(default_factory=list)

    def mean(self, i: int) -> float:
        return sum(self.scores[i]) / len(self.scores[i])

    @property
    def best(self) -> int:
        means = [self.mean(i) for i in range(len(self.grid))]
        return means.index(max(means))

    def chosen(self) -> dict[str, Any]:
        return {**self.base, **self.grid[self.best]}


def load_grid(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """``DEFAULT_GRID``, or a YAML mapping ``method: [ {param: value, ...}, ... ]``."""
    if path is None:
        return DEFAULT_GRID
    data = yaml.safe_load(Path(path).read_text())
    ok = isinstance(data, dict) and all(
        isinstance(v, list) and v and all(isinstance(p, dict) for p in v) for v in data.values())
    if not ok:
        raise ValueError(f"{path}: a grid maps each method to a non-empty list of parameter mappings")
    return data


def _tuning_claim(claim: Claim, validation: float) -> Claim:
    """The item with a validation share in the students' recipe (the teacher keeps its own recipe)."""
    setup = claim.setup
    recipe = setup.recipe if setup.recipe.validation > 0 else setup.recipe.model_copy(update={"validation": validation})
    teacher = setup.teacher if setup.teacher.recipe or setup.teacher.weights else \
        setup.teacher.model_copy(update={"recipe": setup.recipe})
    return claim.model_copy(update={"setup": setup.model_copy(update={"recipe": recipe, "teacher": teacher})})


def tune(claim: Claim, ctx, grid: dict[str, list[dict[str, Any]]], *, validation: float = 0.1,
         seeds: Sequence[int] | None = None) -> tuple[list[ArmResult], dict[str, list[float]]]:
    """Train and score every grid point of every distilled arm; returns the arms' results and the validation
    accuracies of the independent arm (per seed), for reference."""
    from kdclaims.bank import Bank
    from kdclaims.train import evaluate

    claim = _tuning_claim(claim, validation)
    seeds = list(seeds or claim.setup.seeds)
    arms = [m for m in claim.setup.methods if m.method in grid]
    trials = [m.model_copy(update={"name": f"{m.name}__{i}", "params": {**m.params, **p}})
              for m in arms for i, p in enumerate(grid[m.method])]
    baseline = [m for m in claim.setup.methods if m.method == "independent"]
    setup = claim.setup.model_copy(update={"methods": baseline + trials})
    bank = Bank(claim.model_copy(update={"setup": setup}), ctx)
    _, val = bank.training_parts(claim.setup.data, claim.setup.recipe)

    def score(name: str) -> list[float]:
        return [evaluate(bank.model(name, s), val, device=ctx.device) for s in seeds]

    results = []
    for m in arms:
        r = ArmResult(m.name, m.method, dict(m.params), list(grid[m.method]))
        r.scores = [score(f"{m.name}__{i}") for i in range(len(r.grid))]
        results.append(r)
    reference = {m.name: score(m.name) for m in baseline}
    return results, reference


def git_commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=here)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    return (commit + ("+dirty" if dirty.stdout.strip() else "")) if head.returncode == 0 and commit else "unknown"


def _fmt(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def tuned_document(claim: Claim, results: list[ArmResult], reference: dict[str, list[float]], *, command: str,
                   validation: float, seeds: Sequence[int]) -> dict[str, Any]:
    """``tiers.<tier>.setup.methods`` with the chosen parameters, and one provenance note per tuned arm."""
    from kdclaims import __version__

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    chosen = {r.arm: r.chosen() for r in results}
    methods = []
    for m in claim.setup.methods:
        spec = _method_entry(m, chosen.get(m.name))
        methods.append(spec)
    ref = "; ".join(f"{a} {sum(v) / len(v):.4f}" for a, v in reference.items())
    notes = {}
    for r in results:
        grid = ", ".join(f"[{_fmt(p)}] {r.mean(i):.4f}" for i, p in enumerate(r.grid))
        notes[f"tuned-{r.arm}"] = (
            f"chose {_fmt(r.grid[r.best])} by mean validation accuracy over seeds {list(seeds)} "
            f"({validation:g} of the training images held out; no probe, no test image). Grid: {grid}. "
            f"Reference: {ref}. {when}, kdclaims {__version__}, commit {git_commit()}, `{command}`")
    return {"tiers": {claim.tier: {"setup": {"methods": methods}, "notes": notes}}}


def _method_entry(m: MethodSpec, params: dict[str, Any] | None) -> Any:
    if params is None and not m.params and m.name == m.method and m.teacher == "teacher" and not m.recipe:
        return m.name
    entry: dict[str, Any] = {"name": m.name}
    if m.method != m.name:
        entry["method"] = m.method
    entry["params"] = params if params is not None else dict(m.params)
    if m.teacher != "teacher":
        entry["teacher"] = m.teacher
    if m.recipe:
        entry["recipe"] = dict(m.recipe)
    return entry


HEADER = """\
# Written by `kdclaims tune`; rerun it rather than editing by hand. {used_by}
# Distillation weights chosen on a validation share of the *training* images, before any probe runs: no probe
# output and no test image can influence them (docs/adding-a-claim.md). Provenance: tiers.<tier>.notes.
"""


def write_tuned(doc: dict[str, Any], path: Path, used_by: str = "Included by _base/tiers.yaml.") -> None:
    from kdclaims.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, HEADER.format(used_by=used_by) + yaml.safe_dump(doc, sort_keys=False, width=120))


__all__ = ("DEFAULT_GRID", "ArmResult", "load_grid", "tune", "tuned_document", "write_tuned")
