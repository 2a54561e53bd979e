"""The pytest plugin end to end on a tiny synthetic claim (pytester): collection, errors, skips, report, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdclaims.report.collect  # noqa: F401  - import torch and the engine before pytester snapshots sys.modules:
import kdclaims.report.render  # noqa: F401  - a C extension imported inside an in-process run cannot be re-imported
import kdclaims.report.terminal  # noqa: F401
import kdclaims.runner  # noqa: F401
from claimkit import TINY_CLAIM
from kdclaims.registries import load_all

load_all()

BROKEN = {
    "bad_syntax.yaml": "id: b1\ntitle: [oops\n",
    "bad_compare.yaml": TINY_CLAIM.format(id="b2").replace('"kl > independent"', '"kl >> independent"'),
    "bad_model.yaml": TINY_CLAIM.format(id="b3").replace("arch: tiny_cnn}", "arch: nonet}"),
    "bad_key.yaml": TINY_CLAIM.format(id="b4").replace("seeds: [0]", "seeds: [0]\n  seedz: [1]"),
    "bad_type.yaml": TINY_CLAIM.format(id="b5").replace("images: 80", "images: lots"),
}


def _setup(pytester: pytest.Pytester, broken: bool = False) -> Path:
    d = pytester.path / "claims"
    d.mkdir()
    (d / "tiny.yaml").write_text(TINY_CLAIM.format(id="tiny-claim"))
    if broken:
        for name, text in BROKEN.items():
            (d / name).write_text(text)
    return d


def _args(pytester: pytest.Pytester, *extra: str) -> list[str]:
    return ["claims", "-p", "no:randomly", "--kd-cache", str(pytester.path / "cache"),
            "--kd-report", str(pytester.path / "report"), *extra]


def test_broken_files_are_collection_errors_and_the_good_claim_runs(pytester: pytest.Pytester):
    _setup(pytester, broken=True)
    result = pytester.runpytest(*_args(pytester, "-m", "smoke", "--continue-on-collection-errors"))
    result.assert_outcomes(passed=1, errors=len(BROKEN))
    out = result.stdout.str()
    assert "claims/bad_syntax.yaml:2: YAML syntax error" in out
    assert "claims/bad_compare.yaml:" in out and "expect[0].compare: unknown comparison" in out
    assert "setup.student.arch: unknown model 'nonet'" in out
    assert "setup.seedz: unknown key" in out
    assert "probe.images: " in out


def test_report_fields_and_second_run_trains_nothing(pytester: pytest.Pytester):
    _setup(pytester)
    first = pytester.runpytest(*_args(pytester, "-m", "smoke"))
    first.assert_outcomes(passed=1, deselected=1)
    report = json.loads((pytester.path / "report" / "report.json").read_text())
    (item,) = report["items"]
    for field in ("id", "tier", "verdict", "metric", "measured", "ci_low", "ci_high", "p_value", "p_holm", "paper",
                  "n_images", "n_seeds", "seconds"):
        assert field in item, field
    assert item["tier"] == "smoke" and item["verdict"] in ("supported", "refuted", "inconclusive")
    assert item["ci_low"] <= item["measured"] <= item["ci_high"]
    assert (pytester.path / "report" / "report.md").is_file()
    assert (pytester.path / "report" / "report.html").is_file()
    assert any(m["source"] == "trained" for m in item["extras"]["models"])
    assert "kdclaims verdicts" in first.stdout.str()

    second = pytester.runpytest(*_args(pytester, "-m", "smoke"))
    second.assert_outcomes(passed=1, deselected=1)
    item2 = json.loads((pytester.path / "report" / "report.json").read_text())["items"][0]
    # the probe's inputs are unchanged: its cached measurements are reused, so no model is even loaded
    assert item2["extras"]["probe_cached"] is True
    assert item2["measured"] == item["measured"]


def test_gpu_item_without_cuda_is_skipped_with_reason(pytester: pytest.Pytester):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _setup(pytester)
    result = pytester.runpytest(*_args(pytester, "-m", "gpu", "-rs"))
    result.assert_outcomes(skipped=1, deselected=1)
    assert "needs: CUDA" in result.stdout.str()


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester):
    _setup(pytester)
    result = pytester.runpytest("--markers")
    out = result.stdout.str()
    for marker in ("smoke:", "cpu:", "gpu:", "xdist_group"):
        assert marker in out
    result = pytester.runpytest(*_args(pytester, "--strict-markers", "--collect-only", "-q"))
    assert "tiny-claim[smoke]" in result.stdout.str() and "tiny-claim[gpu]" in result.stdout.str()


@pytest.mark.slow  # seconds of subprocesses or large models: CI runs it in its `-m slow` step
def test_runs_under_xdist(pytester: pytest.Pytester):
    """``-n 2`` alone distributes by teacher group: xdist's loadgroup names a cpu item ``<id>@<group>``; smoke
    items carry no group (their teachers train in a second, so they spread over the workers)."""
    pytest.importorskip("xdist")
    d = _setup(pytester)
    (d / "tiny.yaml").write_text(TINY_CLAIM.format(id="tiny-claim").replace("  smoke: {}", "  smoke: {}\n  cpu: {}"))
    result = pytester.runpytest_subprocess(*_args(pytester, "-m", "smoke or cpu", "-n", "2"))
    outcomes = result.parseoutcomes()  # the cpu item asserts its direction, which the tiny claim may miss
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2 and not outcomes.get("errors"), outcomes
    report = json.loads((pytester.path / "report" / "report.json").read_text())
    assert all(i["verdict"] in ("supported", "refuted", "inconclusive") for i in report["items"])
    nodes = {i["tier"]: i["nodeid"] for i in report["items"]}
    assert sorted(nodes) == ["cpu", "smoke"] and {i["id"] for i in report["items"]} == {"tiny-claim"}
    assert "@teacher-" in nodes["cpu"], "the cpu item was not distributed by its teacher group"
    assert "@" not in nodes["smoke"]


@pytest.mark.parametrize("args,env,ini,want", [
    (["-n", "2"], "", [], "loadgroup"),
    (["-n", "2", "--dist", "load"], "", [], "load"),
    (["-n", "2", "--dist=loadfile"], "", [], "load"),  # xdist already set it; the plugin leaves it
    (["-n", "2", "-d"], "", [], "load"),
    (["-n", "2"], "--dist load", [], "load"),
    (["-n", "2"], "", ["--dist", "load"], "load"),
])
def test_loadgroup_is_the_default_only_without_an_explicit_dist(monkeypatch, args, env, ini, want):
    from types import SimpleNamespace

    from kdclaims.plugin import pytest_cmdline_main

    monkeypatch.setenv("PYTEST_ADDOPTS", env)
    config = SimpleNamespace(option=SimpleNamespace(dist="load"), invocation_params=SimpleNamespace(args=args),
                             getini=lambda name: ini)
    pytest_cmdline_main(config)
    assert config.option.dist == want


def test_junit_xml_carries_measured_values(pytester: pytest.Pytester):
    _setup(pytester)
    xml = pytester.path / "junit.xml"
    pytester.runpytest(*_args(pytester, "-m", "smoke", f"--junitxml={xml}")).assert_outcomes(passed=1, deselected=1)
    text = xml.read_text()
    assert 'name="kl &gt; independent"' in text or 'name="kl > independent"' in text


@pytest.mark.parametrize("worker,count,dev,want", [
    ("gw0", 4, "cuda", "cuda:0"), ("gw5", 4, "cuda", "cuda:1"), ("gw1", 1, "cuda", "cuda"),
    ("gw1", 4, "cuda:3", "cuda:3"), ("gw1", 4, "cpu", "cpu"), ("", 4, "cuda", "cuda"), ("master", 4, "cuda", "cuda"),
])
def test_each_xdist_worker_takes_its_own_gpu(monkeypatch, worker, count, dev, want):
    """Worker gwN gets GPU N mod count (and makes it current); nothing changes without xdist, with one GPU or with
    an explicit device. Checked to fail: returning ``dev`` unchanged fails the first two cases."""
    import torch

    from kdclaims.plugin import worker_device

    current = []
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert worker_device(dev) == want
    assert current == ([int(want.split(":")[1])] if want != dev else [])
