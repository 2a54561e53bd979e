"""Assemble report.json from the items of a run (Holm-adjusted over the whole family) and write it safely."""

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


def build_report(items: list[dict[str, Any]], *, command: str) -> dict[str, Any]:
    """Order items by node id, adjust every expectation's p-value with Holm over all of them, and set each
    item's headline ``p_holm``."""
    items = sorted((json.loads(json.dumps(i)) for i in items), key=lambda i: i["nodeid"])
    refs = [(i, j) for i, it in enumerate(items) for j, _ in enumerate(it.get("expectations", []))]
    ps = [items[i]["expectations"][j].get("p_value") for i, j in refs]
    adjusted = holm([p if isinstance(p, (int, float)) and p is not None else float("nan") for p in ps]) if refs else []
    for (i, j), p in zip(refs, adjusted):
        items[i]["expectations"][j]["p_holm"] = None if math.isnan(p) else float(p)
    for it in items:
        exps = it.get("expectations") or []
        head = next((e for e in exps if e.get("label") and e.get("measured") == it.get("measured")
                     and e.get("metric") == it.get("metric")), None)
        it["p_holm"] = head.get("p_holm") if head else None
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
