"""The training plan (``kdclaims plan``), the local executor (``kdclaims train``) and pytest's pre-training step on
a tiny synthetic claim: the plan names the keys the items read, teachers first; ``train`` fills them; a pytest
run afterwards trains nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from claimkit import TINY_CLAIM
from kdclaims.bank import RunContext
from kdclaims.cli import main as cli
from kdclaims.executors.slurm import load_options
from kdclaims.executors.worker import Trainer, work
from kdclaims.launch import targets
from kdclaims.plan import build_plan
from kdclaims.spec.loader import load_claim_file
from kdclaims.store import CheckpointStore

TWO_SEEDS = TINY_CLAIM.replace("seeds: [0]", "seeds: [0, 1]")
ROOT = Path(__file__).resolve().parent.parent


def _claims(tmp_path: Path, text: str = TWO_SEEDS) -> Path:
    d = tmp_path / "claims"
    d.mkdir(exist_ok=True)
    (d / "tiny.yaml").write_text(text.format(id="tiny-claim"))
    return d


def _items(tmp_path: Path):
    return [i for i in load_claim_file(tmp_path / "claims" / "tiny.yaml").items if i.tier == "smoke"]


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(store=CheckpointStore(tmp_path / "cache"), tier="smoke")


def test_plan_is_the_banks_keys_teacher_first_with_states_and_estimates(tmp_path):
    """Can fail: a plan that computed its own keys, lost the student->teacher edge, ignored a held lock, or
    estimated a model from nothing (checked by dropping ``deps=[...]`` in ``build_plan``: the edge assertion
    failed; by making ``lock_held`` return False: 'training' was not shown)."""
    from kdclaims.bank import Bank

    _claims(tmp_path)
    ctx = _ctx(tmp_path)
    plan = build_plan(_items(tmp_path), ctx)
    bank = Bank(_items(tmp_path)[0].claim, ctx)
    assert [n.key for n in plan.nodes] == [t.key for t in targets(bank)]  # one key logic: the Bank's
    teacher, *students = plan.nodes
    assert teacher.kind == "teacher" and all(n.kind == "student" for n in students)
    assert {n.label: n.deps for n in students} == {"tiny-claim:independent:0": [], "tiny-claim:independent:1": [],
                                                   "tiny-claim:kl:0": [teacher.key], "tiny-claim:kl:1": [teacher.key]}
    assert {n.state for n in plan.nodes} == {"missing"} and {n.basis for n in plan.nodes} == {"unknown"}

    held, release = threading.Event(), threading.Event()

    def hold():
        with FileLock(str(ctx.store.root / "locks" / f"{teacher.key}.lock")):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        assert build_plan(_items(tmp_path), ctx).nodes[0].state == "training"
    finally:
        release.set()
        t.join()

    torch.set_num_threads(1)
    kl0 = next(n for n in plan.nodes if n.label == "tiny-claim:kl:0")
    assert Trainer(ctx).train(kl0) == "trained"  # trains its teacher first (the Bank does)
    again = {n.label: n for n in build_plan(_items(tmp_path), ctx).nodes}
    assert again["tiny-claim:teacher"].state == again["tiny-claim:kl:0"].state == "cached"
    assert again["tiny-claim:kl:1"].state == "missing"
    assert again["tiny-claim:kl:1"].basis == "siblings"  # kl seed 0's manifest: same recipe but the seed
    assert again["tiny-claim:kl:1"].seconds == pytest.approx(ctx.store.manifest(kl0.key)["train_seconds"])
    assert again["tiny-claim:independent:0"].basis == "similar"  # same arch, data and tier: seconds per epoch


class _Fake:
    """A trainer whose teacher always fails; records what it was asked to train."""

    def __init__(self, ctx):
        self.ctx, self.asked = ctx, []

    def train(self, node):
        self.asked.append(node.label)
        if node.kind == "teacher":
            raise RuntimeError("boom")
        return "trained"


def test_worker_skips_students_of_a_failed_teacher_and_reports_every_model(tmp_path):
    """Can fail: a worker that tried the students of a failed teacher (they would train the teacher again
    inside their own job), or waited for it forever (checked by removing the failed-teacher branch of
    ``work``: the worker kept waiting for the teacher and the test hung until killed)."""
    _claims(tmp_path)
    ctx = _ctx(tmp_path)
    plan = build_plan(_items(tmp_path), ctx, with_cost=False)
    fake, seen = _Fake(ctx), {}
    done = work(plan.nodes, fake, report=lambda n, o, s, m: seen.setdefault(n.label, (o, m)))
    assert fake.asked == ["tiny-claim:teacher", "tiny-claim:independent:0", "tiny-claim:independent:1"]
    assert seen["tiny-claim:teacher"] == ("failed", "RuntimeError: boom")
    assert seen["tiny-claim:kl:0"] == ("failed", "its teacher failed")
    assert set(done) == {n.key for n in plan.nodes}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KDCLAIMS_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def _pytest(tmp_path: Path, *extra: str) -> tuple[str, list[dict]]:
    cmd = [sys.executable, "-m", "pytest", "claims", "-m", "smoke", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--kd-cache", str(tmp_path / "cache"), "--kd-report", str(tmp_path / "report"), *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    return proc.stdout, [m for it in report["items"] for m in it["extras"]["models"]]


@pytest.mark.slow  # two spawned worker processes: too slow for the smoke tier
def test_pytest_pretrains_the_plan_before_the_items(tmp_path):
    """``--kd-jobs 2``: the plugin trains the selection's models in two processes before any item runs; the
    item then loads them (reported as trained in this run). Can fail: without the plugin's
    ``pytest_runtestloop`` step the summary line is missing and the items train for themselves (the same
    mutation, disabling the step, made test_train_then_pytest_trains_nothing fail on that line)."""
    _claims(tmp_path)
    out, models = _pytest(tmp_path, "--kd-jobs", "2")
    assert "kdclaims plan: 5 models needed, 5 trained before the items" in out
    assert {(m["source"], m.get("when")) for m in models} == {("trained", "before the items")}


def test_train_then_pytest_trains_nothing(tmp_path, capsys):
    """``kdclaims train`` fills exactly the plan: afterwards ``kdclaims plan`` shows every model cached and a
    pytest run of the claim trains none (its items load every model from the store). Can fail: an executor
    that leaves part of the plan untrained (checked by making it skip the plan's last model: "4 trained"), or
    a pytest run without the pre-training step (checked by disabling it: no "kdclaims plan:" line)."""
    claims = _claims(tmp_path)
    common = ["tiny-claim", "--tier", "smoke", "--path", str(claims), "--kd-cache", str(tmp_path / "cache")]
    assert cli(["plan", *common, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["counts"] == {"missing": 5}
    assert cli(["train", *common, "--quiet"]) == 0  # one job: in this process
    assert "5 trained, 0 found in the store, 0 failed" in capsys.readouterr().err
    assert cli(["plan", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"cached": 5}

    out, models = _pytest(tmp_path)
    assert "kdclaims plan: 5 models needed, 0 trained before the items" in out
    assert len(models) == 5 and {m["source"] for m in models} == {"cache"}


def test_slurm_options_file_errors_are_located(tmp_path):
    """Can fail: an unknown option or a wrong type passed on to sbatch (checked by removing the unknown-key
    check in ``load_options``: a KeyError instead of the located message)."""
    bad = tmp_path / "slurm.yaml"
    bad.write_text("partition: gpu\ngpus_per_tasks: 1\n")
    with pytest.raises(ValueError, match=r"slurm.yaml:2: gpus_per_tasks: unknown option"):
        load_options(bad)
    bad.write_text("partition: gpu\ntime_min: soon\n")
    with pytest.raises(ValueError, match=r"slurm.yaml:2: time_min: expected int, got str"):
        load_options(bad)
    bad.write_text("time_min: 1\n")
    assert cli(["train", "tiny-claim", "--tier", "smoke", "--path", str(_claims(tmp_path)), "--kd-cache",
                str(tmp_path / "cache"), "--executor", "slurm", "--slurm-config", str(bad)]) == 2


def test_the_shipped_smoke_models_count_as_cached(tmp_path, monkeypatch):
    """The smoke items load their models from the shipped fixture store (a fallback of every store the plugin
    and the CLI open), so the plan of the smoke tier has nothing to train in an empty cache and pytest's
    pre-training step stays a key computation. Can fail: a plan that looked only at the user's cache (checked
    by using ``store.is_complete`` in ``state_of``: 86 missing)."""
    from kdclaims import fixture_store
    from kdclaims.plan import select_items, store_of
    from kdclaims.registries import load_all

    if not fixture_store.fallbacks():
        pytest.skip("this checkout ships no fixtures/store")
    load_all()
    monkeypatch.delenv("KDCLAIMS_FIXTURE_STORE", raising=False)
    store = store_of(str(tmp_path / "cache"))
    plan = build_plan(select_items([], "smoke", str(ROOT / "claims")), RunContext(store=store, tier="smoke"),
                      with_cost=False)
    assert plan.nodes and plan.counts() == {"cached": len(plan.nodes)}
