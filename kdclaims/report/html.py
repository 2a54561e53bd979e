"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG data URIs), deterministic."""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from html import escape
from typing import Any

from kdclaims.report.figures import figure_png
from kdclaims.report.markdown import (
    DASH, EXPECTATION_HEADER, FLAG, STATISTICS_NOTE, SUMMARY_HEADER, expectation_row, fmt_delta, fmt_estimate,
    fmt_family, fmt_num, fmt_p, fmt_paper, fmt_ref, fmt_seconds, fmt_setup, reference_flags, split_expectations,
    verdict_words,
)
from kdclaims.report.schema import TIERS, VERDICTS, Report, ReportItem, as_report

VERDICT_COLOURS = {"supported": "#1a7f37", "refuted": "#cf222e", "inconclusive": "#9a6700", "skipped": "#6e7781",
                   "error": "#8250df"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2rem auto;max-width:82rem;
 padding:0 1rem;color:#1f2328;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{display:inline-block;color:#fff;border-radius:.8rem;padding:0 .6rem;font-size:.82rem;font-weight:600}
""" + "".join(f".v-{v}{{background:{c}}}" for v, c in VERDICT_COLOURS.items()) + """
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.5rem 0}
dl.kv dt{font-weight:600}dl.kv dd{margin:0}
blockquote{margin:.5rem 0;padding:.2rem .8rem;border-left:.25rem solid #d0d7de;color:#3d444d}
pre.message{background:#f6f8fa;border:1px solid #d0d7de;padding:.6rem;white-space:pre-wrap;font-size:.82rem}
section.item{margin-top:1.6rem}img.figure{max-width:100%;height:auto;display:block;margin:.6rem 0}
.muted{color:#6e7781;font-size:.85rem}code{font-size:.85rem}
"""


def _badge(verdict: str) -> str:
    return f'<span class="verdict v-{escape(verdict)}">{escape(verdict)}</span>'


def _table(header: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """A table from already-escaped cell HTML; columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>\n" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _kv(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return '<dl class="kv">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>\n"


def _counts(report: Report) -> str:
    counts = report.counts()
    rows = [[escape(t)] + [str(counts[t][v]) for v in VERDICTS] + [str(sum(counts[t].values()))]
            for t in (*TIERS, "total") if sum(counts[t].values()) or t == "total"]
    header = ["tier", *VERDICTS, "total"]
    return _table(header, rows, numeric=set(range(1, len(header))))


def _summary(report: Report, slugs: list[str]) -> str:
    rows = []
    for it, slug in zip(report.items, slugs):
        rows.append([
            f'<a href="#{slug}">{escape(it.label)}</a>',
            escape(fmt_ref(it.paper_ref)),
            escape(it.tier),
            escape(it.setting or DASH),
            escape(fmt_num(it.paper)),
            escape(fmt_estimate(it.measured, it.ci_low, it.ci_high)),
            escape(fmt_delta(it.measured, it.paper)),
            escape(fmt_p(it.p_value)),
            escape(fmt_p(it.p_holm)),
            _badge(it.verdict),
        ])
    return _table(SUMMARY_HEADER, rows, numeric={4, 5, 6, 7, 8})


def _arms_table(item: ReportItem) -> str:
    rows = []
    for metric, arms in item.arms.items():
        for arm, s in arms.items():
            rows.append([escape(metric), escape(arm), escape(fmt_estimate(s.mean, s.ci_low, s.ci_high)),
                         escape(fmt_paper(s)), escape(fmt_delta(s.mean, s.paper))])
    if not rows:
        return ""
    table = _table(["metric", "arm", "mean [CI]", "paper", "Δ"], rows, numeric={2, 3, 4})
    flags = "".join(f"<li>{escape(m)} / {escape(a)}: {escape(f)}</li>" for m, a, f in reference_flags(item))
    flags = f"<p>{FLAG} paper values to read with care:</p><ul>{flags}</ul>\n" if flags else ""
    return f"<details><summary>Per-arm values ({len(rows)} rows)</summary>\n{table}</details>\n{flags}"


def _extras(item: ReportItem) -> list[tuple[str, str]]:
    pairs = []
    for k, v in item.extras.items():
        if isinstance(v, bool) or v is None:
            pairs.append((k, escape(str(v))))
        elif isinstance(v, (int, float)):
            pairs.append((k, escape(fmt_num(v))))
        elif isinstance(v, str):
            pairs.append((k, escape(v)))
        else:
            pairs.append((k, '<span class="muted">structured value, see report.json</span>'))
    return pairs


def _item(item: ReportItem, slug: str, png: bytes | None) -> str:
    parts = [f'<section class="item" id="{slug}">\n<h2>{escape(item.label)} '
             '<a class="muted" href="#summary" title="back to the summary">↑</a></h2>\n']
    meta = [_badge(item.verdict), f"outcome {escape(item.outcome)}", escape(fmt_seconds(item.seconds))]
    if item.paper_ref:
        meta.append("paper " + escape(fmt_ref(item.paper_ref)))
    parts.append(f"<p>{' · '.join(meta)}</p>\n")
    if item.premises_failed:
        parts.append(f"<p><strong>{escape(verdict_words(item))}</strong></p>\n")
    if item.title:
        parts.append(f"<p><strong>{escape(item.title)}</strong></p>\n")
    if item.statement:
        parts.append(f"<blockquote>{escape(item.statement)}</blockquote>\n")
    if item.message:
        parts.append(f'<pre class="message">{escape(item.message)}</pre>\n')
    info = [(k, escape(v)) for k, v in fmt_setup(item)]
    if item.statistic:
        info.append(("statistic", escape(item.statistic)))
    if fmt_family(item):
        info.append(("family", escape(fmt_family(item))))
    if item.n_images is not None or item.n_seeds is not None:
        info.append(("units", escape(f"{item.n_images if item.n_images is not None else DASH} images × "
                                     f"{item.n_seeds if item.n_seeds is not None else DASH} seeds")))
    info.append(("node", f"<code>{escape(item.nodeid)}</code>"))
    info += _extras(item)
    parts.append(_kv(info))
    for heading, exps in split_expectations(item):
        rows = [[escape(c) for c in expectation_row(e)] for e in exps]
        for r, e in zip(rows, exps):
            r[-1] = _badge(e.verdict)
        parts.append(f'<p class="muted">{escape(heading)}</p>\n')
        parts.append(_table(EXPECTATION_HEADER, rows, numeric={3, 4, 6, 7, 8, 9, 10, 11, 12}))
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img class="figure" alt="{escape(item.figure.kind)} figure for {escape(item.label)}" '
                     f'src="data:image/png;base64,{data}">\n')
    parts.append(_arms_table(item))
    parts.append("</section>\n")
    return "".join(parts)


def render_html(report: Report | Mapping[str, Any], pngs: Mapping[str, bytes | None] | None = None) -> str:
    """The report as one HTML page. ``pngs`` maps item slug to its figure (drawn here when not given)."""
    report = as_report(report)
    slugs = report.slugs()
    if pngs is None:
        pngs = {s: figure_png(it) for s, it in zip(slugs, report.items)}
    m = report.machine
    header: list[tuple[str, Any]] = [
        ("command", f"<code>{escape(report.command)}</code>"),
        ("created", escape(report.created)),
        ("machine", escape(f"python {m.python} · torch {m.torch} · {m.device}")),
        ("kdclaims", escape(report.kdclaims_version)),
    ]
    body = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>kdclaims report · {escape(report.created)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        "<h1>kdclaims report</h1>\n",
        _kv(header),
        "<h2>Verdicts</h2>\n",
        _counts(report),
        '<h2 id="summary">Summary</h2>\n',
        '<p class="muted">One row per item, showing its headline expectation (the one that decided the verdict); '
        "Δ = measured − paper; family p is the p its verdict used, adjusted for the tier's declared family. "
        + escape(STATISTICS_NOTE) + " Paper values come from "
        "the paper's own setting: beside smoke and cpu items they are a reference, not a target.</p>\n",
        _summary(report, slugs),
    ]
    body += [_item(it, slug, pngs.get(slug)) for it, slug in zip(report.items, slugs)]
    body.append("</body>\n</html>\n")
    return "".join(body)
