"""The comparison mini-language of ``expect[].compare``: a linear contrast of arm means and a relation.

``kl - independent > 0``, ``kl > independent``, ``closer_kl > 0.5``, ``ind_vs_ind ~= 0.5``,
``kl[race3] - independent[race3] < kl[others] - independent[others]``, ``distilled > independent``.
It is parsed into ``lhs - rhs`` = Σ coef·mean(arm[qualifier]) + constant, compared with 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDERS = ("distilled", "{method}")
PROBE_ARMS = ("ind_vs_ind",)  # arms a probe makes itself (localisation's control)

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<ref>\{method\}|[A-Za-z_][A-Za-z0-9_*]*)(?:\[(?P<qual>[^\]\s]+)\])?"
    r"|(?P<op>~=|>|<)|(?P<sign>[-+])|(?P<star>\*))"
)


@dataclass(frozen=True)
class Ref:
    arm: str
    qualifier: str | None = None

    def metric(self, metric: str) -> str:
        return f"{metric}/{self.qualifier}" if self.qualifier else metric

    def __str__(self) -> str:
        return f"{self.arm}[{self.qualifier}]" if self.qualifier else self.arm


@dataclass(frozen=True)
class Comparison:
    """``Σ coef·ref + constant  op  0``."""

    op: str  # ">", "<", "~="
    terms: tuple[tuple[float, Ref], ...]
    constant: float

    def refs(self) -> list[Ref]:
        return [r for _, r in self.terms]

    def substitute(self, placeholder_value: str) -> "Comparison":
        terms = tuple(
            (c, Ref(placeholder_value, r.qualifier) if r.arm in PLACEHOLDERS else r) for c, r in self.terms
        )
        return Comparison(self.op, terms, self.constant)


def _tokens(text: str) -> list[tuple[str, str, str | None]]:
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse comparison '{text}' at '{text[pos:]}'")
        kind = next(k for k in ("num", "ref", "op", "sign", "star") if m.group(k) is not None)
        out.append((kind, m.group(kind), m.group("qual")))
        pos = m.end()
    return out


def _side(tokens: list, text: str) -> tuple[list[tuple[float, Ref]], float]:
    terms: list[tuple[float, Ref]] = []
    constant, i, sign, expect_term = 0.0, 0, 1.0, True
    while i < len(tokens):
        kind, val, qual = tokens[i]
        if kind == "sign":
            if not expect_term and terms is not None:
                sign, expect_term = (1.0 if val == "+" else -1.0), True
            else:
                sign *= 1.0 if val == "+" else -1.0
            i += 1
            continue
        if not expect_term:
            raise ValueError(f"unknown comparison '{text}': expected + or - before '{val}'")
        if kind == "num":
            if i + 2 < len(tokens) + 1 and i + 1 < len(tokens) and tokens[i + 1][0] == "star":
                if i + 2 >= len(tokens) or tokens[i + 2][0] != "ref":
                    raise ValueError(f"unknown comparison '{text}': '*' must be followed by an arm")
                terms.append((sign * float(val), Ref(tokens[i + 2][1], tokens[i + 2][2])))
                i += 3
            else:
                constant += sign * float(val)
                i += 1
        elif kind == "ref":
            terms.append((sign, Ref(val, qual)))
            i += 1
        else:
            raise ValueError(f"unknown comparison '{text}': unexpected '{val}'")
        sign, expect_term = 1.0, False
    if expect_term:
        raise ValueError(f"unknown comparison '{text}': a side is empty or ends with an operator")
    return terms, constant


def parse_compare(text: str) -> Comparison:
    """Parse ``lhs op rhs`` into ``lhs - rhs op 0``. Raises ValueError with a readable message."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty comparison")
    toks = _tokens(text)
    ops = [i for i, t in enumerate(toks) if t[0] == "op"]
    if len(ops) != 1:
        raise ValueError(f"unknown comparison '{text}': use exactly one of '>', '<', '~='")
    k = ops[0]
    lt, lc = _side(toks[:k], text)
    rt, rc = _side(toks[k + 1:], text)
    terms = tuple(lt) + tuple((-c, r) for c, r in rt)
    if not terms:
        raise ValueError(f"unknown comparison '{text}': it names no arm")
    return Comparison(toks[k][1], terms, lc - rc)


def check_names(expect, arms: list[str], teachers: list[str]) -> None:
    """Every arm named in ``expect.compare`` is a method arm, a teacher, a probe arm or a placeholder."""
    cmp = parse_compare(expect.compare)
    known = set(arms) | set(teachers) | set(PROBE_ARMS) | set(PLACEHOLDERS)
    for ref in cmp.refs():
        if ref.arm not in known:
            raise ValueError(
                f"unknown comparison '{expect.compare}': no arm '{ref.arm}'; arms: {', '.join(arms)}; "
                f"teachers: {', '.join(teachers)}"
            )
    if isinstance(expect.per, list):
        for name in expect.per:
            if name not in arms:
                raise ValueError(f"per: unknown arm '{name}'; arms: {', '.join(arms)}")


def expand(expect, distilled_arms: list[str]) -> list[tuple[str, Comparison]]:
    """(label, comparison) pairs: placeholders replaced by each distilled arm (``per: method`` or a list)."""
    cmp = parse_compare(expect.compare)
    uses = any(r.arm in PLACEHOLDERS for r in cmp.refs())
    if not uses:
        return [(expect.label or expect.compare, cmp)]
    names = expect.per if isinstance(expect.per, list) else distilled_arms
    out = []
    for name in names:
        label = re.sub(r"\{method\}|\bdistilled\b", name, expect.label or expect.compare)
        out.append((label, cmp.substitute(name)))
    return out
