"""The report is never silently lost (issue 16, points 3 and 6): hostile strings, failing figures, killed writes,
unwritable folders, invalid report.json given to ``kdclaims report``, an unusable cache given to ``kdclaims run``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import kdclaims.report.collect  # noqa: F401  - import the engine before pytester snapshots sys.modules
import kdclaims.report.figures as figures
import kdclaims.runner  # noqa: F401
from claimkit import TINY_CLAIM, write_claim
from kdclaims.atomic import _temp_beside
from kdclaims.cli import main
from kdclaims.report.collect import build_report, write_report
from kdclaims.report.render import render_all
from reliability_helpers import fork

DATA = Path(__file__).parent / "data" / "report_all_verdicts.json"


def _raw() -> dict:
    return json.loads(DATA.read_text())


def test_tex_like_user_strings_are_drawn_verbatim(tmp_path):
    """``$\\undefinedmacro$`` as the figure's ylabel, the setting and an arm name renders every file.

    Can fail: on the old main matplotlib parsed the strings as mathtext and raised ValueError ("Unknown symbol"),
    which took down report.md and report.html (and, from the plugin, the pytest session's exit status)."""
    raw = _raw()
    for it in raw["items"]:
        it["figure"]["ylabel"] = r"$\undefinedmacro$"
        it["setting"] = r"$\undefinedmacro{x}$"
        for metric in it["arms"]:
            it["arms"][metric] = {(r"$\bad$" if arm == "kl" else arm): v for arm, v in it["arms"][metric].items()}
    (tmp_path / "report.json").write_text(json.dumps(raw))
    written = render_all(tmp_path / "report.json")
    assert [p.name for p in written[:2]] == ["report.md", "report.html"] and len(written) > 2
    assert "undefinedmacro{x}" in (tmp_path / "report.md").read_text()
    assert "undefinedmacro{x}" in (tmp_path / "report.html").read_text()


def test_a_failing_figure_becomes_an_error_note_and_the_tables_stay(tmp_path, monkeypatch):
    """Every drawing function raising still writes report.md, report.html and one PNG per figure (each an error
    note). Can fail: on the old main the exception escaped ``render_all`` and nothing but report.json existed."""

    def broken(fig, item):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr(figures, "_DRAW", {k: broken for k in figures._DRAW})
    (tmp_path / "report.json").write_text(DATA.read_text())
    written = render_all(tmp_path / "report.json")
    pngs = [p for p in written if p.suffix == ".png"]
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    html = (tmp_path / "report.html").read_text()
    assert html.count("<table") >= 2 and "figure" in html


def test_newlines_and_html_in_code_spans_cannot_escape(tmp_path):
    """A node id and a command holding blank lines and raw HTML stay inside their code spans in report.md: no line
    of the file starts with the injected tag. Can fail: on the old main the code span kept the newlines, the
    blank line ended the paragraph, and ``<script>`` became a raw HTML block on its own line."""
    raw = _raw()
    raw["command"] = "pytest claims\n\n<script>alert(1)</script>"
    raw["items"][0]["nodeid"] += "\n\n<img src=x onerror=alert(2)>"
    (tmp_path / "report.json").write_text(json.dumps(raw))
    render_all(tmp_path / "report.json")
    md = (tmp_path / "report.md").read_text()
    assert not [line for line in md.splitlines() if line.lstrip().startswith(("<script", "<img"))]
    html = (tmp_path / "report.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html


def test_a_very_long_node_id_gets_a_short_unique_file_name(tmp_path):
    """A 600-character node id renders (its figure's file name stays under 255 bytes). Can fail: on the old main
    the slug was the whole id and writing ``figures/<slug>.png`` raised ENAMETOOLONG."""
    raw = _raw()
    for n, it in enumerate(raw["items"]):
        it["nodeid"] = f"claims/x.yaml::{'long-name-' * 60}{n}"
    (tmp_path / "report.json").write_text(json.dumps(raw))
    written = render_all(tmp_path / "report.json")
    names = [p.name for p in written if p.suffix == ".png"]
    assert names and max(map(len, names)) < 120 and len(set(names)) == len(names)


def test_temporaries_of_a_killed_report_write_are_removed_by_the_next_write(tmp_path):
    """A process SIGKILLed while its report.json temporary is open leaves ``.report.json.<pid>.*.tmp``; the next
    ``write_report`` into that folder removes it (its writer is gone). Can fail: on the old main temporaries had no
    pid and nothing removed them, so the ``.tmp`` file stayed."""
    out = tmp_path / "report"
    out.mkdir()

    def killed_mid_write(folder: str) -> None:
        with _temp_beside(Path(folder) / "report.json") as tmp:
            tmp.write_text('{"half": ')
            os.kill(os.getpid(), signal.SIGKILL)

    p = fork(killed_mid_write, str(out))
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
    write_report(build_report([], command="pytest"), out, render=False)
    assert sorted(f.name for f in out.iterdir()) == ["report.json"]


# ----------------------------------------------------------------------------------------- kdclaims report
def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("case", ["deep-json", "not-utf8", "not-a-report", "bad-verdict", "empty"])
def test_kdclaims_report_on_an_invalid_file_is_one_message_and_exit_2(tmp_path, capsys, case):
    """``kdclaims report FILE`` on deeply nested JSON, non-UTF-8 bytes, JSON of another shape, an unknown
    verdict, or an empty file: exit 2, one message naming the file, no traceback and nothing written.

    Can fail: on the old main ``ReportError`` (and RecursionError, UnicodeDecodeError) escaped ``main`` as a
    traceback."""
    bad = tmp_path / "in" / "report.json"
    bad.parent.mkdir()
    raw = _raw()
    raw["items"][0]["verdict"] = "probably"
    bad.write_bytes({"deep-json": _deep(200_000).encode(), "not-utf8": b'{"version": "\xff\xfe"}',
                     "not-a-report": b'{"items": 3}', "bad-verdict": json.dumps(raw).encode(), "empty": b""}[case])
    assert main(["report", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_kdclaims_report_merge_validates_before_writing(tmp_path, capsys):
    """Merging a valid report with an invalid one exits 2 and writes nothing into ``--out``. Can fail: on the old
    main the merge read raw JSON, wrote an invalid report.json into ``--out`` and then raised ReportError."""
    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(DATA.read_text())
    raw = _raw()
    raw["items"][0]["verdict"] = "probably"
    bad.write_text(json.dumps(raw))
    out = tmp_path / "out"
    assert main(["report", str(good), str(bad), "--out", str(out)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


# -------------------------------------------------------------------------------------------- kdclaims run
def test_kdclaims_run_with_an_unusable_cache_or_report_folder_exits_2(tmp_path, capsys):
    """``kdclaims run`` with ``--kd-cache`` under a regular file, or ``--kd-report`` under one, exits 2 with one
    message before anything trains. Can fail: on the old main the cache's StoreError escaped as a traceback (exit
    1) and an unwritable report folder was found only after the run."""
    write_claim(tmp_path / "claims", claim_id="run-claim")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    base = ["run", "run-claim", "--tier", "smoke", "--path", str(tmp_path / "claims"), "--quiet"]
    assert main([*base, "--kd-cache", str(blocker / "cache")]) == 2
    assert "cannot use checkpoint cache" in capsys.readouterr().err
    assert main([*base, "--kd-cache", str(tmp_path / "cache"), "--kd-report", str(blocker / "rep")]) == 2
    assert "--kd-report" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "ckpt").exists() or not any((tmp_path / "cache" / "ckpt").iterdir())


# ------------------------------------------------------------------------------------------------- plugin
def test_plugin_refuses_an_unwritable_report_folder_before_running(pytester: pytest.Pytester):
    """``pytest --kd-report`` under a regular file is a usage error (exit 4) before any item runs. Can fail: on
    the old main the run went ahead, exited 0 and printed a report path whose folder did not exist."""
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "tiny.yaml").write_text(TINY_CLAIM.format(id="tiny-claim"))
    (pytester.path / "blocker").write_text("x")
    result = pytester.runpytest("claims", "-p", "no:cacheprovider", "--kd-cache", str(pytester.path / "cache"),
                                "--kd-report", str(pytester.path / "blocker" / "report"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--kd-report" in result.stderr.str()
    assert not (pytester.path / "cache" / "ckpt").exists() or not any((pytester.path / "cache" / "ckpt").iterdir())


def test_plugin_fails_loudly_when_the_final_report_cannot_be_written(pytester: pytest.Pytester, monkeypatch):
    """The report folder turns unwritable during the run (write_report raising ENOSPC): the item passes, but the
    session exits non-zero and says the report was NOT written. Can fail: on the old main the error was logged,
    the exit status was 0 and ``report: .../report.json`` was printed."""
    import errno

    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "tiny.yaml").write_text(TINY_CLAIM.format(id="tiny-claim"))

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kdclaims.report.collect, "write_report", full)
    result = pytester.runpytest("claims", "-m", "smoke", "-p", "no:cacheprovider", "--kd-allow-inconclusive",
                                "--kd-cache", str(pytester.path / "cache"), "--kd-report", str(pytester.path / "rep"))
    out = result.stdout.str()
    result.assert_outcomes(passed=1)
    assert result.ret != 0 and "report NOT written" in out and "No space left" in out
