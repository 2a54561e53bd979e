"""Safe YAML loading that remembers the line of every key, so errors can say ``file:line: field: message``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class SpecError(Exception):
    """One located problem in a claim file."""

    def __init__(self, file: Path | str, line: int | None, field: str, message: str):
        self.file, self.line, self.field, self.message = str(file), line, field, message
        super().__init__(self.format())

    def format(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        return f"{loc}: {self.field}: {self.message}" if self.field else f"{loc}: {self.message}"


class SpecErrors(Exception):
    """Several located problems; ``str()`` gives one line each."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("\n".join(e.format() for e in errors))


@dataclass
class Source:
    """A parsed YAML document with the 1-based line of each key path."""

    file: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path`` or of its nearest ancestor that exists in this file."""
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def exact_line(self, path: Path_) -> int | None:
        return self.lines.get(tuple(path))


_SAFE_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap"}
# libyaml's parser when PyYAML was built with it (about 10x faster): the same nodes and marks, other wordings
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64  # nesting of mappings/sequences; deeper input overflows the recursive composer
MAX_VALUES = 100_000  # values after expanding aliases: stops "billion laughs" documents


class _Walk:
    """State of one document walk: one safe constructor for its scalars, a value budget, the open nodes."""

    def __init__(self) -> None:
        self.constructor = yaml.constructor.SafeConstructor()
        self.values = 0
        self.open: set[int] = set()


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], state: _Walk) -> Any:
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    state.values += 1
    if state.values > MAX_VALUES:
        raise SpecError("", line, _dotted(path), f"more than {MAX_VALUES} values after expanding aliases")
    if len(path) > MAX_DEPTH:
        raise SpecError("", line, _dotted(path), f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if node.tag not in _SAFE_COLLECTION_TAGS:
            raise SpecError("", line, _dotted(path), f"tag {node.tag} is not allowed (safe YAML only)")
        if id(node) in state.open:
            raise SpecError("", line, _dotted(path), "an alias refers to a node that contains it (recursive alias)")
        state.open.add(id(node))
        try:
            return _walk_collection(node, path, lines, state)
        finally:
            state.open.discard(id(node))
    try:
        return _scalar(node, state)
    except yaml.constructor.ConstructorError as e:
        raise SpecError("", line, _dotted(path), f"not allowed: {e.problem}") from None
    except (ValueError, OverflowError, TypeError, AttributeError, KeyError) as e:  # 2024-02-30, !!int abc, !!timestamp x, !!bool maybe (KeyError), ...
        raise SpecError("", line, _dotted(path), f"invalid {_tag_name(node.tag)} value: {_short(e)}") from None


def _walk_collection(node: yaml.Node, path: Path_, lines: dict[Path_, int], state: _Walk) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, path + (i,), lines, state) for i, child in enumerate(node.value)]
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path), "keys must be plain scalars")
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path), "YAML merge keys are not supported; use include:")
        try:
            key = _scalar(key_node, state)
        except yaml.constructor.ConstructorError as e:
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path), f"not allowed: {e.problem}") from None
        except (ValueError, OverflowError, TypeError, AttributeError, KeyError) as e:
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path),
                            f"invalid {_tag_name(key_node.tag)} key: {_short(e)}") from None
        if key == "<<":
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path), "YAML merge keys are not supported; use include:")
        if key in out:
            raise SpecError("", key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")
        lines[path + (key,)] = key_node.start_mark.line + 1
        out[key] = _walk(value_node, path + (key,), lines, state)
    return out


def _tag_name(tag: str) -> str:
    return tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _short(e: Exception) -> str:
    text = str(e).split(";")[0]
    return text if len(text) <= 120 else text[:117] + "..."


def _scalar(node: yaml.Node, state: _Walk) -> Any:
    return state.constructor.construct_object(node, deep=True)


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def dotted(path: Path_) -> str:
    """``("expect", 0, "compare")`` -> ``expect[0].compare``."""
    return _dotted(tuple(path))


def load_source(file: Path | str, text: str | None = None) -> Source:
    """Parse one YAML file with SafeLoader rules (no Python tags), recording key lines.

    Raises ``SpecError`` with the line of a syntax error, a disallowed tag, a duplicate key, nesting deeper
    than ``MAX_DEPTH``, a recursive alias or more than ``MAX_VALUES`` values after expanding aliases; the line
    is always one that exists in the file (an error at the end of the file points at the construct left open).
    """
    file = Path(file)
    if text is None:
        try:
            raw = file.read_bytes()
        except OSError as e:
            raise SpecError(file, None, "", f"cannot read: {e.strerror or e}") from e
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(file, raw.count(b"\n", 0, e.start) + 1, "", f"not UTF-8 text: {e.reason}") from None
    last = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    try:
        _check_depth(text, file, last)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        line = _mark_line(e, last)
        raise SpecError(file, line, "", f"YAML syntax error: {_syntax_message(e, line)}") from None
    except yaml.reader.ReaderError as e:
        before = text.encode("utf-8")[: e.position] if _LOADER is not yaml.SafeLoader else text[: e.position]
        line = min(before.count(b"\n" if isinstance(before, bytes) else "\n") + 1, last)
        raise SpecError(file, line, "", f"YAML error: {e.reason} ({_char(e.character)})") from None
    except yaml.YAMLError as e:
        raise SpecError(file, 1, "", f"YAML error: {e}") from None
    if node is None:
        return Source(file, None, {(): 1})
    lines: dict[Path_, int] = {}
    try:
        data = _walk(node, (), lines, _Walk())
    except SpecError as e:
        raise SpecError(file, min(e.line or 1, last), e.field, e.message) from None
    return Source(file, data, lines)


def _check_depth(text: str, file: Path, last: int) -> None:
    """Reject nesting deeper than ``MAX_DEPTH`` from the (iterative) event stream, before composing."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = min(event.start_mark.line + 1, last)
                raise SpecError(file, line, "", f"YAML nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _mark_line(e: yaml.MarkedYAMLError, last: int) -> int:
    """The problem's line; when that is past the last line (end of file), the line of the open construct."""
    line = e.problem_mark.line + 1 if e.problem_mark else None
    if (line is None or line > last) and e.context_mark is not None:
        line = e.context_mark.line + 1
    return min(max(line or 1, 1), last)


def _syntax_message(e: yaml.MarkedYAMLError, line: int) -> str:
    """The problem, plus where the construct it belongs to started when that is not the reported ``line``."""
    msg = e.problem or e.context or "invalid YAML"
    if e.problem and e.context and e.context_mark and e.context_mark.line + 1 != line:
        msg += f" ({e.context} started at line {e.context_mark.line + 1})"
    return msg


def _char(c: Any) -> str:
    return f"character #x{c:04x}" if isinstance(c, int) else f"character {c!r}"
