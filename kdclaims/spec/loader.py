"""Load claim files: includes, tier and setting overrides, schema and registry checks, located errors."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdclaims.spec.includes import IncludeBudget, claims_root, resolve_include
from kdclaims.spec.schema import TIERS, Claim
from kdclaims.spec.yamlsource import Source, SpecError, SpecErrors, dotted, load_source

TIER_ONLY_KEYS = {"absent", "needs"}
MAX_INCLUDE_DEPTH = 8


@dataclass
class ClaimItem:
    """One (tier, setting) of a claim file: a validated ``Claim``, or a reason the tier is absent."""

    file: Path
    claim_id: str
    tier: str
    setting: str | None
    claim: Claim | None = None
    absent: str | None = None
    line: int = 1

    @property
    def name(self) -> str:
        return f"{self.tier}-{self.setting}" if self.setting else self.tier


@dataclass
class ClaimFile:
    path: Path
    claim_id: str
    items: list[ClaimItem] = field(default_factory=list)


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key (recursively); anything else in ``override`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def is_claim_file(path: Path) -> bool:
    """Claim files are ``*.yaml``/``*.yml`` not under a ``_``-prefixed name (those are include-only bases)."""
    return path.suffix in (".yaml", ".yml") and not any(p.startswith("_") for p in path.parts[-1:]) and not any(
        p.startswith("_") for p in path.parent.parts[-1:]
    )


def _load_with_includes(
    path: Path, depth: int = 0, seen: tuple[Path, ...] = (), budget: IncludeBudget | None = None
) -> tuple[dict, list[Source]]:
    budget = budget or IncludeBudget(claims_root(path))
    src = load_source(path)
    if src.data is None:
        raise SpecError(path, 1, "", "empty file")
    if not isinstance(src.data, dict):
        raise SpecError(path, 1, "", f"a claim file is a mapping, got {type(src.data).__name__}")
    data = dict(src.data)
    sources = [src]
    inc = data.pop("include", None)
    if inc is None:
        return data, sources
    incs = [inc] if isinstance(inc, str) else inc
    line = src.line_of(("include",))
    if not isinstance(incs, list) or not all(isinstance(i, str) for i in incs):
        raise SpecError(path, line, "include", "must be a file name or a list of them")
    merged: dict = {}
    for i in incs:
        target = resolve_include(path, i, budget.root, line)
        if depth >= MAX_INCLUDE_DEPTH or target in seen:
            raise SpecError(path, line, "include", f"include cycle or too deep at '{i}'")
        budget.charge(target, path, line, i)
        inc_data, inc_sources = _load_with_includes(target, depth + 1, seen + (Path(os.path.realpath(path)),), budget)
        merged = deep_merge(merged, inc_data)
        sources.extend(inc_sources)
    return deep_merge(merged, data), sources


def _field_path(loc: Iterable) -> tuple:
    return tuple(p for p in loc if not (isinstance(p, str) and (p.startswith("function-") or p in ("str", "dict", "list"))))


_DOTTED_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\]|\.[A-Za-z_][\w]*)*): (.*)$", re.S)


def _parse_dotted(text: str) -> tuple:
    out: list = []
    for m in re.finditer(r"([A-Za-z_]\w*)|\[(\d+)\]", text):
        out.append(m.group(1) if m.group(1) else int(m.group(2)))
    return tuple(out)


class _Locator:
    """Finds the file and line of a field of a resolved (tier, setting) document."""

    def __init__(self, sources: list[Source], tier: str, setting: str | None):
        self.sources, self.tier, self.setting = sources, tier, setting

    def _prefixes(self) -> list[tuple]:
        prefixes: list[tuple] = []
        if self.setting:
            prefixes += [("tiers", self.tier, "settings", self.setting), ("settings", self.setting)]
        return prefixes + [("tiers", self.tier), ()]

    def exact(self, path: tuple) -> tuple[Path, int] | None:
        """The file and line where ``path`` itself is written (tier/setting blocks first), if anywhere."""
        for src in self.sources:
            for pre in self._prefixes():
                line = src.exact_line(pre + tuple(path))
                if line is not None:
                    return src.file, line
        return None

    def locate(self, path: tuple) -> tuple[Path, int | None]:
        prefixes = self._prefixes()
        found = self.exact(path)
        if found is not None:
            return found
        # nearest ancestor in the main file, preferring the tier block
        main = self.sources[0]
        for pre in prefixes:
            p = pre + tuple(path)
            while len(p) > len(pre):
                p = p[:-1]
                if main.exact_line(p) is not None and len(p) > len(pre):
                    return main.file, main.exact_line(p)
        return main.file, main.line_of(tuple(path))


def _validation_errors(err: ValidationError, loc: _Locator) -> list[SpecError]:
    out = []
    for e in err.errors():
        path = _field_path(e["loc"])
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        m = _DOTTED_PREFIX.match(msg)
        if m:  # a validator that names the field it is about: "expect[0].compare: ..."
            path, msg = path + _parse_dotted(m.group(1)), m.group(2)
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        file, line = loc.locate(path)
        out.append(SpecError(file, line, dotted(path), msg))
    return out


def _registry_errors(claim: Claim, loc: _Locator) -> list[SpecError]:
    from kdclaims.registries import DATASETS, METHODS, MODELS, PROBES, load_all

    load_all()
    checks: list[tuple[tuple, str, Any]] = []
    for name, t in claim.setup.all_teachers().items():
        base = ("setup", "teacher") if name == "teacher" else ("setup", "teachers", name)
        checks.append((base + ("arch",), t.arch, MODELS))
        if t.data is not None:
            checks.append((base + ("data", "name"), t.data.name, DATASETS))
    checks.append((("setup", "student", "arch"), claim.setup.student.arch, MODELS))
    checks.append((("setup", "data", "name"), claim.setup.data.name, DATASETS))
    for i, m in enumerate(claim.setup.methods):
        checks.append((("setup", "methods", i, "method"), m.method, METHODS))
    checks.append((("probe", "name"), claim.probe.name, PROBES))
    for i, extra in enumerate(claim.extra_probes):
        checks.append((("extra_probes", i, "name"), extra.name, PROBES))
    if claim.probe.data is not None:
        checks.append((("probe", "data", "name"), claim.probe.data.name, DATASETS))
    out = []
    for path, name, reg in checks:
        if name not in reg:
            file, line = loc.locate(path)
            out.append(SpecError(file, line, dotted(path), f"unknown {reg.kind} '{name}'; known: {', '.join(reg.names())}"))
    return out + _param_errors(claim, loc) + _weights_errors(claim, loc) + _model_param_errors(claim, loc)


def _unknown_params(loc: _Locator, base: tuple, given: dict, accepted: list[str], what: str) -> list[SpecError]:
    """One error per parameter a builder does not accept, at its own line (written folded or under params:)."""
    out = []
    for k in sorted(set(given) - set(accepted), key=str):
        folded, nested = base + (k,), base + ("params", k)
        path = nested if loc.exact(nested) and not loc.exact(folded) else folded
        file, line = loc.locate(path)
        out.append(SpecError(file, line, dotted(path), f"unknown parameter of {what}; accepted: {', '.join(accepted) or 'none'}"))
    return out


def _param_errors(claim: Claim, loc: _Locator) -> list[SpecError]:
    """Dataset and method parameters the registered builders do not take (a typo, or a path such as ``root:``)."""
    from kdclaims.data import dataset_params
    from kdclaims.registries import DATASETS, METHODS

    datas: list[tuple[tuple, Any]] = [(("setup", "data"), claim.setup.data)]
    for name, t in claim.setup.all_teachers().items():
        datas.append(((("setup", "teacher") if name == "teacher" else ("setup", "teachers", name)) + ("data",), t.data))
    datas.append((("probe", "data"), claim.probe.data))
    datas += [(("extra_probes", i, "data"), p.data) for i, p in enumerate(claim.extra_probes)]
    out = []
    for base, spec in datas:
        if spec is not None and spec.name in DATASETS:
            out += _unknown_params(loc, base, spec.params, dataset_params(spec.name), f"dataset '{spec.name}'")
    for i, m in enumerate(claim.setup.methods):
        accepted = getattr(METHODS.get(m.method), "accepted_params", None) if m.method in METHODS else None
        if accepted is not None:
            out += _unknown_params(loc, ("setup", "methods", i, "params"), m.params, list(accepted), f"method '{m.method}'")
    return out


def _model_param_errors(claim: Claim, loc: _Locator) -> list[SpecError]:
    """Model parameters that would read or download weights (timm's ``checkpoint_path``, ``pretrained``, ...):
    weights come only from ``weights:`` under --kd-weights."""
    from kdclaims.models import FORBIDDEN_PARAMS

    models = [(("setup", "student"), claim.setup.student)]
    for name, t in claim.setup.all_teachers().items():
        models.append(((("setup", "teacher") if name == "teacher" else ("setup", "teachers", name)), t))
    out = []
    for base, spec in models:
        params = spec.params or {}
        other = {k: v for k, v in params.items() if k not in FORBIDDEN_PARAMS}  # those get their own error
        out += _builder_params(loc, base, spec.arch, other)
        for k in sorted(set(params) & set(FORBIDDEN_PARAMS)):
            folded, nested = base + (k,), base + ("params", k)
            path = nested if loc.exact(nested) and not loc.exact(folded) else folded
            file, line = loc.locate(path)
            out.append(SpecError(file, line, dotted(path), "would load or download weights behind the store; "
                                 "name weights with 'weights:' (read from --kd-weights)"))
    return out


def _builder_params(loc: _Locator, base: tuple, arch: str, params: dict) -> list[SpecError]:
    """Unknown parameters of a model whose builder lists its options (one without ``**kw``; the torchvision and
    timm builders pass theirs on, so only their weight-loading options are checked)."""
    import inspect

    from kdclaims.registries import MODELS

    if not params or arch not in MODELS or "/" in arch:
        return []
    sig = inspect.signature(MODELS.get(arch))
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    accepted = [n for n in sig.parameters if n not in ("num_classes", "in_chans", "mean", "std")]
    return _unknown_params(loc, base, params, accepted, f"model '{arch}'")


def _weights_errors(claim: Claim, loc: _Locator) -> list[SpecError]:
    """A relative weights path may not leave the ``--kd-weights`` folder through ``..`` (as in
    ``kdclaims.models.weights.resolve_weights``, which refuses it at run time)."""
    out = []
    for name, t in claim.setup.all_teachers().items():
        ref = t.weights
        if not ref or ref.startswith("torchvision/"):
            continue
        raw = ref[len("file:"):] if ref.startswith("file:") else ref
        normal = os.path.normpath(raw)
        if not os.path.isabs(os.path.expanduser(raw)) and (normal == ".." or normal.startswith(".." + os.sep)):
            path = (("setup", "teacher") if name == "teacher" else ("setup", "teachers", name)) + ("weights",)
            file, line = loc.locate(path)
            out.append(SpecError(file, line, dotted(path), f"weights path '{raw}' leaves the --kd-weights folder"))
    return out


def _tier_docs(doc: dict, sources: list[Source]) -> Iterator[tuple[str, str | None, dict | None, str | None]]:
    """(tier, setting, resolved document or None, absent reason) for each item of the file."""
    tiers = doc.get("tiers") or {}
    if not isinstance(tiers, dict):
        raise SpecError(sources[0].file, sources[0].line_of(("tiers",)), "tiers", "must be a mapping of smoke/cpu/gpu")
    for t in tiers:
        if t not in TIERS:
            raise SpecError(sources[0].file, sources[0].line_of(("tiers", t)), f"tiers.{t}", f"unknown tier; tiers: {', '.join(TIERS)}")
    base = {k: v for k, v in doc.items() if k != "tiers"}
    for tier in TIERS:
        if tier != "gpu" and tier not in tiers:
            continue
        over = tiers.get(tier) or {}
        if not isinstance(over, dict):
            raise SpecError(sources[0].file, sources[0].line_of(("tiers", tier)), f"tiers.{tier}", "must be a mapping")
        if "absent" in over:
            yield tier, None, None, str(over["absent"])
            continue
        resolved = deep_merge(base, {k: v for k, v in over.items() if k != "absent"})
        settings = resolved.pop("settings", None)
        if settings is None:
            yield tier, None, resolved, None
            continue
        if not isinstance(settings, dict) or not settings:
            raise SpecError(sources[0].file, sources[0].line_of(("settings",)), "settings", "must be a non-empty mapping name -> overrides")
        for name, s_over in settings.items():
            if s_over is not None and not isinstance(s_over, dict):
                main = sources[0]
                line = main.exact_line(("tiers", tier, "settings", name)) or main.line_of(("settings", name))
                raise SpecError(main.file, line, f"settings.{name}", "must be a mapping of overrides (or empty)")
            yield tier, str(name), deep_merge(resolved, s_over or {}), None


def load_claim_file(path: Path | str) -> ClaimFile:
    """Validate every (tier, setting) of one claim file. Raises ``SpecErrors`` listing each located problem."""
    path = Path(path)
    try:
        doc, sources = _load_with_includes(path)
    except SpecError as e:
        raise SpecErrors([e]) from None
    claim_id = doc.get("id") if isinstance(doc.get("id"), str) else path.stem
    cf = ClaimFile(path, claim_id)
    errors: list[SpecError] = []
    seen: set[str] = set()
    try:
        tier_docs = list(_tier_docs(doc, sources))
    except SpecError as e:
        raise SpecErrors([e]) from None
    for tier, setting, resolved, absent in tier_docs:
        line = sources[0].line_of(("tiers", tier)) or 1
        item = ClaimItem(path, claim_id, tier, setting, absent=absent, line=line)
        if resolved is not None:
            loc = _Locator(sources, tier, setting)
            resolved = {**resolved, "tier": tier, "setting": setting}
            try:
                item.claim = Claim.model_validate(resolved)
            except ValidationError as err:
                for e in _validation_errors(err, loc):
                    if e.format() not in seen:
                        seen.add(e.format())
                        errors.append(e)
                continue
            for e in _registry_errors(item.claim, loc):
                if e.format() not in seen:
                    seen.add(e.format())
                    errors.append(e)
        cf.items.append(item)
    if errors:
        raise SpecErrors(errors)
    return cf


def find_claim_files(paths: Iterable[Path | str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_claim_file(q) and not any(
                part.startswith("_") or part.startswith(".") for part in q.relative_to(p).parts)))
        elif p.exists():
            out.append(p)
        else:
            out.append(p)  # reported as unreadable by load_source
    return out


def load_claims(paths: Iterable[Path | str]) -> tuple[list[ClaimFile], list[SpecError]]:
    """Load many files; every problem is collected (one broken file never hides the others).

    Duplicate claim ids across files are errors located at the ``id:`` line of the later file.
    """
    files: list[ClaimFile] = []
    errors: list[SpecError] = []
    first: dict[str, Path] = {}
    for path in find_claim_files(paths):
        try:
            cf = load_claim_file(path)
        except SpecErrors as e:
            errors.extend(e.errors)
            continue
        except (ValueError, TypeError, OSError, RecursionError) as e:  # a bug must not hide the other files
            errors.append(SpecError(path, None, "", f"could not be validated ({type(e).__name__}: {e})"))
            continue
        if cf.claim_id in first:
            line = load_source(path).line_of(("id",))
            errors.append(SpecError(path, line, "id", f"duplicate claim id '{cf.claim_id}' (also in {first[cf.claim_id]})"))
            continue
        first[cf.claim_id] = path
        files.append(cf)
    return files, errors
