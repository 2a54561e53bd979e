"""``report.md``: GitHub-flavoured Markdown for a CI step summary, and the number formats every renderer shares."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from kdclaims.report.schema import TIERS, VERDICTS, ArmStat, Expectation, PaperRef, Report, ReportItem, as_report

DASH = "—"
FLAG = "⚠"  # beside a paper value the claim flags (suspect, or printed otherwise elsewhere in the paper)
VERDICT_MARK = {"supported": "✅", "refuted": "❌", "inconclusive": "❔", "skipped": "⏭️", "error": "💥"}


# ----------------------------------------------------------------------------------------------- number formats
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def fmt_num(x: Any, none: str = DASH) -> str:
    """3 decimals; ``none`` for None/NaN, ``±∞`` for infinities, scientific below 1e-3 or from 1e4."""
    if not _is_num(x):
        return none
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    x = x + 0.0  # -0.0 -> 0.0
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.3f}"


def fmt_signed(x: Any, none: str = DASH) -> str:
    """``fmt_num`` with an explicit ``+`` on positive values (for differences)."""
    s = fmt_num(x, none)
    return "+" + s if _is_num(x) and x > 0 else s


def fmt_p(p: Any, none: str = DASH) -> str:
    """A p-value: 3 decimals, or 2 significant digits in scientific notation below 0.001."""
    if not _is_num(p):
        return none
    return f"{p:.1e}" if 0 < p < 1e-3 else f"{p:.3f}"


def fmt_estimate(value: Any, lo: Any, hi: Any, none: str = DASH) -> str:
    """``value [lo, hi]``; the interval is left out when both ends are missing."""
    if not _is_num(value) and not _is_num(lo) and not _is_num(hi):
        return none
    s = fmt_num(value, none)
    if _is_num(lo) or _is_num(hi):
        s += f" [{fmt_num(lo, none)}, {fmt_num(hi, none)}]"
    return s


def fmt_ref(ref: PaperRef | None) -> str:
    """``§4.2 Fig 3a Tab 2`` (absent parts left out)."""
    if ref is None:
        return ""
    parts = [f"§{ref.section}"]
    if ref.figure:
        parts.append(f"Fig {ref.figure}")
    if ref.table:
        parts.append(f"Tab {ref.table}")
    return " ".join(parts)


def fmt_test(e: Expectation) -> str:
    """The tested relation, e.g. ``> 0.000``, ``< 0.500`` or ``≈ 0.000 ± 0.020``."""
    if e.kind == "equivalent":
        return f"≈ {fmt_num(e.threshold)} ± {fmt_num(e.margin)}"
    return f"{'>' if e.kind == 'greater' else '<'} {fmt_num(e.threshold)}"


def fmt_delta(measured: Any, paper: Any, none: str = DASH) -> str:
    """measured - paper, signed, when both are finite."""
    if _is_num(measured) and _is_num(paper) and math.isfinite(measured) and math.isfinite(paper):
        return fmt_signed(measured - paper, none)
    return none


def fmt_paper(s: ArmStat, none: str = DASH) -> str:
    """An arm's paper value with its printed ± and ``FLAG`` when the claim flags it: ``0.442 ± 0.002 ⚠``."""
    out = fmt_num(s.paper, none)
    if _is_num(s.paper) and _is_num(s.paper_pm):
        out += f" ± {fmt_num(s.paper_pm)}"
    return f"{out} {FLAG}" if s.paper_flag else out


def reference_flags(item: ReportItem) -> list[tuple[str, str, str]]:
    """``(metric, arm, flag)`` for every flagged paper value of the item, in table order."""
    return [(m, a, s.paper_flag) for m, arms in item.arms.items() for a, s in arms.items() if s.paper_flag]


def fmt_seconds(s: Any) -> str:
    return f"{s:.1f} s" if _is_num(s) and math.isfinite(s) else DASH


def fmt_setup(item: ReportItem) -> list[tuple[str, str]]:
    """The setup as (name, value) pairs, empty values left out."""
    su = item.setup
    if su is None:
        return []
    pairs = [
        ("teacher", su.teacher or ""),
        ("student", su.student or ""),
        ("methods", ", ".join(su.methods)),
        ("data", su.data or ""),
        ("seeds", ", ".join(str(s) for s in su.seeds)),
    ]
    return [(k, v) for k, v in pairs if v]


