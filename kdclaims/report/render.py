"""Load ``report.json`` (validated) and write ``report.md``, ``report.html`` and ``figures/<slug>.png`` beside it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from kdclaims.atomic import remove_stale_temps
from kdclaims.report.figures import figure_png
from kdclaims.report.html import render_html
from kdclaims.report.markdown import render_markdown
from kdclaims.report.schema import Report


class ReportError(ValueError):
    """A report file that cannot be read or does not match the schema; the message names the file and fields."""


def _loc(loc: tuple[int | str, ...]) -> str:
    """``("items", 3, "verdict")`` -> ``items[3].verdict``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _item_hint(data: object, loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int) and isinstance(data, dict):
        items = data.get("items")
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            nodeid = items[loc[1]].get("nodeid")
            if isinstance(nodeid, str):
                return f" (item {nodeid})"
    return ""


def parse_report(data: object, source: str = "<report>") -> Report:
    """Validate already-decoded JSON; a ``ReportError`` lists ``source: field: message`` per problem."""
    try:
        return Report.model_validate(data)
    except RecursionError:
        raise ReportError(f"{source}: nested too deeply to be a kdclaims report") from None
    except ValidationError as e:
        lines = [f"{source}: {_loc(err['loc'])}{_item_hint(data, err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ReportError(f"{source}: not a valid kdclaims report ({len(lines)} problem"
                          f"{'s' if len(lines) != 1 else ''})\n" + "\n".join(lines)) from None


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read and validate ``report.json``; errors name the file and the field (``file: items[3].verdict: ...``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ReportError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise ReportError(f"{path}: JSON nested too deeply to be a kdclaims report") from None
    return parse_report(data, str(path))


def _write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as ``report.json`` (indented; NaN and infinities become ``null``)."""
    return _write(Path(path), (report.model_dump_json(indent=2) + "\n").encode("utf-8"))


def render_all(report: Report | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/<item-slug>.png`` (items with a figure) into ``out_dir``.

    ``report`` is a ``Report`` or the path of a ``report.json``; ``out_dir`` defaults to that file's folder (it is
    required when a ``Report`` is given). ``report.json`` itself is not written here (see ``save_report``).
    Returns the written paths: report.md, report.html, then the figures in item order.
    """
    if isinstance(report, Report):
        if out_dir is None:
            raise ValueError("render_all: out_dir is required when a Report object is given")
        rep = report
    else:
        rep = load_report(report)
        out_dir = Path(report).parent if out_dir is None else out_dir
    out = Path(out_dir)
    remove_stale_temps(out)
    remove_stale_temps(out / "figures")
    slugs = rep.slugs()
    pngs = {slug: figure_png(item) for slug, item in zip(slugs, rep.items)}
    written = [
        _write(out / "report.md", render_markdown(rep).encode("utf-8")),
        _write(out / "report.html", render_html(rep, pngs).encode("utf-8")),
    ]
    written += [_write(out / "figures" / f"{slug}.png", png) for slug, png in pngs.items() if png is not None]
    return written
