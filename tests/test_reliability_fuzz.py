"""Hypothesis fuzz of the claim schema (hostile YAML scalars and include entries) and of the report schema
(``kdclaims report`` on mutated report.json files): zero tracebacks (issue 16, point 7).

Default example counts are small (the smoke tier); the ``slow`` versions try many more."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from kdclaims.cli import main
from kdclaims.spec.loader import load_claims
from reliability_helpers import ALL_PATHS, FILES, ORIGINAL, location_problems, write_claim_tree

# scalars that PyYAML resolves, or is told to resolve, into values that cannot be built or make no sense
HOSTILE_SCALARS = [
    "2024-02-30", "2023-13-01", "2024-02-29 25:61:00", "!!timestamp yesterday", "!!int abc", "!!int 0x", "!!float abc",
    "!!float 1e", "!!bool maybe", "!!null x", "!!binary '!!!'", "9" * 5000, "-" + "9" * 4400, "0x" + "f" * 5000,
    ".nan", ".inf", "-.inf", "1e999", "!!set {a, b}", "!!omap [a]", "!!pairs [[a, b]]", "~", "[]", "{}",
    "'\\x00'", '"\\0"', '"\\uffff"', '"\\ud800"', "'" + "x" * 20000 + "'", "!!str", "!custom x", "!!map [a]",
    "[[[[[[[[[[]]]]]]]]]]", "&a b", "*undefined", "'$\\undefinedmacro$'", '"line\\n\\n<script>"',
]
HOSTILE_INCLUDES = ["/etc/passwd", "../../../etc/passwd", '"a\\0b.yaml"', "~/x.yaml", "''", '" "', "'\\t'",
                    "_base", ".", "..", "claims/../../x.yaml", "'" + "a/" * 3000 + "x.yaml'", "[[a]]", "{a: b}",
                    "!!int 3", "_base/imagenet.yaml"]
FAST_CLAIMS, SLOW_CLAIMS = 25, 300
FAST_REPORTS, SLOW_REPORTS = 20, 300


@st.composite
def hostile_claim(draw) -> tuple[str, str, str]:
    """(file, new text, what changed): one key's value, or the include list, replaced by hostile YAML."""
    if draw(st.booleans()):
        target, path = draw(st.sampled_from(ALL_PATHS))
        key = str(path[-1])
        lines = ORIGINAL[target].splitlines()
        hits = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"{key}:")]
        if hits:
            i = draw(st.sampled_from(hits))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            value = draw(st.sampled_from(HOSTILE_SCALARS))
            lines[i] = f"{indent}{key}: {value}"
            return target, "\n".join(lines) + "\n", f"{target}:{i + 1}: {key}: {value[:60]}"
    target = draw(st.sampled_from(FILES))
    entries = draw(st.lists(st.sampled_from(HOSTILE_INCLUDES), min_size=1, max_size=3))
    text = "\n".join(line for line in ORIGINAL[target].splitlines() if not line.startswith("include:"))
    return target, f"include: [{', '.join(entries)}]\n{text}\n", f"{target}: include {entries}"


def _claim_fuzz(examples: int, derandomize: bool) -> Counter:
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(case=hostile_claim())
        def check(case: tuple[str, str, str]) -> None:
            target, text, what = case
            note(what)
            root = Path(tempfile.mkdtemp(dir=d))
            claim = write_claim_tree(root, {target: text})
            contents = {root / "claims" / rel: (root / "claims" / rel).read_text() for rel in FILES}
            try:
                _, errors = load_claims([claim])
            except BaseException as e:  # noqa: BLE001 - the property: nothing escapes
                raise AssertionError(f"load_claims raised {type(e).__name__}: {e}") from e
            problems = location_problems(errors, contents)
            assert not problems, "\n".join(problems)
            assert not any("root:" in e.format() for e in errors), "a foreign file's content was quoted"
            tally["inputs"] += 1
            tally["errors" if errors else "loaded"] += 1

        check()
    print(f"\nfuzzed hostile claims: {dict(sorted(tally.items()))}")
    return tally


