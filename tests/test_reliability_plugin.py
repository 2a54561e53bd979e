"""The pytest plugin under failure: a crashing claim item, a run killed mid-way, two xdist workers sharing a
teacher. The report must survive and stay valid JSON; the shared teacher must be trained once."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import kdclaims.report.collect  # noqa: F401  - import the engine before pytester snapshots sys.modules
import kdclaims.report.render  # noqa: F401
import kdclaims.report.terminal  # noqa: F401
import kdclaims.runner  # noqa: F401
from claimkit import TINY_CLAIM
from kdclaims.registries import load_all
from kdclaims.report.collect import build_report, write_report
from reliability_helpers import fork, sigkill, wait_for

load_all()

# A conftest for the inner pytest runs: two test probes (one raises, one hangs) and a hook that, after the
# plugin has handled each report, checks that report.json parses and logs the node ids it lists.
CONFTEST = '''
import json, os, time
from pathlib import Path
import pytest
from kdclaims.registries import PROBES, load_all

load_all()


def boom(bank, params):
    raise RuntimeError("probe exploded on purpose")


def hang(bank, params):
    Path(os.environ["KD_TEST_DIR"], "hanging").write_text("1")
    time.sleep(600)


for _name, _fn in (("test_boom", boom), ("test_hang", hang)):
    if _name not in PROBES:
        PROBES.register(_name)(_fn)

_REPORT = {}


def pytest_configure(config):
    _REPORT["path"] = Path(config.getoption("kd_report")) / "report.json"
    _REPORT["worker"] = hasattr(config, "workerinput")  # not the env var: an outer xdist run sets it too


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    path = _REPORT["path"]
    if report.when != "call" or not path.exists() or _REPORT["worker"]:
        return
    try:
        ids = [i["nodeid"] for i in json.loads(path.read_text())["items"]]
    except ValueError as e:
        ids = "INVALID JSON: %s" % e
    with open(Path(os.environ["KD_TEST_DIR"], "report-log.jsonl"), "a") as f:
        f.write(json.dumps({"after": report.nodeid, "report_lists": ids}) + "\\n")


def pytest_runtest_setup(item):
    with open(Path(os.environ["KD_TEST_DIR"], "workers.jsonl"), "a") as f:
        f.write(json.dumps({"item": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                            "t": time.time()}) + "\\n")
'''


def claim(claim_id: str, probe: str = "accuracy", images: int = 80) -> str:
    text = TINY_CLAIM.format(id=claim_id)
    return text.replace("probe: {name: accuracy, images: 80}", f"probe: {{name: {probe}, images: {images}}}")


def setup_run(pytester: pytest.Pytester, claims: dict[str, str], monkeypatch) -> Path:
    pytester.makeconftest(CONFTEST)
    d = pytester.path / "claims"
    d.mkdir()
    for name, text in claims.items():
        (d / name).write_text(text)
    monkeypatch.setenv("KD_TEST_DIR", str(pytester.path))
    return pytester.path / "report"


def args(pytester: pytest.Pytester, *extra: str) -> list[str]:
    return ["claims", "-m", "smoke", "-p", "no:randomly", "-p", "no:cacheprovider",
            "--kd-cache", str(pytester.path / "cache"), "--kd-report", str(pytester.path / "report"), *extra]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------------- 7. report survives
def test_a_crashing_item_is_reported_and_the_report_stays_valid(pytester: pytest.Pytester, monkeypatch):
    """One item's probe raises RuntimeError, the other passes: pytest shows one failure and one pass; report.json
    lists both (the crash as outcome 'failed', verdict 'error', with the exception in its message) and parsed
    as JSON after each item; report.md was rendered and names both claims.

    Can fail: with ``ClaimTestItem._record`` monkeypatched to drop entries whose verdict is 'error' (as if the
    crash were not recorded), report.json lacked crash-claim and this failed."""
    report = setup_run(pytester, {"a-ok.yaml": claim("ok-claim"), "b-crash.yaml": claim("crash-claim", "test_boom")},
                       monkeypatch)
    result = pytester.runpytest(*args(pytester))
    result.assert_outcomes(passed=1, failed=1)
    assert "probe exploded on purpose" in result.stdout.str()
    items = {i["id"]: i for i in json.loads((report / "report.json").read_text())["items"]}
    assert set(items) == {"ok-claim", "crash-claim"}
    assert items["ok-claim"]["outcome"] == "passed"
    assert items["crash-claim"]["outcome"] == "failed" and items["crash-claim"]["verdict"] == "error"
    assert "RuntimeError: probe exploded on purpose" in items["crash-claim"]["message"]
    md = (report / "report.md").read_text()
    assert "ok-claim" in md and "crash-claim" in md
    log = jsonl(pytester.path / "report-log.jsonl")
    assert [len(e["report_lists"]) for e in log] == [1, 2], log  # valid JSON after each of the two items


def _run_pytest(argv: list[str], cwd: str) -> None:
    os.chdir(cwd)
    os._exit(pytest.main(argv))


def test_report_of_a_run_killed_mid_way_is_valid_json(pytester: pytest.Pytester, monkeypatch):
    """A run whose second item hangs is SIGKILLed (a forked child running pytest.main): report.json is the
    valid JSON written after the first item, and no temporary file is left beside it.

    Can fail: with the plugin's per-item write disabled in the child (``_write_report`` patched to write only
    when ``final``), report.json did not exist at the kill and this failed. Atomicity of each write is checked
    by ``test_interrupted_report_write_keeps_the_previous_report``."""
    report = setup_run(pytester, {"a-ok.yaml": claim("ok-claim"), "b-hang.yaml": claim("hang-claim", "test_hang")},
                       monkeypatch)
    child = fork(_run_pytest, args(pytester, "-q"), str(pytester.path))
    wait_for(lambda: (pytester.path / "hanging").exists() or not child.is_alive(), 300, "the hanging item")
    assert child.is_alive()
    sigkill(child)
    data = json.loads((report / "report.json").read_text())
    assert [i["id"] for i in data["items"]] == ["ok-claim"]
    assert sorted(p.name for p in report.iterdir()) == ["report.json"]  # no .tmp left, md/html only at the end


def test_interrupted_report_write_keeps_the_previous_report(tmp_path, monkeypatch):
    """A write of report.json that fails half-way (disk full after some bytes) leaves the previous report intact
    and no temporary file. Can fail: with ``atomic_write_text`` in kdclaims.report.collect replaced by a plain
    in-place write (same failing ``open``), report.json was left truncated (JSONDecodeError) and this failed."""
    import kdclaims.atomic

    first = build_report([], command="pytest first")
    write_report(first, tmp_path, render=False)
    second = build_report([], command="pytest second " + "x" * 100_000)
    real_open = open

    class HalfFull:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(kdclaims.atomic, "open", lambda *a, **k: HalfFull(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError):
        write_report(second, tmp_path, render=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "report.json").read_text())["command"] == "pytest first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# ----------------------------------------------------------------------------------------- 3. xdist
@pytest.mark.slow
def test_two_xdist_workers_share_one_teacher_training(pytester: pytest.Pytester, monkeypatch):
    """Two claim files with the same teacher (different probe sizes, so no shared probe cache) on two xdist
    workers (``--dist loadfile``): both items ran, on different workers, and across the two report entries the
    teacher was trained exactly once (the other item found it in the store).

    Slow (two fresh worker interpreters import torch and the registries); the fast version of this case is
    test_reliability_store.py::test_two_processes_needing_the_same_teacher_train_it_once.
    Can fail: with ``CheckpointStore._lock`` temporarily returning ``contextlib.nullcontext()`` both workers
    trained the teacher (two 'trained' events) and this failed."""
    pytest.importorskip("xdist")
    report = setup_run(pytester, {"a.yaml": claim("share-a", images=80), "b.yaml": claim("share-b", images=64)},
                       monkeypatch)
    result = pytester.runpytest(*args(pytester, "-n", "2", "--dist", "loadfile"))
    result.assert_outcomes(passed=2)
    workers = {e["item"]: e["worker"] for e in jsonl(pytester.path / "workers.jsonl")}
    assert len(set(workers.values())) == 2, workers
    items = json.loads((report / "report.json").read_text())["items"]
    teacher = [m for i in items for m in i["extras"]["models"] if m["model"] == "teacher"]
    assert sorted(m["source"] for m in teacher) == ["cache", "trained"], teacher
    assert len({m["key"] for m in teacher}) == 1
    assert len(list((pytester.path / "cache" / "ckpt").glob(f"*/{teacher[0]['key']}"))) == 1
