"""Shared pieces of the reliability and security tests: claim-file mutations, located-error checks, tiny training
runs for the checkpoint store, forked worker processes and malicious pickles.

Workers are forked (``multiprocessing`` "fork" context) rather than started as fresh interpreters: a fresh Python
spends 10-20 s importing torch and the registries on this 2-core machine, a fork inherits them. Each worker sets
``torch.set_num_threads(1)``; PyTorch resets its intra-op pool in forked children.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CLAIM_REL = "accuracy/accuracy-gain.yaml"
FILES = (CLAIM_REL, "_base/imagenet.yaml", "_base/tiers.yaml", "_base/tuned-cpu.yaml")  # the claim and its includes
ORIGINAL = {rel: (ROOT / "claims" / rel).read_text(encoding="utf-8") for rel in FILES}
PARSED = {rel: yaml.safe_load(text) for rel, text in ORIGINAL.items()}
MARKER_NAME = "PWNED"  # what an executed Python tag would create


# ------------------------------------------------------------------------------------------- claim trees
def write_claim_tree(dst: Path, changes: dict[str, str | bytes] | None = None) -> Path:
    """Write the valid claim and its includes under ``dst/claims`` (the ``_base/`` layout kept), with ``changes``
    (relative name -> new content) applied; returns the claim file's path."""
    changes = changes or {}
    for rel in FILES:
        path = dst / "claims" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        content = changes.get(rel, ORIGINAL[rel])
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return dst / "claims" / CLAIM_REL


def line_count(content: str | bytes) -> int:
    """Lines as an editor numbers them (``\\n``-separated; a final line without newline counts; at least 1)."""
    nl = b"\n" if isinstance(content, bytes) else "\n"
    return max(1, content.count(nl) + (0 if content.endswith(nl) or not content else 1))


def location_problems(errors: list, files: dict[Path, str | bytes]) -> list[str]:
    """Why each error is not properly located: its file must be one of ``files``, its line at least 1 and at most
    the file's last line, and it must say what is wrong (a message, and a field or a whole-file message)."""
    out = []
    known = {p.resolve(): c for p, c in files.items()}
    for e in errors:
        f = Path(e.file).resolve()
        if f not in known:
            out.append(f"{e.format()}: not one of the claim files")
            continue
        if not isinstance(e.line, int) or not 1 <= e.line <= line_count(known[f]):
            out.append(f"{e.format()}: line {e.line!r} is not in the file ({line_count(known[f])} lines)")
        if not e.message or not e.message.strip():
            out.append(f"{e.format()}: empty message")
    return out


# --------------------------------------------------------------------------------------------- mutations
@dataclass(frozen=True)
class Mutation:
    """One change to one of the three files. ``expect``: "valid" (must load without errors), "invalid" (must give
    at least one located error) or "any" (either, but never a crash)."""

    kind: str
    target: str
    expect: str
    content: str | bytes
    detail: str = ""


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=100)


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple, value: Any) -> Any:
    data = json.loads(json.dumps(data))  # a deep copy (the originals are JSON-like)
    _get(data, path[:-1])[path[-1]] = value
    return data


def _drop(data: Any, path: tuple) -> Any:
    data = json.loads(json.dumps(data))
    parent = _get(data, path[:-1])
    del parent[path[-1]]
    return data


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


ALL_PATHS = [(rel, p) for rel in FILES for p in _paths(PARSED[rel])]
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(IDENT, inner, max_size=3),
    max_leaves=6,
)


def _structural(kind: str, expect: str, target: str, path: tuple, value: Any, drop: bool = False) -> Mutation:
    data = _drop(PARSED[target], path) if drop else _set(PARSED[target], path, value)
    detail = f"{'drop' if drop else 'set'} {'.'.join(map(str, path))}" + ("" if drop else f" = {value!r}")
    return Mutation(kind, target, expect, _dump(data), detail)


def _col0_lines(rel: str) -> list[int]:
    """Indexes of lines that start a top-level key (column 0, not a comment)."""
    return [i for i, line in enumerate(ORIGINAL[rel].splitlines()) if line[:1].isalpha()]


def _edit_lines(rel: str, fn: Callable[[list[str]], list[str]]) -> str:
    return "\n".join(fn(ORIGINAL[rel].splitlines())) + "\n"


