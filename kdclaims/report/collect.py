"""Assemble report.json from the items of a run (Holm over each declared family, for information); write it safely."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from kdclaims import __version__
from kdclaims.atomic import atomic_write_text, remove_stale_temps
from kdclaims.stats import holm

REPORT_VERSION = 1


def _machine() -> dict[str, str]:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device}


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def family_holm(items: list[dict[str, Any]]) -> None:
    """For information beside the verdict: ``family.p_holm_run``, Holm over the items of each declared family in
    this run (one p per item; declared members that did not run count as p = 1). Verdicts do not use it: each
    item is decided when it finishes, at α/m (docs/statistics.md)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for it in items:
        fam = it.get("family") or {}
        if fam.get("member") and isinstance(fam.get("p"), (int, float)):
            groups.setdefault((it.get("tier", ""), fam["name"]), []).append(it)
    for members in groups.values():
        size = members[0]["family"]["size"]
        ps = [m["family"]["p"] for m in members] + [1.0] * max(0, size - len(members))
        for m, p in zip(members, holm(ps)):
            m["family"]["p_holm_run"] = float(p)


def build_report(items: list[dict[str, Any]], *, command: str) -> dict[str, Any]:
    """Order items by node id; each item's ``p_holm`` is its family-adjusted p (from its headline expectation);
    ``family.p_holm_run`` is Holm over the family's items in this run (``family_holm``)."""
    items = sorted((json.loads(json.dumps(i)) for i in items), key=lambda i: i["nodeid"])
    family_holm(items)
    for it in items:
        fam = it.get("family") or {}
        it["p_holm"] = fam.get("p_adjusted") if it.get("expectations") else None
    return _clean({
        "version": REPORT_VERSION,
        "kdclaims_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": _machine(),
        "items": items,
    })


def write_report(report: dict[str, Any], out_dir: Path, *, render: bool = True) -> list[Path]:
    """Write report.json atomically (always) and, when ``render``, report.md and report.html beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    path = out_dir / "report.json"
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=False))
    written = [path]
    if render:
        from kdclaims.report.render import render_all

        written += render_all(path, out_dir)
    return written