# ------------------------------------------------------------------------------------------------------ markdown
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """Text safe inside a GFM table cell or paragraph: markup characters escaped, newlines folded, no raw HTML."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def _fence(text: str) -> str:
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, run + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def verdict_md(verdict: str) -> str:
    return f"{VERDICT_MARK.get(verdict, '')} {verdict}".strip()


def counts_table_md(report: Report) -> list[str]:
    counts = report.counts()
    rows = [[name] + [str(counts[name][v]) for v in VERDICTS] + [str(sum(counts[name].values()))]
            for name in (*TIERS, "total") if sum(counts[name].values()) or name == "total"]
    return _table(["tier", *VERDICTS, "total"], rows, "l" + "r" * (len(VERDICTS) + 1))


def summary_rows(report: Report, slugs: list[str]) -> list[list[str]]:
    rows = []
    for it, slug in zip(report.items, slugs):
        rows.append([
            f"[{md_escape(it.label)}](#{slug})",
            md_escape(fmt_ref(it.paper_ref)),
            it.tier,
            md_escape(it.setting or DASH),
            fmt_num(it.paper),
            fmt_estimate(it.measured, it.ci_low, it.ci_high),
            fmt_delta(it.measured, it.paper),
            fmt_p(it.p_value),
            fmt_p(it.p_holm),
            verdict_md(it.verdict),
        ])
    return rows


SUMMARY_HEADER = ["claim", "paper ref", "tier", "setting", "paper", "measured [CI]", "Δ", "p", "Holm p", "verdict"]
EXPECTATION_HEADER = ["expectation", "metric", "test", "measured [CI]", "paper", "Δ", "p", "Holm p", "α",
                      "images × seeds", "CI method", "verdict"]


def expectation_row(e: Expectation) -> list[str]:
    """One expectation as table cells (unescaped text), in ``EXPECTATION_HEADER`` order."""
    n = DASH if e.n_images is None and e.n_seeds is None else f"{e.n_images or DASH} × {e.n_seeds or DASH}"
    return [e.label, e.metric, fmt_test(e), fmt_estimate(e.measured, e.ci_low, e.ci_high), fmt_num(e.paper),
            fmt_delta(e.measured, e.paper), fmt_p(e.p_value), fmt_p(e.p_holm), fmt_num(e.alpha), n,
            e.method or DASH, e.verdict]


def _item_md(it: ReportItem, slug: str) -> list[str]:
    title = f" — {md_escape(it.title)}" if it.title else ""
    head = [f'<a id="{slug}"></a>', "", f"### {md_escape(it.label)}{title}", ""]
    meta = [f"**{verdict_md(it.verdict)}**", f"outcome {it.outcome}", fmt_seconds(it.seconds)]
    if it.paper_ref:
        meta.append(f"paper {md_escape(fmt_ref(it.paper_ref))}")
    lines = head + [" · ".join(meta), ""]
    if it.statement:
        lines += [f"> {md_escape(it.statement)}", ""]
    setup = fmt_setup(it)
    if setup:
        lines += ["- **setup**: " + "; ".join(f"{k} {md_escape(v)}" for k, v in setup)]
    if it.statistic:
        lines += [f"- **statistic**: {md_escape(it.statistic)}"]
    lines += [f"- **node**: `{it.nodeid.replace('`', '')}`", ""]
    if it.expectations:
        rows = [[md_escape(c) for c in expectation_row(e)] for e in it.expectations]
        for r, e in zip(rows, it.expectations):
            r[-1] = verdict_md(e.verdict)
        lines += _table(EXPECTATION_HEADER, rows, "lll" + "r" * 7 + "ll") + [""]
    flags = reference_flags(it)
    if flags:
        lines += [f"{FLAG} **paper values to read with care**:"]
        lines += [f"- {md_escape(m)} / {md_escape(a)}: {md_escape(f)}" for m, a, f in flags] + [""]
    if it.message:
        lines += [_fence(it.message), ""]
    return lines


def render_markdown(report: Report | Mapping[str, Any]) -> str:
    """The whole report as GitHub-flavoured Markdown (deterministic: the same report gives the same text)."""
    report = as_report(report)
    slugs = report.slugs()
    m = report.machine
    lines = [
        "# kdclaims report",
        "",
        f"- **command**: `{report.command.replace('`', '')}`",
        f"- **created**: {md_escape(report.created)} · kdclaims {md_escape(report.kdclaims_version)}",
        f"- **machine**: python {md_escape(m.python)} · torch {md_escape(m.torch)} · {md_escape(m.device)}",
        "",
        "## Verdicts",
        "",
        *counts_table_md(report),
        "",
        "## Summary",
        "",
        *_table(SUMMARY_HEADER, summary_rows(report, slugs), "llllrrrrrl"),
        "",
        "One row per item, showing its headline expectation; Holm p is Holm-adjusted over the run's family of tests. "
        "Paper values come from the paper's own setting: beside smoke and cpu items they are a reference, not a "
        "target. Figures are in `report.html` (self-contained) and `figures/`.",
        "",
        "## Claims",
        "",
    ]
    for it, slug in zip(report.items, slugs):
        lines += _item_md(it, slug)
    return "\n".join(lines).rstrip() + "\n"
