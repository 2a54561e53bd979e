"""Untrusted inputs: hostile pickles (weights, store entries, resume checkpoints, probe caches), Python tags in
YAML, and paths that try to leave --kd-weights / --kd-data. Nothing may run code or read outside its folder."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kdclaims.models import create_model, load_weights
from kdclaims.models.weights import UnsafeCheckpoint, UnsafePath, resolve_weights
from kdclaims.registries import load_all
from kdclaims.spec.loader import load_claims
from kdclaims.store import CheckpointStore, CorruptCheckpoint, file_sha256, recipe_key
from claimkit import TINY_CLAIM
from reliability_helpers import (PYTHON_TAGS, RunsCode, TINY_RECIPE_KEY, fork, tiny_recipe, tiny_split, tiny_train_fn,
                                 write_malicious_checkpoint)

torch.set_num_threads(1)
load_all()
ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"kind": "security-test", "seed": 1}


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(hostile checkpoint, the marker file it would create)."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    write_malicious_checkpoint(path, marker)
    assert not marker.exists()
    return path, marker


def test_the_hostile_pickle_really_runs_code(evil):
    """Positive control: unpickled without ``weights_only`` (in a forked child) it creates the marker; so the
    refusals below are refusals of a working payload."""
    path, marker = evil
    child = fork(_unsafe_load, str(path))
    child.join(60)
    assert marker.exists()


def _unsafe_load(path: str) -> None:
    torch.load(path, weights_only=False)


# --------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("as_torchvision_file", [False, True])
def test_load_weights_refuses_a_hostile_pickle(tmp_path, evil, as_torchvision_file):
    """Through ``load_weights`` (as ``file:`` and as torchvision's file name under --kd-weights): UnsafeCheckpoint
    explaining the refusal, marker absent. Can fail: with ``torch.load`` inside ``kdclaims.models.weights``
    temporarily forced to ``weights_only=False``, the payload ran and this test failed."""
    path, marker = evil
    ref = "file:evil.pt"
    if as_torchvision_file:
        path.rename(tmp_path / "resnet18-f37072fd.pth")
        ref = "torchvision/resnet18-IMAGENET1K_V1"
    with pytest.raises(UnsafeCheckpoint, match="refused to load"):
        load_weights(create_model("resnet18", 1000), ref, tmp_path)
    assert not marker.exists()


def test_foreign_weights_load_with_weights_only(tmp_path, monkeypatch):
    """A plain state dict loads, and torch.load is called with ``weights_only=True``."""
    src = create_model("tiny_cnn", 10)
    torch.save(src.net.state_dict(), tmp_path / "t.pt")
    seen = []
    real = torch.load

    def spy(*a, **kw):
        seen.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    dst = create_model("tiny_cnn", 10)
    load_weights(dst, "t.pt", tmp_path)
    assert seen == [True]
    assert all(torch.equal(a, b) for a, b in zip(src.net.state_dict().values(), dst.net.state_dict().values()))


@pytest.mark.parametrize("ref", ["../../etc/passwd", "file:../../etc/passwd", "a/../../x.pt", "..", "file:./../x"])
def test_weights_refs_cannot_leave_the_weights_folder(tmp_path, ref):
    """Relative refs that climb out of --kd-weights through ``..``: refused at run time (UnsafePath) and at
    validation time (a located error). Can fail: with ``_weights_errors`` temporarily left out of the loader's
    checks there was no validation error and this test failed."""
    (tmp_path / "weights").mkdir()
    with pytest.raises(UnsafePath, match="leaves the weights directory"):
        resolve_weights(ref, tmp_path / "weights")
    text = TINY_CLAIM.format(id="w").replace("teacher: {arch: tiny_cnn_wide,", f"teacher: {{arch: tiny_cnn_wide, weights: '{ref}',")
    path = tmp_path / "claims" / "w.yaml"
    path.parent.mkdir()
    path.write_text(text)
    (err,) = load_claims([path])[1]
    assert err.field == "setup.teacher.weights" and "leaves the --kd-weights folder" in err.message
    assert err.line == next(i for i, s in enumerate(text.splitlines(), 1) if "weights:" in s)


def test_a_claim_cannot_name_a_data_root(tmp_path):
    """A claim names datasets, never folders: ``root:`` (or any path-like key) is an unknown dataset parameter,
    reported at validation with its line; the builders join fixed sub-folders to --kd-data. Can fail: without
    the loader's dataset-parameter check (``_param_errors`` temporarily left out) this validated and failed."""
    text = TINY_CLAIM.format(id="d").replace("data: {name: synthetic,", "data: {name: synthetic, root: ../../etc,")
    path = tmp_path / "claims" / "d.yaml"
    path.parent.mkdir()
    path.write_text(text)
    (err,) = load_claims([path])[1]
    assert err.field == "setup.data.root" and "unknown parameter of dataset 'synthetic'" in err.message
    from kdclaims.data import build_dataset

    with pytest.raises(ValueError, match="unknown parameter"):
        build_dataset("digits", "train", root=tmp_path, root_dir="/etc")


# ------------------------------------------------------------------------------------------- the store
def _plant(store: CheckpointStore, key: str, payload: Path) -> Path:
    """Replace an entry's model.pt by ``payload`` and re-sign the manifest so that the sha256 matches."""
    d = store.entry(key)
    (d / "model.pt").write_bytes(payload.read_bytes())
    manifest = json.loads((d / "manifest.json").read_text())
    manifest.update(sha256=file_sha256(d / "model.pt"), bytes=(d / "model.pt").stat().st_size)
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d / "model.pt"


def test_store_refuses_a_hostile_model_with_a_matching_manifest(tmp_path, evil):
    """The digest matches, so only ``weights_only=True`` stands between the file and code execution:
    "refuse" raises CorruptCheckpoint ("cannot be loaded"), "retrain" quarantines and retrains; the marker never
    appears. Can fail: the positive control shows what a plain ``torch.load`` of the same bytes does."""
    path, marker = evil
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    store.get_or_train(RECIPE, lambda w: {"w": torch.ones(3)})
    _plant(store, key, path)
    with pytest.raises(CorruptCheckpoint, match="cannot be loaded"):
        store.get_or_train(RECIPE, lambda w: {"w": torch.ones(3)}, on_corrupt="refuse")
    state, hit = store.get_or_train(RECIPE, lambda w: {"w": torch.zeros(3)})
    assert hit is False and torch.equal(state["w"], torch.zeros(3))
    assert len(list(store.entry(key).parent.glob(f"{key}.corrupt-*"))) == 1
    assert not marker.exists()


def test_store_refuses_a_loadable_file_that_is_not_a_state_dict(tmp_path):
    """A weights-only-safe file holding something else (a list) with a matching manifest: CorruptCheckpoint.
    Can fail: the original ``load`` returned the list (seen before the fix)."""
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    store.get_or_train(RECIPE, lambda w: {"w": torch.ones(3)})
    other = tmp_path / "list.pt"
    torch.save([torch.ones(3)], other)
    _plant(store, key, other)
    with pytest.raises(CorruptCheckpoint, match="not a state dict"):
        store.load(key)


def test_hostile_resume_checkpoint_is_not_executed(tmp_path, evil):
    """A hostile ``work/last.pt`` where the trainer resumes: the trainer's ``weights_only=True`` load refuses it
    (UnpicklingError; the run stops rather than silently restarting), and the marker never appears."""
    path, marker = evil
    store = CheckpointStore(tmp_path / "cache")
    work = store.entry(recipe_key(TINY_RECIPE_KEY)) / "work"
    work.mkdir(parents=True)
    (work / "last.pt").write_bytes(path.read_bytes())
    with pytest.raises(pickle.UnpicklingError):
        store.get_or_train(TINY_RECIPE_KEY, tiny_train_fn(tiny_recipe(epochs=1, max_steps=2), tiny_split(64)))
    assert not marker.exists() and not store.is_complete(recipe_key(TINY_RECIPE_KEY))


def test_hostile_probe_cache_is_not_executed(tmp_path):
    """An .npz whose array is a pickled object (with a matching sha256 in its .json): ``allow_pickle=False``
    refuses it, the cache reads as a miss, the marker never appears."""
    marker = tmp_path / "marker"
    store = CheckpointStore(tmp_path / "cache")
    base = store.measurements_path("e" * 32)
    base.parent.mkdir(parents=True)
    arr = np.empty(1, dtype=object)
    arr[0] = RunsCode(marker)
    np.savez(base.with_suffix(".npz"), a0=arr)
    info = {"index": [["accuracy", "kl"]], "extras": {}, "sha256": file_sha256(base.with_suffix(".npz"))}
    base.with_suffix(".json").write_text(json.dumps(info))
    assert store.load_measurements("e" * 32) is None
    assert not marker.exists()


@pytest.mark.parametrize("param", ["checkpoint_path", "pretrained", "pretrained_cfg_overlay", "weights"])
def test_model_parameters_cannot_load_weights(tmp_path, evil, param):
    """A model parameter that would read or fetch weights (timm's ``checkpoint_path`` reads any file, outside
    --kd-weights) is refused by ``create_model`` before timm sees it, and is a located validation error in a claim.
    Checked to fail: before the check, ``checkpoint_path`` reached timm (which then refused the hostile pickle only
    because it loads with ``weights_only=True``) and the claim validated."""
    path, marker = evil
    value = {"checkpoint_path": str(path), "pretrained": True, "pretrained_cfg_overlay": {"file": str(path)},
             "weights": "DEFAULT"}[param]
    with pytest.raises(ValueError, match="would load or download weights"):
        create_model("timm/resnet18", 10, **{param: value})
    assert not marker.exists()
    text = TINY_CLAIM.format(id="w").replace("student: {arch: tiny_cnn}", f"student: {{arch: tiny_cnn, params: {{{param}: x}}}}")
    claim = tmp_path / "claims" / "w.yaml"
    claim.parent.mkdir()
    claim.write_text(text)
    files, errors = load_claims([claim])
    assert not files and len(errors) == 1, [e.format() for e in errors]
    line = next(i for i, s in enumerate(text.splitlines(), 1) if param in s)
    assert errors[0].line == line and errors[0].format().endswith(
        f"setup.student.params.{param}: would load or download weights behind the store; "
        "name weights with 'weights:' (read from --kd-weights)"), errors[0].format()


# ----------------------------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("tag", [t for t in PYTHON_TAGS if "binary" not in t])
def test_python_tags_in_a_claim_are_refused(tmp_path, monkeypatch, tag):
    """Every Python (or unknown local) tag is a located 'not allowed' error; nothing runs."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    text = TINY_CLAIM.format(id="y").replace("title: Tiny test claim", f"title: {tag.format(m=marker)}")
    path = tmp_path / "claims" / "y.yaml"
    path.parent.mkdir()
    path.write_text(text)
    files, errors = load_claims([path])
    assert not files and len(errors) == 1
    assert errors[0].line == 2 and "not allowed" in errors[0].message
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ static audit
DANGEROUS = [
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only=True"),
    (re.compile(r"\byaml\.(load|load_all|unsafe_load|full_load)\s*\("), "yaml.load (use safe loading)"),
    (re.compile(r"\b(Unsafe|Full)?Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)\b"), "unsafe YAML loader"),
    (re.compile(r"\bpickle\.loads?\s*\("), "pickle.load"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"(?<![\w.])(eval|exec)\s*\("), "eval/exec"),
    (re.compile(r"shell\s*=\s*True|os\.system\s*\("), "a shell"),
]


def audit(source: str) -> list[str]:
    """The dangerous calls in ``source`` (one line each); docstring/comment mentions in backticks are skipped."""
    found = []
    for n, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        if "``" in code:
            continue
        found += [f"{n}: {what}: {line.strip()}" for rx, what in DANGEROUS if rx.search(code)]
    return found


def test_audit_finds_what_it_looks_for():
    """The audit itself can fail: each pattern is found in a snippet that uses it."""
    bad = ("x = torch.load(p)\ny = yaml.load(s)\nz = pickle.loads(b)\nnp.load(f, allow_pickle=True)\n"
           "eval('1')\nsubprocess.run(c, shell=True)\nyaml.load(s, Loader=yaml.Loader)\n")
    assert {f.split(":")[0] for f in audit(bad)} == {str(i) for i in range(1, 8)}  # every line is flagged
    assert audit("torch.load(p, map_location='cpu', weights_only=True)\nmodel.eval()\n") == []


def test_no_unsafe_deserialisation_in_the_package():
    """No ``torch.load`` without ``weights_only=True``, no unsafe YAML, no pickle, no eval/exec/shell in kdclaims/."""
    problems = {str(p.relative_to(ROOT)): audit(p.read_text()) for p in sorted((ROOT / "kdclaims").rglob("*.py"))}
    assert not {k: v for k, v in problems.items() if v}
