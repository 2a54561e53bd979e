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


def md_code(text: str) -> str:
    """``text`` as one inline code span: whitespace runs (newlines included) folded to one space, so it cannot
    end its paragraph; the fence is one backtick longer than the longest run inside it."""
    text = " ".join(text.split())
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}" if text else DASH


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


SUMMARY_HEADER = ["claim", "paper ref", "tier", "setting", "paper", "measured [CI]", "Δ", "p", "family p", "verdict"]
EXPECTATION_HEADER = ["expectation", "metric", "test", "measured [CI]", "these checkpoints [CI]", "decided by",
                      "MDE (80 %)", "paper", "Δ", "p", "family p", "α", "images × seeds", "CI method", "verdict"]
EXPECTATION_ALIGN = "lll" + "rrl" + "r" * 7 + "ll"
DECIDED_BY = {"seeds": "seeds (the method)", "images": "images (fixed models)", "none": "one seed: none"}
STATISTICS_NOTE = ("measured [CI] is the answer that decides: over training seeds (the method: would another "
                   "training run agree?); these checkpoints [CI] is the image-level interval for the trained models "
                   "as they are. MDE: the smallest effect this staging detects with 80 % power. family p: the p "
                   "the verdict used, adjusted for the tier's declared family (docs/statistics.md).")


def expectation_row(e: Expectation) -> list[str]:
    """One expectation as table cells (unescaped text), in ``EXPECTATION_HEADER`` order."""
    n = DASH if e.n_images is None and e.n_seeds is None else f"{e.n_images or DASH} × {e.n_seeds or DASH}"
    img = e.image_level
    checkpoints = DASH if img is None or e.decided_by == "images" else fmt_estimate(img.estimate, img.ci_low,
                                                                                     img.ci_high)
    return [e.label, e.metric, fmt_test(e), fmt_estimate(e.measured, e.ci_low, e.ci_high), checkpoints,
            DECIDED_BY.get(e.decided_by or "", DASH), fmt_num(e.mde), fmt_num(e.paper),
            fmt_delta(e.measured, e.paper), fmt_p(e.p_value), fmt_p(e.p_holm), fmt_num(e.alpha), n,
            e.method or DASH, e.verdict]


def split_expectations(item: ReportItem) -> list[tuple[str, list[Expectation]]]:
    """(heading, expectations): the premises (judged first) apart from the claim's own tests."""
    premises = [e for e in item.expectations if e.premise]
    tests = [e for e in item.expectations if not e.premise]
    groups = [("premises (judged first; a failed premise makes the item inconclusive)", premises),
              ("the claim's tests", tests)]
    return [(h, es) for h, es in groups if es]


def fmt_family(item: ReportItem) -> str | None:
    """The item's family and the level its tests used, e.g. ``paper-cpu (16 items): tested at α/16 = 0.0031;
    p 0.002, adjusted 0.032; Holm over this run 0.030``."""
    f = item.family
    if f is None:
        return None
    if not f.member:
        return f"none: judged alone at α = {fmt_num(f.alpha)}"
    text = f"{f.name} ({f.size} items): tested at α/{f.size} = {fmt_num(f.alpha)}"
    if _is_num(f.p):
        text += f"; p {fmt_p(f.p)}, adjusted {fmt_p(f.p_adjusted)}"
    if _is_num(f.p_holm_run):
        text += f"; Holm over this run {fmt_p(f.p_holm_run)} (information)"
    return text


def verdict_words(item: ReportItem) -> str:
    return item.verdict_text or item.verdict


def _item_md(it: ReportItem, slug: str) -> list[str]:
    title = f" — {md_escape(it.title)}" if it.title else ""
    head = [f'<a id="{slug}"></a>', "", f"### {md_escape(it.label)}{title}", ""]
    meta = [f"**{VERDICT_MARK.get(it.verdict, '')} {md_escape(verdict_words(it))}**", f"outcome {it.outcome}",
            fmt_seconds(it.seconds)]
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
    family = fmt_family(it)
    if family:
        lines += [f"- **family**: {md_escape(family)}"]
    if it.premises_failed:
        lines += [f"- **premises failed**: {md_escape('; '.join(it.premises_failed))}"]
    lines += [f"- **node**: {md_code(it.nodeid)}", ""]
    for heading, exps in split_expectations(it):
        rows = [[md_escape(c) for c in expectation_row(e)] for e in exps]
        for r, e in zip(rows, exps):
            r[-1] = verdict_md(e.verdict)
        lines += [f"*{heading}*", ""] + _table(EXPECTATION_HEADER, rows, EXPECTATION_ALIGN) + [""]
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
        f"- **command**: {md_code(report.command)}",
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
        "One row per item, showing its headline expectation; family p is the p its verdict used, adjusted for the "
        "tier's declared family. " + STATISTICS_NOTE + " Paper values come from the paper's own setting: beside "
        "smoke and cpu items they are a reference, not a "
        "target. Figures are in `report.html` (self-contained) and `figures/`.",
        "",
        "## Claims",
        "",
    ]
    for it, slug in zip(report.items, slugs):
        lines += _item_md(it, slug)
    return "\n".join(lines).rstrip() + "\n"
