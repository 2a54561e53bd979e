"""The report renderers: schema validation, HTML/Markdown/terminal output, figures, determinism."""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from kdclaims.report.figures import figure_png, has_figure
from kdclaims.report.html import render_html
from kdclaims.report.markdown import fmt_delta, fmt_estimate, fmt_num, fmt_p, md_escape, render_markdown
from kdclaims.report.render import ReportError, load_report, parse_report, render_all, save_report
from kdclaims.report.schema import VERDICTS, Report, report_json_schema
from kdclaims.report.terminal import render_terminal

DATA = Path(__file__).parent / "data" / "report_all_verdicts.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _raw() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


def _drawable(raw_item: dict) -> bool:
    """Independent of figures.has_figure: a figure kind and at least one measured value to draw."""
    fig = raw_item["figure"]
    if fig["kind"] == "none":
        return False
    if fig["kind"] == "heatmaps":
        return bool(raw_item["extras"].get("cka_matrix"))
    return any(s["mean"] is not None for m in fig["metrics"] for s in raw_item["arms"].get(m, {}).values())


@pytest.fixture(scope="module")
def report() -> Report:
    return load_report(DATA)


@pytest.fixture(scope="module")
def rendered(report: Report) -> dict:
    slugs = report.slugs()
    pngs = {s: figure_png(it) for s, it in zip(slugs, report.items)}
    return {"pngs": pngs, "html": render_html(report, pngs), "md": render_markdown(report)}


def _sections(page: str) -> dict[str, str]:
    """HTML of each item section, keyed by its id."""
    return dict(re.findall(r'<section class="item" id="([^"]+)">(.*?)</section>', page, flags=re.S))


# ------------------------------------------------------------------------------------------------ the fixture
def test_fixture_covers_every_verdict_and_figure_kind(report: Report) -> None:
    assert {it.verdict for it in report.items} == set(VERDICTS)
    assert {it.figure.kind for it in report.items} == {"bars", "lines", "heatmaps", "groups", "none"}
    assert len(set(report.slugs())) == len(report.items)


# ------------------------------------------------------------------------------------------------------- HTML
def test_html_has_a_summary_row_and_a_section_per_item(report: Report, rendered: dict) -> None:
    page = rendered["html"]
    summary = page.split('<h2 id="summary">', 1)[1].split('<section class="item"', 1)[0]
    assert summary.count("<tr><td>") == len(report.items)
    sections = _sections(page)
    assert list(sections) == report.slugs()
    for it, slug in zip(report.items, report.slugs()):
        assert f'<a href="#{slug}">{html.escape(it.label)}</a>' in summary
        assert f"v-{it.verdict}" in sections[slug]
        if it.statement:
            assert html.escape(it.statement) in sections[slug]
        for e in it.expectations:
            assert html.escape(e.label) in sections[slug]
        if it.message:
            assert html.escape(it.message) in sections[slug]


def test_html_has_one_image_per_item_with_something_to_draw(report: Report, rendered: dict) -> None:
    raw_items = _raw()["items"]
    expected = {slug for slug, raw in zip(report.slugs(), raw_items) if _drawable(raw)}
    assert len(expected) == 7  # hand count of tests/data/report_all_verdicts.json
    page = rendered["html"]
    assert page.count("<img ") == len(expected)
    for slug, body in _sections(page).items():
        assert body.count("<img ") == (1 if slug in expected else 0), slug


def test_html_images_are_decodable_pngs(rendered: dict) -> None:
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', rendered["html"])
    assert uris
    for uri in uris:
        data = base64.b64decode(uri)
        assert data.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 300
        assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_html_is_well_formed(rendered: dict) -> None:
    void = {"meta", "img", "br", "hr", "link", "input"}

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    checker = Checker()
    checker.feed(rendered["html"])
    checker.close()
    assert checker.stack == []


def test_html_escapes_every_text_field() -> None:
    raw = _raw()
    item = raw["items"][0]
    item["statement"] = "<script>alert(1)</script>"
    item["title"] = 'a "quoted" <b>title</b>'
    item["expectations"][0]["label"] = "kl > independent & <img src=x>"
    item["setup"]["teacher"] = "<i>teacher</i>"
    item["figure"]["kind"] = "none"
    rep = Report.model_validate(raw)
    page = render_html(rep, pngs={})
    assert "<script>" not in page and "<b>title</b>" not in page and "<i>teacher" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "kl &gt; independent &amp; &lt;img src=x&gt;" in page
    assert page.count("<img ") == 0


