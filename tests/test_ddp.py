"""DDP on CPU: two gloo ranks under torchrun, each on half of every global batch, match one process on the whole
batch (gradients are averaged, so the updates agree up to float rounding)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("kdclaims_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # seconds of subprocesses or large models: CI runs it in its `-m slow` step
def test_two_ranks_match_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(WORKER), str(tmp_path / "ddp.pt"), str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    worker = load_worker()
    worker.run(tmp_path / "single.pt")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)

    assert ddp["world"] == 2 and single["world"] == 1
    assert ddp["steps"] == single["steps"] == 2 * 3
    initial = worker.build()[1].state_dict()
    for k, v in single["distiller"].items():  # student and the index-driven embedding
        assert not torch.equal(v, initial[k]), f"{k} did not train"
        torch.testing.assert_close(ddp["distiller"][k], v, rtol=0, atol=1e-5, msg=k)
    for h_ddp, h_one in zip(ddp["history"], single["history"], strict=True):
        assert abs(h_ddp["loss"] - h_one["loss"]) < 1e-5
        assert h_ddp["train_acc"] == h_one["train_acc"]
    assert ddp["acc"] == single["acc"]
    saved = torch.load(tmp_path / "work" / "last.pt", weights_only=True)  # written by rank 0
    assert saved["epoch"] == 2
    torch.testing.assert_close(saved["distiller"]["embed.weight"], ddp["distiller"]["embed.weight"], rtol=0, atol=0)