# -- valid
@st.composite
def valid_mutations(draw) -> Mutation:
    kind = draw(st.sampled_from(["seeds", "resamples", "alpha", "title", "statement", "probe_images", "comment",
                                 "reorder", "tag", "method_param", "epochs"]))
    main, tiers, imagenet = FILES[0], FILES[2], FILES[1]
    if kind == "seeds":
        seeds = draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4, unique=True))
        return _structural(kind, "valid", imagenet, ("setup", "seeds"), seeds)
    if kind == "resamples":
        return _structural(kind, "valid", tiers, ("significance", "resamples"), draw(st.integers(100, 10**6)))
    if kind == "alpha":
        return _structural(kind, "valid", tiers, ("significance", "alpha"), draw(st.floats(1e-4, 0.4999)))
    if kind == "title":
        return _structural(kind, "valid", main, ("title",), draw(TEXT))
    if kind == "statement":
        return _structural(kind, "valid", main, ("statement",), draw(st.text(min_size=10, max_size=80).filter(
            lambda s: all(not ("\ud800" <= c <= "\udfff") for c in s))))
    if kind == "probe_images":
        target, path = draw(st.sampled_from([(imagenet, ("probe", "images")),
                                             (tiers, ("tiers", "smoke", "probe", "images"))]))
        return _structural(kind, "valid", target, path, draw(st.integers(2, 10**6)))
    if kind == "comment":
        target = draw(st.sampled_from(FILES))
        i = draw(st.sampled_from(_col0_lines(target)))
        note = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
        return Mutation(kind, target, "valid", _edit_lines(target, lambda ls: ls[:i] + [f"# {note}"] + ls[i:]))
    if kind == "reorder":
        keys = draw(st.permutations(list(PARSED[main])))
        return Mutation(kind, main, "valid", _dump({k: PARSED[main][k] for k in keys}), f"order {keys}")
    if kind == "tag":
        return _structural(kind, "valid", main, ("tags",), PARSED[main]["tags"] + [draw(IDENT)])
    if kind == "method_param":
        name = draw(st.sampled_from(["gamma", "alpha", "tau"]))
        return _structural(kind, "valid", main, ("setup", "methods", 1, "params", name),
                           draw(st.floats(0.001, 100.0)))
    return _structural(kind, "valid", tiers, ("tiers", "smoke", "setup", "teacher", "recipe", "epochs"),
                       draw(st.integers(0, 10_000)))


# -- invalid
REQUIRED = ("id", "title", "paper", "statement", "setup", "probe", "expect")
WRONG_TYPE = {
    "title": st.one_of(st.integers(), st.lists(IDENT, max_size=2), st.dictionaries(IDENT, IDENT, max_size=2),
                       st.none(), st.booleans()),
    "statement": st.one_of(st.integers(), st.lists(IDENT, max_size=2), st.none(), st.just("too short")),
    "paper": st.one_of(st.integers(), IDENT, st.lists(IDENT, max_size=2), st.none()),
    "setup": st.one_of(st.integers(), IDENT, st.lists(st.integers(), max_size=2)),
    "expect": st.one_of(st.integers(), IDENT, st.dictionaries(IDENT, IDENT, max_size=2), st.none(), st.just([])),
    "version": st.one_of(st.integers(max_value=0), IDENT, st.just(2.5)),
    "id": st.one_of(st.integers(), st.just("Not A Valid Id"), st.just("/leading-slash"), st.lists(IDENT, max_size=1)),
}
REGISTRY_NAMES = [
    (FILES[0], ("setup", "student", "arch")),
    (FILES[0], ("probe", "name")),
    (FILES[0], ("setup", "methods", 1, "name")),
    (FILES[1], ("setup", "data", "name")),
    (FILES[2], ("tiers", "smoke", "setup", "teacher", "arch")),
    (FILES[2], ("tiers", "cpu", "setup", "student", "arch")),
]
ABSURD = [
    (FILES[1], ("setup", "seeds"), st.lists(st.integers(max_value=-1), min_size=1, max_size=3)),
    (FILES[1], ("setup", "seeds"), st.integers(0, 5).map(lambda s: [s, s])),
    (FILES[1], ("setup", "seeds"), st.just([])),
    (FILES[1], ("setup", "seeds"), st.lists(st.integers(2**31, 10**30), min_size=1, max_size=2)),
    (FILES[2], ("significance", "alpha"),
     st.sampled_from([0, 0.5, 1, 1.5, -0.1, 1e9, math.nan, math.inf, -math.inf])),
    (FILES[2], ("significance", "resamples"), st.sampled_from([0, 99, -5, 10**6 + 1, 10**12, 10**30, 2.5])),
    (FILES[2], ("tiers", "smoke", "probe", "images"), st.integers(-(10**9), 1)),
    (FILES[1], ("probe", "images"), st.integers(-(10**9), 1)),
    (FILES[2], ("tiers", "smoke", "setup", "recipe", "epochs"), st.sampled_from([-1, 10_001, 10**9, 1.5])),
    (FILES[2], ("tiers", "smoke", "setup", "recipe", "batch_size"), st.integers(-(10**6), 0)),
    (FILES[2], ("tiers", "smoke", "setup", "recipe", "lr"), st.sampled_from([0, -1, -1e-9, math.nan])),
    (FILES[1], ("setup", "recipe", "momentum"), st.sampled_from([1.0, 1.5, -0.1])),
    (FILES[2], ("tiers", "smoke", "setup", "teacher", "seed"), st.integers(max_value=-1)),
    (FILES[0], ("version",), st.integers(max_value=0)),
]
PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/object/new:os.system ['touch {m}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{m}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:builtins.dict {{}}",
    "!python/object/apply:os.system ['touch {m}']",
    "!!binary aGVsbG8=",  # a safe tag, but bytes are no valid claim value: checked below only as 'any'
    "!custom_tag x",
]


