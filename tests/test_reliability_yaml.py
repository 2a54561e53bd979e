"""Bad claim YAML: fuzzed mutations of the shipped claim never crash the loader and always give located errors;
broken files are collection errors under pytest and located lines in ``kdclaims validate``."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings

import kdclaims.runner  # noqa: F401  - import the engine before pytester snapshots sys.modules
from kdclaims.cli import main as kdclaims_main
from kdclaims.registries import load_all
from kdclaims.spec.loader import load_claims
from reliability_helpers import (CLAIM_REL, FILES, MARKER_NAME, ORIGINAL, Mutation, location_problems, mutations,
                                 write_claim_tree)

load_all()
FAST_EXAMPLES, SLOW_EXAMPLES = 360, 4000


def check_mutation(mutation: Mutation, root: Path, tally: Counter) -> None:
    """Write the mutated tree, load it, check the property; raise AssertionError on a violation."""
    note(f"{mutation.kind} ({mutation.expect}) in {mutation.target}: {mutation.detail}")
    claim = write_claim_tree(root, {mutation.target: mutation.content})
    contents = {root / "claims" / rel: (mutation.content if rel == mutation.target else ORIGINAL[rel]) for rel in FILES}
    try:
        files, errors = load_claims([claim])
    except BaseException as e:  # noqa: BLE001 - the property: nothing escapes
        raise AssertionError(f"load_claims raised {type(e).__name__}: {e}") from e
    for e in errors:
        note(e.format())
    assert not (root / MARKER_NAME).exists() and not Path(MARKER_NAME).exists(), "a Python tag ran code"
    problems = location_problems(errors, contents)
    assert not problems, "\n".join(problems)
    if mutation.expect == "valid":
        assert not errors and len(files) == 1 and len(files[0].items) == 5, [e.format() for e in errors]
    elif mutation.expect == "invalid":
        assert errors and not files, "an invalid mutation loaded without errors"
    tally["specs"] += 1
    tally[f"{mutation.expect}:{'errors' if errors else 'loaded'}"] += 1


def run_fuzz(examples: int, derandomize: bool) -> Counter:
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory() as d:

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(mutation=mutations())
        def check(mutation: Mutation) -> None:
            check_mutation(mutation, Path(d), tally)

        check()
    print(f"\nfuzzed claim specs: {dict(sorted(tally.items()))}")
    return tally


def test_fuzzed_claims_give_located_errors_never_tracebacks():
    """~360 mutations of accuracy-gain.yaml and its includes (dropped/renamed/retyped fields, syntax breaks, tabs,
    indentation, unknown registry names, absurd numbers, Python tags, bad bytes). Never raises; every error names
    one of the files and a line inside it; valid mutations load; known-invalid ones give errors.

    Can fail: run against the original yamlsource.py (restored temporarily) it failed on a 'control_char'
    mutation (a NUL byte gave an error with line None); with ``_mark_line`` temporarily returning the unclamped
    problem line it failed on a 'truncate' mutation (line 9 of an 8-line file). The slow version found that a
    setting given as ``true`` crashed the loader with TypeError; 'bad_override' now covers that here."""
    tally = run_fuzz(FAST_EXAMPLES, derandomize=True)
    assert tally["specs"] >= 300, tally
    assert tally["valid:loaded"] > 0 and tally["invalid:errors"] > 0, tally


@pytest.mark.slow
def test_fuzzed_claims_many_random():
    """The same property over 4000 random (not derandomised) mutations."""
    tally = run_fuzz(SLOW_EXAMPLES, derandomize=False)
    assert tally["specs"] >= 3000, tally


# ------------------------------------------------------------------------- pathological YAML, by hand
@pytest.mark.parametrize(
    "text, needle",
    [
        ("id: x\na: &a [*a]\n", "recursive alias"),
        # our depth check, or PyYAML >= 6.0.4's own limit when it stops the parser first
        ("id: x\na: " + "[" * 5000 + "]" * 5000 + "\n", ("nested deeper", "maximum nesting depth")),
        ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh")), "values after expanding"),
        ("id: x\ntitle: [a, b\n", "YAML syntax error"),
        ("id: x\ntitle: 'abc\n", "YAML syntax error"),
        ("id: x\ntitle: a\x07b\n", "control characters"),
        ("id: x\n\ttitle: a\n", "tab"),
        ("id: !!python/object/apply:os.system ['touch PWNED']\n", "not allowed"),
        ("a: !!python/object/new:os.system ['touch PWNED']\n", "not allowed"),
        ("? [a, b]\n: c\n", "keys must be plain scalars"),
        ("a: 1\n<<: {b: 2}\n", "merge keys"),
    ],
    ids=["recursive-alias", "deep-nesting", "billion-laughs", "unclosed-at-eof", "open-quote-at-eof", "control-char",
         "tab", "python-apply", "python-new", "complex-key", "merge-key"],
)
def test_pathological_yaml_is_a_located_error(tmp_path, monkeypatch, text, needle):
    """Each case is one error at a line inside the file, quickly, and never runs code.

    Can fail: with the original yamlsource.py (restored temporarily) recursive-alias and deep-nesting raised
    RecursionError, billion-laughs did not finish in 120 s, and the EOF cases reported line 3 of a 2-line file."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "claims" / "x.yaml"
    path.parent.mkdir()
    path.write_text(text)
    files, errors = load_claims([path])
    assert not files and len(errors) == 1, [e.format() for e in errors]
    needles = needle if isinstance(needle, tuple) else (needle,)
    assert any(n in errors[0].format() for n in needles), errors[0].format()
    assert not location_problems(errors, {path: text}), errors[0].format()
    assert not (tmp_path / "PWNED").exists()


