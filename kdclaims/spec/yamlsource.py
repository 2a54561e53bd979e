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


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _SAFE_COLLECTION_TAGS:
        raise SpecError("", node.start_mark.line + 1, _dotted(path), f"tag {node.tag} is not allowed (safe YAML only)")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("", key_node.start_mark.line + 1, _dotted(path), "keys must be plain scalars")
            key = _scalar(key_node)
            if key == "<<":
                raise SpecError("", key_node.start_mark.line + 1, _dotted(path), "YAML merge keys are not supported; use include:")
            if key in out:
                raise SpecError("", key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, path + (i,), lines) for i, child in enumerate(node.value)]
    try:
        return _scalar(node)
    except yaml.constructor.ConstructorError as e:
        raise SpecError("", node.start_mark.line + 1, _dotted(path), f"not allowed: {e.problem}") from None


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


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

    Raises ``SpecError`` with the line of a syntax error, a disallowed tag, or a duplicate key.
    """
    file = Path(file)
    if text is None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise SpecError(file, None, "", f"cannot read: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise SpecError(file, None, "", f"not UTF-8 text: {e.reason}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(file, line, "", f"YAML syntax error: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise SpecError(file, None, "", f"YAML error: {e}") from e
    if node is None:
        return Source(file, None, {(): 1})
    lines: dict[Path_, int] = {}
    try:
        data = _walk(node, (), lines)
    except SpecError as e:
        e.file = str(file)
        raise SpecError(file, e.line, e.field, e.message) from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise SpecError(file, mark.line + 1 if mark else None, "", f"not allowed: {e.problem}") from e
    return Source(file, data, lines)