@st.composite
def invalid_mutations(draw, marker: str = MARKER_NAME) -> Mutation:
    kind = draw(st.sampled_from(["drop_required", "wrong_type", "unknown_name", "absurd", "python_tag", "unclosed",
                                 "tab", "duplicate_key", "control_char", "bad_utf8", "unknown_key",
                                 "missing_include", "include_cycle", "bad_override"]))
    main = FILES[0]
    if kind == "drop_required":
        return _structural(kind, "invalid", main, (draw(st.sampled_from(REQUIRED)),), None, drop=True)
    if kind == "wrong_type":
        key = draw(st.sampled_from(sorted(WRONG_TYPE)))
        return _structural(kind, "invalid", main, (key,), draw(WRONG_TYPE[key]))
    if kind == "unknown_name":
        target, path = draw(st.sampled_from(REGISTRY_NAMES))
        return _structural(kind, "invalid", target, path, "zz_" + draw(IDENT))
    if kind == "absurd":
        target, path, values = draw(st.sampled_from(ABSURD))
        return _structural(kind, "invalid", target, path, draw(values))
    if kind == "python_tag":  # only files with a one-line `key: value` to replace
        target = draw(st.sampled_from([f for f in FILES if any(map(_is_key_line, ORIGINAL[f].splitlines()))]))
        lines = ORIGINAL[target].splitlines()
        keyed = [i for i, line in enumerate(lines) if _is_key_line(line)]
        i = draw(st.sampled_from(keyed))
        tag = draw(st.sampled_from([t for t in PYTHON_TAGS if "binary" not in t])).format(m=marker)
        key = lines[i].split(":", 1)[0]
        new = _edit_lines(target, lambda ls: ls[:i] + [f"{key}: {tag}"] + ls[i + 1:])
        return Mutation(kind, target, "invalid", new, f"line {i + 1}: {key}: {tag}")
    if kind == "unclosed":
        target = draw(st.sampled_from(FILES))
        i = draw(st.sampled_from(_col0_lines(target)))
        opener = draw(st.sampled_from(["zz: [1, 2", "zz: {a: 1", "zz: 'open", 'zz: "open', "zz: [{a: 1}"]))
        return Mutation(kind, target, "invalid", _edit_lines(target, lambda ls: ls[:i] + [opener] + ls[i:]), opener)
    if kind == "tab":
        target = draw(st.sampled_from(FILES))
        i = draw(st.sampled_from(_col0_lines(target)))
        return Mutation(kind, target, "invalid", _edit_lines(target, lambda ls: ls[:i] + ["\t" + ls[i]] + ls[i + 1:]),
                        f"tab before line {i + 1}")
    if kind == "duplicate_key":
        target = draw(st.sampled_from(FILES))
        i = draw(st.sampled_from(_col0_lines(target)))
        return Mutation(kind, target, "invalid", _edit_lines(target, lambda ls: ls[:i + 1] + [ls[i]] + ls[i + 1:]),
                        f"line {i + 1} twice")
    if kind == "control_char":
        target = draw(st.sampled_from(FILES))
        text = ORIGINAL[target]
        pos = draw(st.integers(0, len(text)))
        ch = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\ufffe"]))
        return Mutation(kind, target, "invalid", text[:pos] + ch + text[pos:], f"{ch!r} at {pos}")
    if kind == "bad_utf8":
        target = draw(st.sampled_from(FILES))
        raw = ORIGINAL[target].encode()
        pos = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
        return Mutation(kind, target, "invalid", raw[:pos] + junk + raw[pos:], f"{junk!r} at {pos}")
    if kind == "unknown_key":
        where = draw(st.sampled_from([(), ("setup",), ("significance",), ("paper",)]))
        key = "zz_" + draw(IDENT)
        if where == ("significance",):
            return _structural(kind, "invalid", FILES[2], where + (key,), 1)
        data = json.loads(json.dumps(PARSED[main]))
        _get(data, where)[key] = draw(ANY_VALUE)
        return Mutation(kind, main, "invalid", _dump(data), f"{'.'.join(where + (key,))}")
    if kind == "bad_override":  # a tier or setting block that is not a mapping (found by the slow fuzz)
        target, path = draw(st.sampled_from([(main, ("settings", k)) for k in PARSED[main]["settings"]]
                                            + [(main, ("tiers", t)) for t in PARSED[main]["tiers"]]))
        return _structural(kind, "invalid", target, path, draw(st.sampled_from([True, 1, "x", [1], 2.5])))
    if kind == "missing_include":
        return _structural(kind, "invalid", main, ("include", draw(st.integers(0, 1))), "_base/" + draw(IDENT) + ".yml")
    return _structural(kind, "invalid", FILES[2], ("include",), "../" + CLAIM_REL)


