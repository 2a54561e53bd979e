"""Registries: a dict from name to builder, so that a claim YAML can name models, data, methods and probes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Callable)


class UnknownName(KeyError):
    """A name that no builder is registered under; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class Registry(Generic[T]):
    """Name -> builder. ``@REG.register("name")`` adds one; ``REG.get(name)`` looks one up.

    A registry may also accept names by pattern (``fallback``): e.g. ``timm/<any timm name>``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = fn
            return fn

        return deco

    def register_prefix(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Names ``prefix + rest`` resolve through ``resolver(rest)``."""
        self._prefixes[prefix] = resolver

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        for prefix, resolver in self._prefixes.items():
            if name.startswith(prefix):
                return resolver(name[len(prefix):])
        raise UnknownName(self.kind, name, self.names())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._items or any(name.startswith(p) for p in self._prefixes)

    def names(self) -> list[str]:
        return sorted(self._items) + [p + "<name>" for p in sorted(self._prefixes)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
