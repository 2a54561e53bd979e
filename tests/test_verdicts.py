"""How expectations become an item's verdict: premises first, the declared family's level, intersection-union.

Synthetic measurements only (the statistics themselves are tested in test_stats.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdclaims.evaluate import evaluate, family_of, item_name
from kdclaims.probes.base import Measurements
from kdclaims.spec.loader import find_claim_files, load_claim_file, load_claims
from kdclaims.spec.yamlsource import SpecErrors
from tests.claimkit import TINY_CLAIM

ROOT = Path(__file__).resolve().parents[1]
PREMISE = '  - {metric: accuracy, compare: "teacher > independent", premise: true, label: "teacher beats Ind"}\n'


def _claim(tmp_path: Path, extra_expect: str = "", extra: str = "", seeds: str = "[0, 1, 2, 3, 4]"):
    text = TINY_CLAIM.format(id="verdicts").replace("seeds: [0]", f"seeds: {seeds}")
    text = text.replace('  - {metric: accuracy, compare: "kl > independent"}\n',
                        '  - {metric: accuracy, compare: "kl > independent"}\n' + extra_expect) + extra
    path = tmp_path / "verdicts.yaml"
    path.write_text(text)
    return load_claim_file(path).items[0].claim


def _measured(kl_gain: float, teacher_gain: float, seeds: int = 5, n: int = 400, seed: int = 0) -> Measurements:
    """0/1 accuracies: independent at 0.7 per seed (± seed offsets), kl and the teacher shifted by the gains."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 0.01, size=(seeds, 1))
    m = Measurements()
    m.add("accuracy", "independent", (rng.random((seeds, n)) < 0.7 + offsets).astype(float))
    m.add("accuracy", "kl", (rng.random((seeds, n)) < 0.7 + kl_gain + offsets).astype(float))
    m.add("accuracy", "teacher", (rng.random((1, n)) < 0.7 + teacher_gain).astype(float))
    return m


@pytest.mark.parametrize("kl_gain", [-0.3, 0.25])
def test_a_failed_premise_makes_the_item_inconclusive_never_refuted_or_supported(tmp_path, kl_gain):
    """A teacher worse than the independent student fails the premise: the claim's own test (refuted at
    kl_gain -0.3, supported at +0.25) does not decide. Checked: without the premise rule in ``evaluate`` the
    verdicts are refuted and supported."""
    claim = _claim(tmp_path, PREMISE)
    out = evaluate(claim, _measured(kl_gain, teacher_gain=-0.3))
    assert out.verdict == "inconclusive"
    assert out.premises_failed == ["teacher beats Ind"]
    assert out.verdict_text == "inconclusive (premise failed: teacher beats Ind)"
    own = [e for e in out.expectations if not e.premise]
    assert own[0].verdict == ("refuted" if kl_gain < 0 else "supported")  # the test itself still ran and is shown
    assert out.headline is own[0] and out.family["p"] == 1.0


def test_a_premise_that_holds_leaves_the_verdict_to_the_claim(tmp_path):
    claim = _claim(tmp_path, PREMISE)
    out = evaluate(claim, _measured(-0.3, teacher_gain=0.2))
    premise = next(e for e in out.expectations if e.premise)
    assert premise.verdict == "supported" and premise.p_holm is None
    assert out.verdict == "refuted" and out.premises_failed == [] and out.verdict_text == "refuted"


def test_a_model_that_did_not_converge_is_a_failed_premise(tmp_path):
    """``converged: False`` in the bank's events (set by the trainer's convergence rule) fails a premise;
    None (no rule declared) and True do not. Checked: without ``convergence_failures`` the verdict is supported."""
    claim = _claim(tmp_path)
    m = _measured(0.25, teacher_gain=0.2)
    events = [{"model": "teacher", "seed": None, "converged": True},
              {"model": "independent", "seed": 0, "converged": None},
              {"model": "kl", "seed": 3, "converged": False}]
    out = evaluate(claim, m, events=events)
    assert out.verdict == "inconclusive"
    assert out.premises_failed == ["model kl seed 3 did not converge"]
    assert evaluate(claim, m, events=events[:2]).verdict == "supported"


def test_a_family_member_is_judged_at_alpha_over_m(tmp_path):
    """Inside a declared family of m items the claim's tests run at α/m (premises stay at α), ``p_holm`` is
    min(1, m·p), and an effect that clears α alone but not α/m is inconclusive. Checked: with the family level
    removed (alpha = sig.alpha for every test) the member is supported."""
    fam = "family: {name: test-family, members: [verdicts, a, b, c, d, e, f, g, h, i]}\n"
    member = _claim(tmp_path, PREMISE, extra=fam)
    m = _measured(0.035, teacher_gain=0.2, seed=4)
    alone = evaluate(_claim(tmp_path, PREMISE), m)
    inside = evaluate(member, m)
    own = next(e for e in inside.expectations if not e.premise)
    assert family_of(member)["name"] == "test-family" and family_of(member)["member"]
    assert inside.family["size"] == 10 and inside.family["alpha"] == pytest.approx(0.005)
    assert own.alpha == pytest.approx(0.005) and next(e for e in inside.expectations if e.premise).alpha == 0.05
    assert 0.005 < own.p_value < 0.05, "the data must sit between the two levels for this test to mean anything"
    assert alone.verdict == "supported" and inside.verdict == "inconclusive"
    assert own.p_holm == pytest.approx(min(1.0, 10 * own.p_value))
    assert inside.family["p_adjusted"] == pytest.approx(own.p_holm)