# ------------------------------------------------------------------------------------------------ determinism
def test_render_all_in_a_fresh_process_writes_byte_identical_files(tmp_path: Path, report: Report,
                                                                   rendered: dict) -> None:
    """render_all from report.json, in another interpreter with another hash seed, reproduces every byte."""
    src = tmp_path / "report.json"
    src.write_text(DATA.read_text(encoding="utf-8"), encoding="utf-8")
    code = ("import sys; from kdclaims.report.render import render_all; "
            "print('\\n'.join(str(p) for p in render_all(sys.argv[1])))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "pdf"}
    out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    drawable = [s for s, it in zip(report.slugs(), report.items) if has_figure(it)]
    expected = [tmp_path / "report.md", tmp_path / "report.html"] + [
        tmp_path / "figures" / f"{s}.png" for s in drawable]
    assert [Path(p) for p in out.stdout.split()] == expected
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == rendered["md"]
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == rendered["html"]
    for s in drawable:
        assert (tmp_path / "figures" / f"{s}.png").read_bytes() == rendered["pngs"][s]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        ["report.json"] + [p.name for p in expected])  # no temporary files left behind
    assert render_markdown(load_report(src)) == render_markdown(_raw()) == rendered["md"]


def test_render_all_needs_out_dir_for_a_report_object(report: Report) -> None:
    with pytest.raises(ValueError, match="out_dir"):
        render_all(report)


# --------------------------------------------------------------------------------------------------- markdown
def test_markdown_lists_every_item_and_expectation(report: Report, rendered: dict) -> None:
    md = rendered["md"]
    summary = md.split("## Summary", 1)[1].split("## Claims", 1)[0]
    rows = [ln for ln in summary.splitlines() if ln.startswith("| [")]
    assert len(rows) == len(report.items)
    for it, slug, row in zip(report.items, report.slugs(), rows):
        assert row.startswith(f"| [{md_escape(it.label)}](#{slug}) |")
        assert row.rstrip(" |").endswith(it.verdict)
        assert f'<a id="{slug}"></a>' in md
        assert f"### {md_escape(it.label)}" in md
        for e in it.expectations:
            assert f"| {md_escape(e.label)} |" in md
    assert "report.html" in md
    assert "| total | 5 | 1 | 2 | 1 | 1 | 10 |" in md
    for line in md.splitlines():  # every table row has the same number of cells as its header
        if line.startswith("|"):
            assert len(re.split(r"(?<!\\)\|", line)) - 2 in (7, 10, 15), line  # counts, summary, expectations


def test_markdown_fences_messages_with_backticks() -> None:
    raw = _raw()
    raw["items"][6]["message"] = "error with ``` inside\nand | pipes"
    md = render_markdown(Report.model_validate(raw))
    assert "````text\nerror with ``` inside\nand | pipes\n````" in md


# --------------------------------------------------------------------------------------------------- terminal
def test_terminal_counts_and_items_that_ran(report: Report) -> None:
    for width in (60, 100, 140):
        text = render_terminal(report, width=width)
        assert all(len(line) <= width for line in text.splitlines()), width
    text = render_terminal(report, width=140)
    assert "10 items: 5 supported, 1 refuted, 2 inconclusive, 1 skipped, 1 error" in text
    for it in report.items:
        if it.verdict == "skipped":
            assert it.label not in text
        else:
            assert re.search(re.escape(it.label) + r"\s.*\b" + it.verdict + r"$", text, flags=re.M), it.label
    assert "0.107 [0.098, 0.116]  0.108  supported" in text
    assert render_terminal(_raw(), width=140) == text  # the decoded report.json dict is accepted too
    coloured = render_terminal(report, width=140, color=True)
    assert "\x1b[31mrefuted\x1b[0m" in coloured
    assert re.sub(r"\x1b\[\d+m", "", coloured) == text


# ----------------------------------------------------------------------------------------------------- schema
def test_schema_rejects_an_unknown_verdict_naming_file_field_and_item(tmp_path: Path) -> None:
    raw = _raw()
    raw["items"][2]["verdict"] = "plausible"
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ReportError) as err:
        load_report(bad)
    msg = str(err.value)
    assert f"{bad}: items[2].verdict (item {raw['items'][2]['nodeid']}):" in msg
    assert "'supported'" in msg  # pydantic names the allowed values


def test_schema_rejects_unknown_keys_except_in_extras() -> None:
    raw = _raw()
    raw["items"][0]["expectations"][0]["p_vaule"] = 0.01
    raw["machine"]["gpu_count"] = 8
    with pytest.raises(ReportError) as err:
        parse_report(raw, "r.json")
    assert "r.json: items[0].expectations[0].p_vaule" in str(err.value)
    assert "r.json: machine.gpu_count" in str(err.value)
    raw = _raw()
    raw["items"][0]["extras"]["anything"] = {"nested": [1, 2, {"x": None}]}
    assert parse_report(raw).items[0].extras["anything"]["nested"][2] == {"x": None}


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(version=2), "version"),
    (lambda r: r.update(created="yesterday"), "created"),
    (lambda r: r["items"][3]["figure"].update(x=[0.3, 0.4]), "items[3].figure"),
    (lambda r: r["items"][0]["expectations"][0].update(kind="bigger"), "items[0].expectations[0].kind"),
    (lambda r: r["items"][0].update(tier="tpu"), "items[0].tier"),
])
def test_schema_rejects_bad_values(mutate, field: str) -> None:
    raw = _raw()
    mutate(raw)
    with pytest.raises(ReportError, match=re.escape(f"r.json: {field}")):
        parse_report(raw, "r.json")


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{\n  "version": 1,\n  "items": [,]\n}\n', encoding="utf-8")
    with pytest.raises(ReportError, match=re.escape(f"{bad}:3:")):
        load_report(bad)