def _is_key_line(line: str) -> bool:
    """``key: value`` on one line (a simple key, not a comment, not a list item)."""
    s = line.strip()
    return bool(s) and s[0].isalpha() and ": " in s and s.split(":", 1)[0].replace("_", "").isalnum()


# -- anything
YAMLISH = st.text(st.sampled_from(list("[]{}:,-#&*!|>'\"%@? \t\nabc019.~") + ["é", "\u2603"]), min_size=1, max_size=8)


@st.composite
def random_mutations(draw) -> Mutation:
    kind = draw(st.sampled_from(["drop", "rename", "retype", "insert", "delete", "truncate", "indent", "tab_any",
                                 "swap_lines", "tag_any"]))
    if kind in ("drop", "rename", "retype"):
        target, path = draw(st.sampled_from(ALL_PATHS))
        if kind == "drop":
            return _structural(kind, "any", target, path, None, drop=True)
        if kind == "retype":
            return _structural(kind, "any", target, path, draw(ANY_VALUE))
        data = json.loads(json.dumps(PARSED[target]))
        parent = _get(data, path[:-1])
        if isinstance(parent, list):
            parent[path[-1]] = {draw(IDENT): parent[path[-1]]}
        else:
            new = draw(IDENT)
            items = [((new if k == path[-1] else k), v) for k, v in parent.items()]
            parent.clear()
            parent.update(items)  # a clash with an existing key keeps the later value
        return Mutation(kind, target, "any", _dump(data), f"rename {'.'.join(map(str, path))}")
    target = draw(st.sampled_from(FILES))
    text = ORIGINAL[target]
    lines = text.splitlines()
    if kind == "insert":
        pos = draw(st.integers(0, len(text)))
        ins = draw(YAMLISH)
        return Mutation(kind, target, "any", text[:pos] + ins + text[pos:], f"{ins!r} at {pos}")
    if kind == "delete":
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 40)))
        return Mutation(kind, target, "any", text[:a] + text[b:], f"delete {a}:{b}")
    if kind == "truncate":
        pos = draw(st.integers(0, len(text)))
        return Mutation(kind, target, "any", text[:pos], f"truncate at {pos}")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "indent":
        delta = draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
        line = lines[i]
        new = " " * delta + line if delta > 0 else line[min(-delta, len(line) - len(line.lstrip(" "))):]
        return Mutation(kind, target, "any", _edit_lines(target, lambda ls: ls[:i] + [new] + ls[i + 1:]),
                        f"indent line {i + 1} by {delta}")
    if kind == "tab_any":
        new = "\t" + lines[i].lstrip(" ")
        return Mutation(kind, target, "any", _edit_lines(target, lambda ls: ls[:i] + [new] + ls[i + 1:]),
                        f"tab at line {i + 1}")
    if kind == "swap_lines":
        j = draw(st.integers(0, len(lines) - 1))

        def swap(ls: list[str]) -> list[str]:
            ls = list(ls)
            ls[i], ls[j] = ls[j], ls[i]
            return ls

        return Mutation(kind, target, "any", _edit_lines(target, swap), f"swap lines {i + 1} and {j + 1}")
    keyed = [k for k, line in enumerate(lines) if _is_key_line(line)] or [0]
    k = draw(st.sampled_from(keyed))
    tag = draw(st.sampled_from(PYTHON_TAGS)).format(m=MARKER_NAME)
    key = lines[k].split(":", 1)[0]
    return Mutation("tag_any", target, "any", _edit_lines(target, lambda ls: ls[:k] + [f"{key}: {tag}"] + ls[k + 1:]),
                    f"line {k + 1}: {tag}")