def test_non_utf8_file_is_located(tmp_path):
    """Can fail: the original loader reported 'not UTF-8' with no line (checked before the fix)."""
    path = tmp_path / "claims" / "x.yaml"
    path.parent.mkdir()
    raw = b"id: x\ntitle: ok\nstatement: caf\xe9 latin-1\n"
    path.write_bytes(raw)
    (err,) = load_claims([path])[1]
    assert err.line == 3 and "UTF-8" in err.message


# --------------------------------------------------------------------------- pytest and kdclaims validate
BROKEN = {  # name -> (old, new, expected "field: message" fragment); the error is on the line of new's last line
    # except for the syntax error, which the parser notices on the next line (and names the line it started at)
    "broken-syntax.yaml": ("tags: [accuracy]", "tags: [accuracy", "YAML syntax error: did not find expected ',' or ']' "
                           "(while parsing a flow sequence started at line 9)"),
    "broken-model.yaml": ("student: {arch: resnet18}", "student: {arch: resnet19}", "setup.student.arch: unknown model 'resnet19'"),
    "broken-tag.yaml": ("tags: [accuracy]", "tags: !!python/object/apply:os.system ['touch PWNED']", "not allowed"),
    "broken-seeds.yaml": ("  student: {arch: resnet18}", "  student: {arch: resnet18}\n  seeds: [-1, 0]",
                          "setup.seeds: seeds must be non-negative"),
    "broken-key.yaml": ("tags: [accuracy]", "tags: [accuracy]\ncolour: red", "colour: unknown key"),
}


def _broken_tree(root: Path) -> dict[str, tuple[Path, int, str]]:
    """The good claim plus five broken copies in root/claims/accuracy; name -> (path, expected line, fragment)."""
    write_claim_tree(root)
    good = ORIGINAL[CLAIM_REL]
    out = {}
    for name, (old, new, fragment) in BROKEN.items():
        assert old in good
        text = good.replace("id: accuracy-gain", f"id: {name[:-5]}").replace(old, new, 1)
        path = root / "claims" / "accuracy" / name
        path.write_text(text)
        line = next(i for i, s in enumerate(text.splitlines(), 1) if new.splitlines()[-1] in s)
        line += name == "broken-syntax.yaml"
        out[name] = (path, line, fragment)
    return out


def test_broken_claims_are_collection_errors_and_the_good_one_is_collected(pytester: pytest.Pytester):
    """Under pytest, the good claim's five items are collected; each broken file is one collection error showing
    ``file:line: field: message``. Can fail: checked by breaking the good claim too (its items vanish)."""
    broken = _broken_tree(pytester.path)
    result = pytester.runpytest("claims", "--collect-only", "-q", "-p", "no:randomly", "--kd-cache",
                                str(pytester.path / "cache"))
    out = result.stdout.str()
    for tier in ("smoke", "cpu", "gpu-resnet50-resnet18", "gpu-vgg19-vgg11", "gpu-vgg19-resnet18"):
        assert f"accuracy-gain.yaml::accuracy-gain[{tier}]" in out, out
    assert f"{len(BROKEN)} errors" in out, out
    for name, (_, line, fragment) in broken.items():
        assert f"claims/accuracy/{name}:{line}: " in out and fragment in out, (name, line, out)
    assert not (pytester.path / "PWNED").exists()


def test_validate_prints_one_located_error_per_broken_file(tmp_path, capsys, monkeypatch):
    """``kdclaims validate DIR`` prints exactly one ``file:line: field: message`` per broken file, exits 1.
    Can fail: checked by adding a second problem to broken-key.yaml (two lines for one file -> fails)."""
    monkeypatch.chdir(tmp_path)
    broken = _broken_tree(tmp_path)
    rc = kdclaims_main(["validate", str(tmp_path / "claims")])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert rc == 1
    assert len(lines) == len(BROKEN), lines
    for name, (path, line, fragment) in broken.items():
        (mine,) = [s for s in lines if s.startswith(f"{path}:")]
        assert mine.startswith(f"{path}:{line}: ") and fragment in mine, mine
    assert "1 claim file(s) valid (5 items), 5 problem(s)" in err
    assert not (tmp_path / "PWNED").exists()