def test_the_item_p_is_the_largest_of_its_tests(tmp_path):
    """Intersection-union: one p per item, the largest of its own tests' p (premises excluded)."""
    claim = _claim(tmp_path, PREMISE + '  - {metric: accuracy, compare: "kl > teacher"}\n')
    out = evaluate(claim, _measured(0.2, teacher_gain=0.1))
    own = [e.p_value for e in out.expectations if not e.premise]
    assert len(own) == 2 and out.family["p"] == max(own)


def test_premises_only_is_a_located_error(tmp_path):
    text = TINY_CLAIM.format(id="premises-only").replace(
        '  - {metric: accuracy, compare: "kl > independent"}\n',
        '  - {metric: accuracy, compare: "kl > independent", premise: true}\n')
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SpecErrors) as err:
        load_claim_file(path)
    assert "p.yaml:" in str(err.value) and "premise" in str(err.value)


def test_declared_families_name_real_items_and_cover_the_papers_claims():
    """Every declared member is an item of its tier, and every cpu/gpu item of the paper (all but examples/) is
    a member: a typo would silently take an item out of its family."""
    files, errors = load_claims(find_claim_files([ROOT / "claims"]))
    assert not errors
    items = {(it.tier, item_name(it.claim)): it for cf in files for it in cf.items if it.claim is not None}
    for tier in ("cpu", "gpu"):
        fams = {it.claim.family.name: it.claim.family for (t, _), it in items.items() if t == tier and it.claim.family}
        assert len(fams) == 1, f"{tier}: one declared family, got {sorted(fams)}"
        declared = set(next(iter(fams.values())).members)
        names = {name for (t, name), it in items.items() if t == tier and "examples" not in it.file.parts}
        assert declared == names, f"{tier}: declared minus items {declared - names}, items missing {names - declared}"
    assert all(it.claim.family is None for (t, _), it in items.items() if t == "smoke")


def test_the_report_carries_both_answers_power_premises_and_family(tmp_path):
    """report.json validates with both intervals, the deciding one, the MDE, the premises apart and the family;
    markdown and the terminal table show them. Checked: with the report schema's new fields removed the report
    does not validate, and without ``split_expectations`` the markdown has no premises section."""
    from kdclaims.report.collect import build_report
    from kdclaims.report.markdown import render_markdown
    from kdclaims.report.render import parse_report
    from kdclaims.report.terminal import render_terminal
    from kdclaims.runner import ItemResult, report_item

    fam = "family: {name: test-family, members: [verdicts, other]}\n"
    claim = _claim(tmp_path, PREMISE, extra=fam)
    m = _measured(0.2, teacher_gain=-0.3)
    out = evaluate(claim, m)
    entry = report_item(claim, nodeid="claims/x.yaml::verdicts[smoke]", outcome="failed", verdict=out.verdict,
                        result=ItemResult(claim, out, m, 1.0, []))
    report = parse_report(build_report([entry], command="pytest"))
    item = report.items[0]
    assert item.verdict == "inconclusive" and item.premises_failed == ["teacher beats Ind"]
    assert item.verdict_text == "inconclusive (premise failed: teacher beats Ind)"
    assert item.family.name == "test-family" and item.family.size == 2 and item.family.alpha == pytest.approx(0.025)
    assert item.family.p_holm_run == pytest.approx(1.0)  # premise failed: p = 1; the member not run counts as 1
    own = next(e for e in item.expectations if not e.premise)
    assert own.decided_by == "seeds" and own.seed_level.df == 4 and own.mde > 0
    assert (own.ci_low, own.ci_high) == (own.seed_level.ci_low, own.seed_level.ci_high)
    assert own.image_level.method.startswith("image bootstrap") and own.image_level.ci_low is not None
    md = render_markdown(report)
    assert "*premises (judged first" in md and "*the claim's tests*" in md
    assert "these checkpoints [CI]" in md and "test-family (2 items)" in md
    assert "premise failed: teacher beats Ind" in md
    assert "premise failed: teacher beats Ind" in render_terminal(report, width=200)


def test_holm_over_the_run_counts_declared_members_not_run_as_one():
    from kdclaims.report.collect import family_holm

    items = [{"tier": "cpu", "family": {"name": "f", "size": 4, "member": True, "p": p}} for p in (0.01, 0.02)]
    items.append({"tier": "cpu", "family": {"name": "f", "size": 1, "member": False, "p": 0.001}})
    family_holm(items)
    assert [i["family"].get("p_holm_run") for i in items] == [pytest.approx(0.04), pytest.approx(0.06), None]
