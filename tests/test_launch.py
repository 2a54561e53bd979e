"""kdclaims.launch: one model of a claim trained alone (here under a 2-rank gloo torchrun) lands in the store under
the key a pytest item reads; only rank 0 locks and commits (RankedStore, checked with a scripted channel)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdclaims.launch import RankedStore, main
from kdclaims.store import CheckpointStore, CorruptCheckpoint, StoreError, recipe_key

CLAIM = """\
id: launch-claim
title: Tiny claim for the launcher
paper: {section: "4", table: "1"}
statement: A tiny distilled student is compared with its independent twin on synthetic data.
setup:
  teacher: {arch: tiny_cnn_wide, recipe: {epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01, weight_decay: 0.0}}
  student: {arch: tiny_cnn}
  methods:
    - independent
    - {name: kl, params: {gamma: 0.5, alpha: 0.5, tau: 4.0}}
  data: {name: synthetic, n: 128, size: 8, num_classes: 4}
  seeds: [0]
  recipe: {epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01, weight_decay: 0.0}
probe: {name: accuracy, images: 64}
expect:
  - {metric: accuracy, compare: "kl > independent"}
significance: {resamples: 200}
tiers:
  smoke: {}
"""
RECIPE = {"kind": "test", "n": 1}


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(4, dtype=torch.float32)}


class Script:
    """A channel: records what rank 0 sends; hands a follower the scripted messages in order."""

    def __init__(self, *incoming):
        self.sent: list = []
        self.incoming = list(incoming)

    def __call__(self, msg):
        self.sent.append(msg)
        return msg if msg is not None else self.incoming.pop(0)


def _lock_files(store: CheckpointStore) -> list[str]:
    return sorted(p.name for p in (store.root / "locks").iterdir() if p.suffix == ".lock")


# --------------------------------------------------------------------------------------------- RankedStore


def test_follower_trains_in_the_entry_workdir_without_lock_or_commit(tmp_path):
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    seen = []
    ranked = RankedStore(store, rank=1, channel=Script(("train", key, False)))
    state, hit = ranked.get_or_train(RECIPE, lambda wd: seen.append(wd) or _state())
    assert hit is False and torch.equal(state["w"], _state()["w"])
    assert seen == [store.entry(key) / "work"]
    assert not store.is_complete(key)  # rank 0 commits, never a follower
    assert _lock_files(store) == []  # and a follower takes no lock
    assert ranked.channel.sent == [None]


def test_follower_loads_a_hit_and_refuses_divergence(tmp_path):
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    store.get_or_train(RECIPE, lambda wd: _state())
    ranked = RankedStore(store, rank=1, channel=Script(("hit", key)))
    state, hit = ranked.get_or_train(RECIPE, lambda wd: pytest.fail("a follower retrained a cached model"))
    assert hit is True and torch.equal(state["w"], _state()["w"])

    other = RankedStore(store, rank=1, channel=Script(("hit", "f" * 32)))
    with pytest.raises(RuntimeError, match="diverged"):
        other.get_or_train(RECIPE, lambda wd: _state())
    failed = RankedStore(store, rank=1, channel=Script(("error", key, "OSError: disk full")))
    with pytest.raises(StoreError, match="disk full"):
        failed.get_or_train(RECIPE, lambda wd: _state())
    resumed = RankedStore(store, rank=1, channel=Script(("train", key, True)))  # rank 0 resumes, we cannot see it
    with pytest.raises(StoreError, match="shares"):
        resumed.get_or_train(RECIPE, lambda wd: _state())


def test_leader_announces_before_training_then_commits(tmp_path):
    store = CheckpointStore(tmp_path / "cache")
    key = recipe_key(RECIPE)
    channel = Script()
    ranked = RankedStore(store, rank=0, channel=channel)

    def train_fn(workdir: Path):
        assert channel.sent == [("train", key, False)], "the others must be told before rank 0 trains"
        return _state()

    _, hit = ranked.get_or_train(RECIPE, train_fn)
    assert hit is False and store.is_complete(key)
    _, hit = ranked.get_or_train(RECIPE, lambda wd: pytest.fail("retrained"))
    assert hit is True and channel.sent[1] == ("hit", key)
    assert (ranked.hits, ranked.trained) == (1, 1)

    (store.entry(key) / "model.pt").write_bytes(b"damaged")  # fails before training: the others hear why
    with pytest.raises(CorruptCheckpoint):
        ranked.get_or_train(RECIPE, lambda wd: _state(), on_corrupt="refuse")
    assert channel.sent[2][0] == "error" and "sha256" in channel.sent[2][2]


# ------------------------------------------------------------------------------------------ the command line


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["launch-claim", "--tier", "smoke", "--path", str(tmp_path / "claims"), "--kd-cache",
            str(tmp_path / "cache"), "--quiet", *extra]


@pytest.mark.slow  # seconds of subprocesses or large models: CI runs it in its `-m slow` step
def test_torchrun_student_is_a_cache_hit_for_the_claim(tmp_path, capsys):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "launch.yaml").write_text(CLAIM)

    assert main(_args(tmp_path, "--arm", "kl", "--seed", "1")) == 2  # not a seed of the item
    assert main(_args(tmp_path, "--arm", "hint", "--seed", "0")) == 2
    assert main(_args(tmp_path, "--index", "3")) == 2
    err = capsys.readouterr().err
    assert "seeds: [0]" in err and "arms: ['independent', 'kl']" in err and "0..2" in err

    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "KDCLAIMS_CACHE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "kdclaims.launch", *_args(tmp_path, "--arm", "kl", "--seed", "0")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "kl seed 0: trained" in out and "teacher: trained" in out and "on 2 rank(s)" in out

    # a second claim with the same teacher and an 'independent' arm: its models are the same store entries
    twin = (CLAIM.replace("id: launch-claim", "id: launch-twin")
            .replace("    - {name: kl, params: {gamma: 0.5, alpha: 0.5, tau: 4.0}}\n", "")
            .replace("kl > independent", "independent > teacher"))
    (tmp_path / "claims" / "twin.yaml").write_text(twin)
    assert main(["all", *_args(tmp_path, "--list")[1:]]) == 0
    *listing, summary = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in listing]
    assert [(r[2], r[3], r[-1]) for r in rows] == [  # state, claim, what: teacher, independent, kl
        ("cached", "launch-claim", "teacher"), ("missing", "launch-claim", "0"), ("cached", "launch-claim", "0")]
    assert main(["all", *_args(tmp_path, "--key", "0" * 33)[1:]]) == 2
    assert "matches 0 of the 3 models" in capsys.readouterr().err
    assert main(["all", *_args(tmp_path, "--key", rows[0][1][:10])[1:]]) == 0  # a job-array task picks its key
    assert "launch-claim[smoke] teacher: cache" in capsys.readouterr().out
    assert summary.startswith("3 models: 1 teachers to train, 2 students; 1 missing")

    from kdclaims.bank import RunContext
    from kdclaims.runner import run_claim
    from kdclaims.spec.loader import load_claim_file

    claim = next(i.claim for i in load_claim_file(tmp_path / "claims" / "launch.yaml").items if i.tier == "smoke")
    torch.set_num_threads(1)
    result = run_claim(claim, RunContext(store=CheckpointStore(tmp_path / "cache"), tier="smoke"))
    sources = {(e["model"], e["seed"]): e["source"] for e in result.events}
    assert sources == {("teacher", None): "cache", ("kl", 0): "cache", ("independent", 0): "trained"}