def test_json_schema_is_published() -> None:
    schema = report_json_schema()
    item = schema["$defs"]["ReportItem"]
    assert set(item["properties"]["verdict"]["enum"]) == set(VERDICTS)
    assert item["additionalProperties"] is False
    assert item["properties"]["extras"].get("additionalProperties", True) is not False
    assert set(schema["required"]) >= {"kdclaims_version", "created", "command", "machine"}
    json.dumps(schema)  # serialisable


# ------------------------------------------------------------------------------------------------ save_report
def test_save_report_round_trips_and_writes_nan_as_null(tmp_path: Path) -> None:
    raw = _raw()
    raw["items"][0]["measured"] = float("nan")
    rep = Report.model_validate(raw)
    path = save_report(rep, tmp_path / "report.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = load_report(path)
    assert back.items[0].measured is None
    assert back.model_dump(exclude={"items": {0: {"measured"}}}) == rep.model_dump(exclude={"items": {0: {"measured"}}})


# --------------------------------------------------------------------------------------------- missing numbers
def test_nan_and_missing_numbers_render_without_crashing() -> None:
    raw = _raw()
    nan, inf = float("nan"), float("inf")
    a = raw["items"][0]  # bars
    a.update(measured=nan, ci_low=None, ci_high=inf, p_value=nan, p_holm=None, paper=inf, seconds=nan)
    a["expectations"][0].update(measured=nan, ci_low=-inf, ci_high=None, p_value=None, alpha=nan)
    a["arms"]["agreement"]["kl"].update(mean=nan, ci_low=nan, ci_high=None, paper=nan)
    a["arms"]["agreement"]["hint"].update(ci_low=0.9, ci_high=0.5)  # a disordered CI is drawn, not fatal
    d = raw["items"][3]  # lines: one arm wholly missing, one point missing
    for stats in d["arms"].values():
        stats["hint"] = {"mean": None, "ci_low": None, "ci_high": None, "paper": None}
    d["arms"]["agreement/0.5"]["kl"]["mean"] = nan
    e = raw["items"][4]  # heatmaps with holes
    e["extras"]["cka_matrix"]["kl"][0][0] = None
    e["extras"]["cka_matrix"]["kl"][1][1] = nan
    e["extras"]["cka_matrix"]["broken"] = "not a matrix"
    f = raw["items"][5]  # groups with all means missing: nothing to draw
    for stats in f["arms"].values():
        for s in stats.values():
            s.update(mean=None, ci_low=None, ci_high=None)
    rep = Report.model_validate(raw)
    slugs = rep.slugs()
    pngs = {slugs[i]: figure_png(rep.items[i]) for i in (0, 3, 4, 5)}  # the items changed above
    for s in (slugs[0], slugs[3], slugs[4]):
        assert pngs[s] is not None and pngs[s].startswith(PNG_SIGNATURE)
    assert pngs[slugs[5]] is None
    page, md, term = render_html(rep, pngs), render_markdown(rep), render_terminal(rep)
    for text in (page, md, term):
        assert not re.search(r"\bnan\b", text, flags=re.I)
    summary_row = next(ln for ln in md.splitlines() if ln.startswith(f"| [{md_escape(rep.items[0].label)}]"))
    assert "| ∞ | — [—, ∞] | — | — | — |" in summary_row


def test_number_formats() -> None:
    assert fmt_num(None) == fmt_num(math.nan) == "—"
    assert fmt_num(-0.0) == "0.000"
    assert (fmt_num(math.inf), fmt_num(-math.inf)) == ("∞", "-∞")
    assert (fmt_num(0.05), fmt_num(0.0), fmt_num(-0.0212), fmt_num(2e-4)) == ("0.050", "0.000", "-0.021", "2.00e-04")
    assert (fmt_p(0.0412), fmt_p(3e-5), fmt_p(None)) == ("0.041", "3.0e-05", "—")
    assert (fmt_delta(0.05, 0.038), fmt_delta(0.03, 0.05), fmt_delta(0.05, None)) == ("+0.012", "-0.020", "—")
    assert fmt_estimate(0.05, 0.02, 0.08) == "0.050 [0.020, 0.080]"
    assert fmt_estimate(0.05, None, None) == "0.050"
    assert fmt_estimate(None, None, None, none="-") == "-"
    assert md_escape("a|b *c* <d>\nkl_high") == r"a\|b \*c\* &lt;d&gt; kl\_high"


def test_has_figure_needs_a_kind_and_a_value() -> None:
    rep = Report.model_validate(copy.deepcopy(_raw()))
    by_id = {it.label: it for it in rep.items}
    assert not has_figure(by_id["student-accuracy[smoke]"])  # kind none, though it has arms
    assert not has_figure(by_id["fairness[gpu/resnet20-resnet20/paper]"])  # error: no arms
    assert has_figure(by_id["cka[cpu/mnistwide-mnistnet]"])
    assert figure_png(by_id["student-accuracy[smoke]"]) is None
