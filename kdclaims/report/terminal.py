"""The summary printed at the end of a pytest run: counts by verdict and tier, then the items that ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdclaims.report.markdown import fmt_estimate, fmt_num
from kdclaims.report.schema import TIERS, VERDICTS, Report, as_report

_ANSI = {"supported": "32", "refuted": "31", "inconclusive": "33", "skipped": "90", "error": "35"}
_MIN_CLAIM = 12


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _paint(verdict: str, text: str, color: bool) -> str:
    return f"\x1b[{_ANSI[verdict]}m{text}\x1b[0m" if color and verdict in _ANSI else text


def _header(n: int, total: dict[str, int], width: int, color: bool) -> list[str]:
    """``kdclaims: N items: 5 supported, ...`` filled into lines of at most ``width`` characters."""
    parts = [f"kdclaims: {n} item{'s' if n != 1 else ''}:"] + [f"{total[v]} {v}" for v in VERDICTS]
    lines: list[str] = []
    plain, shown = "", ""
    for i, part in enumerate(parts):
        sep = "" if i == 0 else (" " if i == 1 else ", ")
        painted = part if i == 0 else _paint(VERDICTS[i - 1], part, color and total[VERDICTS[i - 1]] > 0)
        if plain and len(plain) + len(sep) + len(part) > width:
            lines.append(shown + sep.rstrip())
            plain, shown, sep = "  ", "  ", ""
        plain, shown = plain + sep + part, shown + sep + painted
    lines.append(shown)
    return lines


def render_terminal(report: Report | Mapping[str, Any], width: int = 100, color: bool = False) -> str:
    """Plain text, no line longer than ``width`` (ANSI colour codes on verdicts when ``color``, not counted).

    Lists every item that ran (verdict other than ``skipped``): ``claim[tier/setting]``, measured [CI], paper,
    verdict; then each item whose premise failed, and each declared family with the level its members were
    tested at. Skipped items are only counted; their reasons are in report.md/report.html. ``report`` may also be
    the decoded report.json dict.
    """
    report = as_report(report)
    counts = report.counts()
    total = counts["total"]
    n = sum(total.values())
    lines = _header(n, total, width, color)
    tiers = [t for t in TIERS if sum(counts[t].values())]
    for cols in (["tier", *VERDICTS, "total"], ["tier", "sup", "ref", "inc", "skip", "err", "all"]):
        table = [cols] + [[t] + [str(counts[t][v]) for v in VERDICTS] + [str(sum(counts[t].values()))] for t in tiers]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        text = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in table]
        if max(len(t) for t in text) <= width:
            break
    lines += [_clip(t, width) for t in text]

    ran = [it for it in report.items if it.verdict != "skipped"]
    if ran:
        rows = [(it.label, fmt_estimate(it.measured, it.ci_low, it.ci_high, none="-"), fmt_num(it.paper, none="-"),
                 it.verdict) for it in ran]
        w_meas = max(len("measured [CI]"), *(len(r[1]) for r in rows))
        w_paper = max(len("paper"), *(len(r[2]) for r in rows))
        w_verdict = max(len("verdict"), *(len(r[3]) for r in rows))
        fixed = w_meas + w_paper + w_verdict + 6
        w_claim = max(_MIN_CLAIM, min(max(len("claim"), *(len(r[0]) for r in rows)), width - fixed))
        lines.append("")

        def row(claim: str, meas: str, paper: str, verdict: str, paint: str | None) -> str:
            prefix = f"{_clip(claim, w_claim).ljust(w_claim)}  {meas.rjust(w_meas)}  {paper.rjust(w_paper)}  "
            room = width - len(prefix)
            if room < len(verdict):
                return _clip(prefix + verdict, width)
            return prefix + (_paint(paint, verdict, color) if paint else verdict)

        lines.append(row("claim", "measured [CI]", "paper", "verdict", None))
        lines += [row(c, m, p, v, v) for c, m, p, v in rows]
    for it in ran:
        if it.premises_failed:
            lines.append(_clip(f"{it.label}: {it.verdict_text}", width))
    families: dict[tuple[str, str], list] = {}
    for it in report.items:
        if it.family is not None and it.family.member:
            families.setdefault((it.tier, it.family.name), []).append(it)
    for (tier, name), items in families.items():
        f = items[0].family
        lines.append(_clip(f"family {name}: {f.size} items, each tested at alpha/{f.size} = {fmt_num(f.alpha)}; "
                           f"{len(items)} in this run (docs/statistics.md)", width))
    skipped = total["skipped"]
    if skipped:
        lines.append(_clip(f"{skipped} skipped item{'s' if skipped != 1 else ''}: reasons in report.md", width))
    return "\n".join(line.rstrip() for line in lines) + "\n"