def mutations() -> st.SearchStrategy[Mutation]:
    return st.one_of(valid_mutations(), invalid_mutations(), random_mutations())


# ---------------------------------------------------------------------------------------- tiny training
TRAIN_CLASSES = 4


def tiny_recipe(epochs: int = 3, **kw: Any):
    from kdclaims.recipe import Recipe

    return Recipe(epochs=epochs, batch_size=8, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4,
                  schedule="cosine", amp=False, channels_last=False, **kw)


def tiny_split(n: int = 240):
    from kdclaims.data.synthetic import synthetic

    return synthetic("train", None, 0, n=n, size=8, channels=1, num_classes=TRAIN_CLASSES)


def tiny_train_fn(recipe, split, seed: int = 0, log: Path | None = None) -> Callable[[Path], dict]:
    """``train_fn(workdir)`` for ``CheckpointStore.get_or_train``: a real ``tiny_cnn`` trained by ``kdclaims.train``
    with the ``independent`` method; appends ``{"pid", "resumed_from_epoch", "epochs"}`` to ``log`` (JSON lines)."""

    def train_fn(workdir: Path) -> dict:
        from kdclaims.methods.independent import build_independent
        from kdclaims.models.small import tiny_cnn
        from kdclaims.seeding import seed_everything
        from kdclaims.train import train

        seed_everything(seed)
        model = tiny_cnn(TRAIN_CLASSES, in_chans=1)
        result = train(build_independent(model, None, split), split, recipe, seed=seed, workdir=workdir)
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "resumed_from_epoch": result.resumed_from_epoch,
                                    "epochs": len(result.history)}) + "\n")
        return result.state_dict

    return train_fn


TINY_RECIPE_KEY = {"kind": "reliability-test", "arch": "tiny_cnn", "data": "synthetic-240", "seed": 0}


# --------------------------------------------------------------------------------------------- workers
def fork(target: Callable[..., Any], *args: Any) -> mp.process.BaseProcess:
    """Start ``target(*args)`` in a forked child process (one torch thread)."""
    p = mp.get_context("fork").Process(target=_child, args=(target, args), daemon=True)
    p.start()
    return p


def _child(target: Callable[..., Any], args: tuple) -> None:
    import torch

    torch.set_num_threads(1)
    target(*args)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.005) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(poll)


def sigkill(p: mp.process.BaseProcess) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL, p.exitcode


def store_worker(root: str, recipe_key: dict, marker: str, hold_s: float, out: str) -> None:
    """Child: ``get_or_train`` with a train_fn that appends its pid to ``marker`` and takes ``hold_s`` seconds;
    writes ``{"hit": ..., "sum": ...}`` to ``out``."""
    import torch

    from kdclaims.store import CheckpointStore

    def train_fn(workdir: Path) -> dict:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(hold_s)
        g = torch.Generator().manual_seed(7)
        return {"w": torch.randn(16, 16, generator=g), "b": torch.arange(4.0)}

    state, hit = CheckpointStore(root).get_or_train(recipe_key, train_fn, label="concurrent")
    Path(out).write_text(json.dumps({"hit": hit, "sum": float(state["w"].sum()), "pid": os.getpid()}))


def lock_holder(root: str, key: str, ready: str) -> None:
    """Child: take the store's lock for ``key``, say so in ``ready``, then sleep until killed."""
    from kdclaims.store import CheckpointStore

    lock = CheckpointStore(root)._lock(key)
    lock.acquire()
    Path(ready).write_text(str(os.getpid()))
    time.sleep(600)


def crash_worker(root: str, log: str) -> None:
    """Child: train the tiny recipe through the store (to be SIGKILLed mid-run). It runs at a lower priority so
    that, on a busy machine, the parent's poll sees epoch 1's checkpoint long before epoch 3 ends."""
    from kdclaims.store import CheckpointStore

    os.nice(10)

    CheckpointStore(root).get_or_train(TINY_RECIPE_KEY, tiny_train_fn(tiny_recipe(), tiny_split(), log=Path(log)))


# ----------------------------------------------------------------------------------------- bad pickles
class RunsCode:
    """Unpickling this calls ``os.system(f"touch {marker}")``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    """A file that looks like a state dict but runs ``touch marker`` when unpickled without ``weights_only``."""
    import torch

    torch.save({"net.0.weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
