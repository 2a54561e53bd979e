"""YAML values and includes that once gave tracebacks, hangs or disclosure (issue 16, point 4): located errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kdclaims.spec.loader import load_claims
from reliability_helpers import write_claim_tree

# (file text change, expected located error): each appended to a valid claim file's text
BAD_VALUES = {
    "date": ("created: 2024-02-30\n", "created: invalid timestamp value: day is out of range"),
    "int": ("extra_int: !!int abc\n", "extra_int: invalid int value"),
    "float": ("extra_float: !!float abc\n", "extra_float: invalid float value"),
    "huge-int": ("extra_huge: " + "9" * 5000 + "\n", "extra_huge: invalid int value: Exceeds the limit"),
    "timestamp": ("extra_time: !!timestamp yesterday\n", "extra_time: invalid timestamp value"),
    # found by the fuzz in a fresh clone: PyYAML's bool constructor raises KeyError for a word it does not know
    "bool": ("extra_bool: !!bool maybe\n", "extra_bool: invalid bool value"),
    "nul-include": ('include: "a\\0b.yaml"\n', "include: 'a\\x00b.yaml' is not a usable file name"),
}


def _tree(tmp_path: Path, extra: dict[str, str]) -> Path:
    write_claim_tree(tmp_path / "proj")
    folder = tmp_path / "proj" / "claims"
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_scalar_is_located_and_other_files_still_validate(tmp_path, case):
    """A file with one bad scalar gives one ``file:line: field: message`` error; a second bad file in the same run
    is still validated and reported.

    Can fail: on the old main each case raised ValueError (AttributeError for ``!!timestamp yesterday``, found by
    the slow fuzz) out of ``load_claims`` (a traceback) and no other file was validated."""
    text, expected = BAD_VALUES[case]
    folder = _tree(tmp_path, {"bad1.yaml": "id: bad-one\nline2: 1\n" + text,
                              "bad2.yaml": "id: bad-two\n" + text})
    _, errors = load_claims([folder])
    found = {Path(e.file).name: e for e in errors}
    assert set(found) >= {"bad1.yaml", "bad2.yaml"}, [e.format() for e in errors]
    assert found["bad1.yaml"].line == 3 and expected in found["bad1.yaml"].format()
    assert found["bad2.yaml"].line == 2 and expected in found["bad2.yaml"].format()


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.yaml", "sub/../../outside.yaml", "link.yaml"])
def test_include_outside_the_claims_folder_is_refused_without_quoting_it(tmp_path, name):
    """An include that leaves the claims folder (absolute, ``..``, or a symlink out of it) is one located error
    that quotes the include entry and never a line of the foreign file.

    Can fail: on the old main ``include: [/etc/passwd]`` loaded the file and reported its content back (here:
    the error read ``a claim file is a mapping``, located in the foreign file, and the secret line leaked for a
    mapping file)."""
    secret = tmp_path / "proj" / "outside.yaml"
    folder = _tree(tmp_path, {"inc.yaml": f"id: inc\ninclude: ['{name}']\n"})
    secret.write_text("TOPSECRET_KEY: hunter2\n")
    (folder / "link.yaml").symlink_to(secret)
    (folder / "sub").mkdir()
    _, errors = load_claims([folder / "inc.yaml"])
    assert len(errors) == 1, [e.format() for e in errors]
    text = errors[0].format()
    assert Path(errors[0].file).name == "inc.yaml" and errors[0].line == 2 and "include:" in text
    assert "TOPSECRET" not in text and "hunter2" not in text and "root:" not in text


def test_include_blow_up_ends_fast_with_a_located_error(tmp_path):
    """Seven base files (about 5 KB each), each including the next one 12 times (12^6 loads), end in well under a
    second with an error at an ``include:`` line.

    Can fail: on the old main (no bound) this ran for more than 120 s (issue 16); with ``charge`` a no-op the
    time assertion fails."""
    folder = _tree(tmp_path, {})
    for i in range(7):
        nxt = f"_b{i + 1}.yaml"
        head = "include: [" + ", ".join([nxt] * 12) + "]\n" if i < 6 else ""
        (folder / f"_b{i}.yaml").write_text(head + "".join(f"k{i}_{j}: {'x' * 100}\n" for j in range(50)))
    (folder / "top.yaml").write_text("id: top\ninclude: [_b0.yaml]\n")
    t0 = time.monotonic()
    _, errors = load_claims([folder / "top.yaml"])
    assert time.monotonic() - t0 < 5
    assert len(errors) == 1 and errors[0].field == "include" and errors[0].line == 1
    assert "more than 64 includes" in errors[0].message


def test_include_size_bound(tmp_path):
    """Includes that add up to more than 1 MiB are one located error. Can fail: without the bound (``charge``
    a no-op) the 1.2 MB of includes loaded and the error list was empty of ``include`` errors."""
    folder = _tree(tmp_path, {"_big.yaml": "".join(f"k{j}: {'y' * 200}\n" for j in range(3000))})
    (folder / "top.yaml").write_text("id: top\ninclude: [_big.yaml, _big.yaml]\n")
    _, errors = load_claims([folder / "top.yaml"])
    assert [e.field for e in errors] == ["include"] and "exceed 1048576 bytes" in errors[0].message
