"""The bench's input section: ImageNet-like JPEGs through each input pipeline, against resident tensors.

All rates come from one run on one machine: a JPEG tree made by ``jpeg_tree.py`` in a temp folder (so the files
sit in the page cache: this measures decoding and transforms, not the disk), ResNet-18 trained by
``kdclaims.train`` on it with the ``tensor`` and the ``pil`` pipelines and on random tensors resident on the
device, each pipeline's loader alone, the model's FLOPs per training image (``torch.utils.flop_counter``) and a
large matmul as the card's attainable peak.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from jpeg_tree import make_tree

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) from NVIDIA's datasheets, matched in order against the name.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(split, batch: int, device: torch.device, passes: int) -> float:
    """Images/s of ``split.batches`` alone (shuffled, full batches, on ``device``): median of ``passes`` passes after
    one warm-up pass (which starts the workers)."""
    def one(p: int) -> float:
        _sync(device)
        t, n = time.perf_counter(), 0
        gen = torch.Generator().manual_seed(p)
        for b in split.batches(batch, shuffle=True, generator=gen, drop_last=True, device=device):
            n += len(b.y)
        _sync(device)
        return n / (time.perf_counter() - t)

    one(0)
    return statistics.median(one(p) for p in range(1, passes + 1))


def train_rate(split, batch: int, epochs: int, device: torch.device) -> float:
    """Median images/s of ``kdclaims.train`` epochs 2.. (epoch 1 warms up workers, cudnn and the allocator):
    ResNet-18, SGD, bf16 + channels_last on CUDA."""
    from kdclaims.models import create_model
    from kdclaims.recipe import Recipe
    from kdclaims.registries import METHODS
    from kdclaims.seeding import seed_everything
    from kdclaims.train import train

    seed_everything(0)
    model = create_model("resnet18", split.num_classes, mean=split.mean, std=split.std)
    recipe = Recipe(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    history = train(METHODS.get("independent")(model, None, split), split, recipe, seed=0, device=device).history
    return statistics.median(h["images_per_s"] for h in history[1:])


def train_flops_per_image(size: int, classes: int, device: torch.device) -> float:
    """FLOPs of one ResNet-18 forward + backward per image at ``size`` px, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    from kdclaims.models import create_model

    model = create_model("resnet18", classes).to(device).train()
    x = torch.rand(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 2


def matmul_tflops(device: torch.device) -> float:
    """Attained TFLOPS of a square matmul, ``2 n^3`` FLOPs each: bf16 n = 8192 on CUDA, fp32 n = 512 on the CPU."""
    cuda = device.type == "cuda"
    n, dtype, reps = (8192, torch.bfloat16, 20) if cuda else (512, torch.float32, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def datasheet_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def input_rates(quick: bool, device: torch.device, size: int, batch: int) -> dict[str, Any]:
    """Every rate of the section (module doc), as a dict; ``detail`` describes the setting."""
    from kdclaims.data import build_dataset
    from kdclaims.data.base import Split
    from kdclaims.data.folder import default_workers
    from kdclaims.registries import load_all

    load_all()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    files, classes, epochs, passes = (48, 4, 2, 1) if quick else (3000, 100, 4, 2)
    work = Path(tempfile.mkdtemp(prefix="kdclaims-jpegs-"))
    out: dict[str, Any] = {}
    try:
        tree = make_tree(work, files, classes, workers=min(16, os.cpu_count() or 1))
        g = torch.Generator(device=device).manual_seed(0)
        resident = Split("resident", torch.rand(files, 3, size, size, generator=g, device=device),
                         torch.randint(0, classes, (files,), generator=g, device=device), classes,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        out["resident"] = train_rate(resident, batch, epochs, device)
        del resident
        for pipeline in ("tensor", "pil"):
            split = build_dataset("imagenet", "train", root=work, size=size, num_workers=default_workers(),
                                  pipeline=pipeline)
            if pipeline == "tensor" and device.type != "cuda":
                split.main_decode = True  # the CUDA code path, on the CPU (a check of the script)
            try:
                out[f"{pipeline}_input"] = loader_rate(split, batch, device, passes)
                out[f"{pipeline}_train"] = train_rate(split, batch, epochs, device)
            finally:
                split.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["flops_per_image"] = train_flops_per_image(size, classes, device)
    out["tflops"] = out["resident"] * out["flops_per_image"] / 1e12
    out["matmul_tflops"] = matmul_tflops(device)
    out["datasheet_tflops"] = datasheet_peak(device)
    out["detail"] = (f"{files} JPEGs (mean {tree['mean_bytes'] / 1e3:.0f} kB, ~500x375) in {classes} classes, page "
                     f"cache warm; ResNet-18 at {size}px, batch {batch}, {default_workers()} workers, "
                     f"{epochs - 1} timed epochs after 1 warm-up, on {device}")
    return out