def test_fuzzed_hostile_claim_values_give_located_errors():
    """Hostile scalars (impossible dates, bad ``!!int``/``!!float``, 5000-digit ints, NUL bytes, unknown tags, a
    20 KB string) at the keys of accuracy-gain.yaml and its includes, and hostile include entries (absolute, ``..``,
    NUL, 6 KB, non-strings): ``load_claims`` never raises, every error is located in one of the files, and no error
    quotes a file outside the claims folder.

    Can fail: against the old main yamlsource.py/loader.py it raised ValueError on the first impossible date
    (``2024-02-30``) and, for ``include: [/etc/passwd]``, located errors in /etc/passwd (not one of the files)."""
    tally = _claim_fuzz(FAST_CLAIMS, derandomize=True)
    assert tally["inputs"] >= FAST_CLAIMS * 3 // 4 and tally["errors"] > 0, tally


@pytest.mark.slow
def test_fuzzed_hostile_claim_values_many():
    """The same property over 300 random (not derandomised) cases."""
    assert _claim_fuzz(SLOW_CLAIMS, derandomize=False)["inputs"] >= 200


# ----------------------------------------------------------------------------------------------- reports
REPORT = json.loads((Path(__file__).parent / "data" / "report_all_verdicts.json").read_text())
HOSTILE_JSON = st.one_of(
    st.sampled_from([None, True, 0, -1, 10 ** 400, 1e308, -1e308, "", "$\\undefinedmacro$", "a\n\n<script>x</script>",
                     "`code`\n\n<img src=x>", "x" * 5000, "../../etc/passwd", "\x00", "\ud7ff", [], {}, [[[[]]]],
                     {"nodeid": "x"}, "supported", "refuted", "bars", "lines", "heatmaps", "groups", "NaN"]),
    st.text(max_size=40), st.floats(allow_nan=False), st.integers(),
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


REPORT_PATHS = [p for p in _paths(REPORT) if p]


@st.composite
def mutated_report(draw) -> tuple[str, str]:
    data = json.loads(json.dumps(REPORT))
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(REPORT_PATHS))
        try:
            parent = data
            for p in path[:-1]:
                parent = parent[p]
            if draw(st.booleans()) or not isinstance(parent, dict):
                parent[path[-1]] = draw(HOSTILE_JSON)
            else:
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the path
        changes.append(path)
    text = json.dumps(data, allow_nan=True)
    if draw(st.integers(0, 9)) == 0:  # now and then, damage the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut]
    return text, f"changed {changes}"


def _report_fuzz(examples: int, derandomize: bool) -> Counter:
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(case=mutated_report())
        def check(case: tuple[str, str]) -> None:
            text, what = case
            note(what)
            folder = Path(tempfile.mkdtemp(dir=d))
            (folder / "report.json").write_text(text, encoding="utf-8", errors="surrogatepass")
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = main(["report", str(folder / "report.json"), "--out", str(folder / "out")])
            except BaseException as e:  # noqa: BLE001 - the property: nothing escapes
                raise AssertionError(f"kdclaims report raised {type(e).__name__}: {e}") from e
            assert rc in (0, 2) and "Traceback" not in err.getvalue(), (rc, err.getvalue())
            if rc == 0:
                assert (folder / "out" / "report.md").is_file() and (folder / "out" / "report.html").is_file()
            else:
                assert str(folder / "report.json") in err.getvalue(), err.getvalue()
                assert not (folder / "out").exists() or not list((folder / "out").iterdir())
            tally["inputs"] += 1
            tally["errors" if rc else "rendered"] += 1

        check()
    print(f"\nfuzzed reports: {dict(sorted(tally.items()))}")
    return tally


def test_fuzzed_reports_never_give_a_traceback():
    """Mutated copies of the all-verdicts report (1-3 values replaced by hostile JSON or removed, now and then
    the text cut short) given to ``kdclaims report``: exit 0 with every file rendered, or exit 2 with one message
    naming the file and nothing written; never an exception.

    Can fail: against the old main cli.py/render.py the first schema-invalid case raised ReportError out of
    ``main``; a ``$\\undefinedmacro$`` label raised ValueError from matplotlib."""
    tally = _report_fuzz(FAST_REPORTS, derandomize=True)
    assert tally["inputs"] >= FAST_REPORTS * 3 // 4 and tally["errors"] > 0 and tally["rendered"] > 0, tally


@pytest.mark.slow
def test_fuzzed_reports_many():
    """The same property over 300 random (not derandomised) cases."""
    assert _report_fuzz(SLOW_REPORTS, derandomize=False)["inputs"] >= 200
