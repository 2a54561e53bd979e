#!/usr/bin/env python
"""kdclaims benchmark: every row is a ratio or a rate measured in this one run, printed beside its goal.

    python bench/run.py            # the full run (<= 10 min on a quiet 2-core machine); writes bench/results.json
    python bench/run.py --quick    # everything shrunk, for a fast check of the script itself

Sections: the trainer against a bare PyTorch loop; the ``pytest -m smoke`` suite cold, warm and under xdist; one
cpu-tier claim cold vs warm; probe throughput; on CUDA, ResNet-18 training throughput (bf16 + channels_last vs
fp32, trainer vs bare loop) and, on a tree of ImageNet-like JPEGs, each input pipeline against resident tensors.
Timings depend on the machine and on whatever else runs on it: results.json records the CPU, the core count,
torch's version, the device and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREADS = 1  # in-process sections: one torch thread (the machine is shared; the trainer and the bare loop alike)
# A cpu-tier probe sees 5000 images (claims/_base/tiers.yaml) on 9 models (teacher + 4 arms x 2 seeds);
# a probe keeps an item's probing under a minute when it handles 5000 * 9 / 60 = 750 model-images per second.
PROBE_GOAL = 5000 * 9 / 60
# 100 epochs of ImageNet-1k (1,281,167 images) in 24 hours on one GPU: a paper-recipe student per GPU-day.
GPU_GOAL = 1_281_167 * 100 / 86_400


@dataclass
class Row:
    """One measurement: ``value`` (None when not measured, see ``note``) against ``goal`` with ``op``."""

    section: str
    name: str
    value: float | None
    unit: str
    op: str  # "<=" or ">="
    goal: float
    detail: str = ""
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.op == "<=" else self.value >= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# ------------------------------------------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "device": device,
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` once each untimed (warm-up), then ``a b a b ...`` ``repeats`` times; each returns its
    own seconds. Interleaving spreads a change in background load over both sides."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(a())
        tb.append(b())
    return ta, tb


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KDCLAIMS_CACHE", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS", "WORLD_SIZE", "RANK")}
    env.update(extra)
    return env


def timed_run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and the finished process; a run past ``timeout`` is killed and reported with exit code 124."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        proc = subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f}s")
    return time.perf_counter() - t, proc


def pytest_summary(proc: subprocess.CompletedProcess) -> str:
    """The counts of pytest's last summary line, e.g. '398 passed, 13 skipped'."""
    if proc.returncode == 124:
        return proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    if not lines:
        return f"exit {proc.returncode}, no summary"
    counts = re.findall(r"\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected)", lines[-1])
    return ", ".join(counts) + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


# --------------------------------------------------------------------------------------- trainer overhead


def bench_trainer(quick: bool) -> list[Row]:
    """``kdclaims.train.train`` vs a hand-written loop: same model, tensors, batches, optimizer and threads."""
    import torch
    import torch.nn.functional as F

    from kdclaims.data import build_dataset
    from kdclaims.models import create_model
    from kdclaims.recipe import Recipe
    from kdclaims.registries import METHODS, load_all
    from kdclaims.seeding import seed_everything
    from kdclaims.train import train

    load_all()
    torch.set_num_threads(THREADS)
    steps, batch, repeats = (12, 128, 2) if quick else (48, 128, 5)
    split = build_dataset("fashion_mnist", "train", n=steps * batch)
    recipe = Recipe(epochs=1, batch_size=batch, optimizer="adam", lr=1e-3, weight_decay=0.0, max_steps=steps,
                    amp=False, channels_last=False)

    def fresh_model():
        seed_everything(0)
        return create_model("mnist_net_small", split.num_classes, in_chans=split.channels, mean=split.mean,
                            std=split.std)

    def ours() -> float:
        distiller = METHODS.get("independent")(fresh_model(), None, split)
        t = time.perf_counter()
        result = train(distiller, split, recipe, seed=0)
        seconds = time.perf_counter() - t
        assert result.steps == steps
        return seconds

    def bare() -> float:
        model = fresh_model()
        t = time.perf_counter()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.0)
        model.train()
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            loss = F.cross_entropy(model(split.x[idx]).float(), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    ta, tb = interleaved(ours, bare, repeats)
    detail = (f"mnist_net_small, Fashion-MNIST, {steps} steps x {batch}, Adam, {THREADS} thread; median of {repeats} "
              f"interleaved: train {median(ta):.2f}s, bare {median(tb):.2f}s")
    return [Row("trainer", "kdclaims.train / bare loop (wall time)", median(ta) / median(tb), "x", "<=", 1.10, detail)]


# ---------------------------------------------------------------------------------------- the smoke suite


def bench_smoke(quick: bool, work: Path) -> list[Row]:
    """``pytest -m smoke`` in a subprocess: the whole suite once as CI runs it (``-n 2``, fresh store); then the
    claim items alone on the store it filled, with ``-n 2`` and ``-n 1`` (the unit tests do not use the store, so
    running them again would only repeat the first row)."""
    whole = ["claims/accuracy"] if quick else []
    claims = ["claims/accuracy"] if quick else ["claims"]
    scope = "claims/accuracy only (--quick)" if quick else "whole suite"
    cache, timeout = work / "smoke-cache", 900

    def run(tag: str, targets: list[str], *extra: str) -> tuple[float, str]:
        cmd = [sys.executable, "-m", "pytest", "-m", "smoke", "-q", "-p", "no:cacheprovider", "--kd-cache", str(cache),
               "--kd-report", str(work / f"smoke-report-{tag}"), *extra, *targets]
        seconds, proc = timed_run(cmd, clean_env(), timeout)
        return seconds, pytest_summary(proc)

    cold, cold_sum = run("cold", whole, "-n", "2")
    n2, n2_sum = run("n2", claims, "-n", "2")
    n1, n1_sum = run("n1", claims, "-n", "1")
    return [
        Row("smoke", "pytest -m smoke -n 2, cold store (s)", cold, "s", "<=", 60.0, f"{scope}: {cold_sum}"),
        Row("smoke", "pytest claims -m smoke -n 2, warm store (s)", n2, "s", "<=", 60.0, f"claim items: {n2_sum}"),
        Row("smoke", "pytest claims -m smoke -n 2 / -n 1 (warm store)", n2 / n1, "x", "<=", 0.80,
            f"-n 1 {n1:.1f}s ({n1_sum}); -n 2 {n2:.1f}s ({n2_sum}); ideal on 2 cores 0.5"),
    ]


# -------------------------------------------------------------------------------------- claim warm vs cold


def bench_claim(quick: bool, work: Path) -> list[Row]:
    """One claim item through ``kdclaims run`` twice with one fresh store: trains, then loads everything."""
    tier = "smoke" if quick else "cpu"
    cache = work / "claim-cache"
    cmd = [sys.executable, "-m", "kdclaims.cli", "run", "accuracy-gain", "--tier", tier, "--kd-cache", str(cache),
           "--quiet"]
    runs = []
    for timeout in (3600, 900):  # cold, then warm; a failed cold run leaves nothing to compare with
        seconds, proc = timed_run(cmd, clean_env(), timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kdclaims run failed (exit {proc.returncode}) after {seconds:.0f}s: "
                               f"{(proc.stdout + proc.stderr)[-800:]}")
        runs.append((seconds, proc))
    (cold, p1), (warm, p2) = runs
    detail = f"accuracy-gain[{tier}]: cold {cold:.1f}s ({_models(p1.stdout)}), warm {warm:.1f}s ({_models(p2.stdout)})"
    return [Row("claim", f"accuracy-gain[{tier}] warm / cold (wall time)", warm / cold, "x", "<=", 0.10, detail)]


def _models(stdout: str) -> str:
    """What ``kdclaims run`` says about its models: '9 models: 9 trained', or a probe-cache hit (none loaded)."""
    m = re.search(r"\((\d+) models: (\d+) trained", stdout)
    if m is None:
        return "no model summary"
    if m.group(1) == "0":
        return "probe cache hit, no model loaded"
    return f"{m.group(1)} models, {m.group(2)} trained"


# ------------------------------------------------------------------------------------------------ probes


class Bank:
    """A ``ModelBank`` over fixed, randomly initialised models (throughput does not depend on training)."""

    def __init__(self, models: dict[Any, Any], seeds: list[int], arms: list[str], split):
        self._models, self.seeds, self.arms, self.teachers = models, seeds, arms, ["teacher"]
        self._split = split
        import torch

        self.device = torch.device("cpu")

    def model(self, name: str, seed: int | None = None):
        return self._models[name] if name in self.teachers else self._models[(name, seed)]

    def eval_split(self, data: Any = None):
        return self._split

    def arm_method(self, arm: str) -> str:
        return arm

    def n_models(self) -> int:
        return len(self._models)


def probe_bank(n: int) -> Bank:
    """Teacher ``mnist_net`` and students ``mnist_net_small`` (arms independent, kl; seeds 0, 1) on ``n`` colourised
    Fashion-MNIST test images; each image also gets a texture label (another class) for the shape-bias probe."""
    import torch

    from kdclaims.data import build_dataset
    from kdclaims.models import create_model
    from kdclaims.seeding import seed_everything

    split = build_dataset("fashion_mnist", "test", colorize=True).sample(n, seed=0)
    g = torch.Generator().manual_seed(1)
    split.meta["texture"] = (split.y + torch.randint(1, split.num_classes, (len(split),), generator=g)) % 10

    def build(arch: str, seed: int):
        seed_everything(seed)
        return create_model(arch, split.num_classes, in_chans=split.channels, mean=split.mean, std=split.std).eval()

    models: dict[Any, Any] = {"teacher": build("mnist_net", 100)}
    for i, arm in enumerate(["independent", "kl"]):
        for seed in (0, 1):
            models[(arm, seed)] = build("mnist_net_small", 10 * i + seed)
    return Bank(models, [0, 1], ["independent", "kl"], split)


PROBE_RUNS = [  # (row label, registered probe, params)
    ("accuracy", "accuracy", {}),
    ("agreement (colour jitter)", "agreement", {"transform": "color", "strength": 0.4}),
    ("agreement (crops)", "agreement", {"transform": "crop", "scale": 0.8}),
    ("adversarial_transfer (5-step I-FGSM)", "adversarial_transfer", {"eps": 0.1, "step": 0.025, "steps": 5}),
    ("consensus", "consensus", {}),
    ("cka (F1..F7, unbiased)", "cka", {"units": 4}),
    ("shape_bias", "shape_bias", {"mapping": "identity"}),
    ("localisation (Grad-CAM, torch)", "localisation", {"impl": "torch"}),
    ("localisation (Grad-CAM, pytorch_grad_cam)", "localisation", {"impl": "pytorch_grad_cam"}),
]


def bench_probes(quick: bool) -> list[Row]:
    import torch

    from kdclaims.registries import PROBES, load_all

    load_all()
    torch.set_num_threads(THREADS)
    n = 128 if quick else 512
    bank = probe_bank(n)
    rows, seconds = [], {}
    for label, name, params in PROBE_RUNS:
        probe = PROBES.get(name)
        t = time.perf_counter()
        m = probe(bank, dict(params))
        seconds[label] = time.perf_counter() - t
        units = {metric: next(iter(arms.values())).shape[1] for metric, arms in m.values.items()}
        rate = n * bank.n_models() / seconds[label]
        rows.append(Row("probes", f"{label} (model-images/s)", rate, "/s", ">=", PROBE_GOAL,
                        f"{n} images x {bank.n_models()} models in {seconds[label]:.2f}s; units {units}"))
    # the two Grad-CAM implementations, again interleaved on one batch (the probe rows above ran once each)
    rows.append(gradcam_ratio(bank, quick))
    return rows


def gradcam_ratio(bank: Bank, quick: bool) -> Row:
    from kdclaims.probes.gradcam import cam_module, gradcam_package, gradcam_torch

    model = bank.model("teacher")
    module, transform = cam_module(model, "cam")
    x, y = bank.eval_split().x[:128], bank.eval_split().y[:128]

    def ours() -> float:
        t = time.perf_counter()
        gradcam_torch(model, module, x, y, transform=transform)
        return time.perf_counter() - t

    def package() -> float:
        t = time.perf_counter()
        gradcam_package(model, module, x, y, transform=transform)
        return time.perf_counter() - t

    ta, tb = interleaved(ours, package, 2 if quick else 5)
    diff = (gradcam_torch(model, module, x, y, transform=transform)
            - gradcam_package(model, module, x, y, transform=transform)).abs().max().item()
    detail = (f"mnist_net 'cam' tap, 128 images; median torch {median(ta) * 1e3:.0f} ms, package "
              f"{median(tb) * 1e3:.0f} ms; max |difference| of the maps {diff:.1e}")
    return Row("probes", "Grad-CAM torch path / pytorch_grad_cam (wall time)", median(ta) / median(tb), "x", "<=", 1.0,
               detail)


# --------------------------------------------------------------------------------------------------- CUDA


def bench_cuda(quick: bool, device: str = "cuda", size: int = 224, batch: int | None = None) -> list[Row]:
    """ResNet-18 training images/s at ``size`` px on synthetic tensors resident on the device."""
    import torch

    names = ["ResNet-18 train img/s, bf16 + channels_last (kdclaims.train)",
             "ResNet-18 bf16 + channels_last / fp32 (img/s)",
             "ResNet-18 bare loop / kdclaims.train (img/s, bf16 + channels_last)"]
    goals = [(">=", GPU_GOAL), (">=", 1.5), ("<=", 1.10)]
    units = ["/s", "x", "x"]
    if device == "cuda" and not torch.cuda.is_available():
        return [Row("cuda", n, None, u, op, g, note="n/a: no CUDA") for n, u, (op, g) in zip(names, units, goals)]
    fast = bench_cuda_rates(quick, torch.device(device), size, batch)
    rows = [
        Row("cuda", names[0], fast["train_amp"], units[0], *goals[0], fast["detail"]),
        Row("cuda", names[1], fast["train_amp"] / fast["train_fp32"], units[1], *goals[1],
            f"fp32 {fast['train_fp32']:.0f} img/s (TF32 as torch's defaults allow)"),
        Row("cuda", names[2], fast["bare_amp"] / fast["train_amp"], units[2], *goals[2],
            f"bare loop {fast['bare_amp']:.0f} img/s"),
    ]
    return rows


def bench_cuda_rates(quick: bool, device, size: int, batch: int | None) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from kdclaims.data.base import Split
    from kdclaims.models import create_model
    from kdclaims.recipe import Recipe
    from kdclaims.registries import METHODS, load_all
    from kdclaims.seeding import seed_everything
    from kdclaims.train import train

    load_all()
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    batch = batch or 256
    steps, epochs = (4, 2) if quick else (12, 4)  # epoch 1 is warm-up (cudnn autotuning, allocator)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch * steps, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch * steps,), generator=g).to(device)
    split = Split("synthetic-imagenet", x, y, 1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    def model():
        seed_everything(0)
        return create_model("resnet18", 1000, mean=split.mean, std=split.std)

    def ours(amp: bool) -> float:
        recipe = Recipe(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                        amp=amp, channels_last=amp)
        hist = train(METHODS.get("independent")(model(), None, split), split, recipe, seed=0, device=device).history
        return median([h["images_per_s"] for h in hist[1:]])

    def bare() -> float:
        net = model().to(device)
        fmt = torch.channels_last if cuda else torch.contiguous_format
        net = net.to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        net.train()
        rates = []
        for epoch in range(epochs):
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch].to(device)
                xb = x[idx].contiguous(memory_format=fmt)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = F.cross_entropy(net(xb).float(), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if cuda:
                torch.cuda.synchronize()
            rates.append(steps * batch / (time.perf_counter() - t))
        return median(rates[1:])

    out = {"train_amp": ours(True), "train_fp32": ours(False), "bare_amp": bare()}
    out["detail"] = (f"{size}px, batch {batch}, SGD, {steps} steps x {epochs - 1} timed epochs (after 1 warm-up), "
                     f"data resident on {device}; goal = 100 ImageNet epochs in 24 h")
    return out


# ------------------------------------------------------------------------------------------- input path


INPUT_ROWS = [  # (key, name, unit, op, goal)
    ("tensor_input", "JPEG tree, tensor pipeline: input img/s / resident-tensor training img/s", "x", ">=", 1.2),
    ("pil_input", "JPEG tree, pil pipeline: input img/s / resident-tensor training img/s", "x", ">=", 1.2),
    ("tensor_train", "training img/s on JPEGs, tensor pipeline / on resident tensors", "x", ">=", 0.9),
    ("pil_train", "training img/s on JPEGs, pil pipeline / on resident tensors", "x", ">=", 0.9),
    ("mfu", "ResNet-18 training TFLOPS (resident tensors) / card's bf16 peak", "x", ">=", 0.2),
]


def bench_input(quick: bool, device: str = "cuda", size: int = 224, batch: int = 256) -> list[Row]:
    """ResNet-18 on ImageNet-like JPEGs (bench/jpeg_tree.py) through each pipeline, against resident tensors, and
    its achieved TFLOPS against the card's peak; every ratio from rates measured in this one run."""
    import torch

    from input_rates import input_rates

    if device == "cuda" and not torch.cuda.is_available():
        return [Row("input", name, None, unit, op, goal, note="n/a: no CUDA") for _, name, unit, op, goal in INPUT_ROWS]
    r = input_rates(quick, torch.device(device), size, batch)
    peak, source = ((r["datasheet_tflops"], "datasheet dense bf16") if r["datasheet_tflops"]
                    else (r["matmul_tflops"], "measured matmul"))
    values = {k: r[k] / r["resident"] for k in ("tensor_input", "pil_input", "tensor_train", "pil_train")}
    values["mfu"] = r["tflops"] / peak
    details = {k: f"{r[k]:.0f} img/s vs {r['resident']:.0f} img/s resident; {r['detail']}" for k in values if k in r}
    details["mfu"] = (f"{r['tflops']:.3g} TFLOPS ({r['flops_per_image'] / 1e9:.2f} GFLOP per image x "
                      f"{r['resident']:.0f} img/s) vs {peak:.3g} ({source}); a large matmul attains "
                      f"{r['matmul_tflops']:.3g}. Goal: FFCV's published ResNet-18 run (~9.8k img/s at ~176 px on "
                      "one A100) is ~0.2 of that card's 312")
    return [Row("input", name, values[k], unit, op, goal, details[k]) for k, name, unit, op, goal in INPUT_ROWS]


# --------------------------------------------------------------------------------------------------- main


def render(rows: list[Row]) -> str:
    w = max(len(r.name) for r in rows)
    lines = [f"{'section':8s}  {'measurement':{w}s}  {'value':>10s}  {'goal':>11s}  ok"]
    for r in rows:
        value = r.note if r.value is None else f"{r.value:10.3g}"
        ok = "-" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append(f"{r.section:8s}  {r.name:{w}s}  {value:>10s}  {r.op} {r.goal:8.3g}  {ok}")
    return "\n".join(lines)


SECTIONS = ("trainer", "probes", "cuda", "input", "claim", "smoke")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shrink every section (a check of the script, not a result)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    p.add_argument("--out", help="results file (default bench/results.json; with --quick a file in the temp folder)")
    p.add_argument("--cuda-on-cpu", action="store_true", help=argparse.SUPPRESS)  # exercise the CUDA code path
    p.add_argument("--input-on-cpu", action="store_true", help=argparse.SUPPRESS)  # the input section, on the CPU
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "kdclaims-bench-quick.json" if args.quick
                                           else ROOT / "bench" / "results.json")

    sys.path.insert(0, str(ROOT))
    t0 = time.time()
    load_before = os.getloadavg()
    info = machine()
    print(f"kdclaims bench{' --quick' if args.quick else ''}: {info['cpu']}, {info['cores']} cores, torch "
          f"{info['torch']}, {info['device']}; load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}", flush=True)
    rows: list[Row] = []
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="kdclaims-bench-"))
    try:
        for section in args.only or SECTIONS:
            ts = time.time()
            try:
                if section == "trainer":
                    rows += bench_trainer(args.quick)
                elif section == "probes":
                    rows += bench_probes(args.quick)
                elif section == "cuda":
                    rows += (bench_cuda(args.quick, "cpu", size=32, batch=16) if args.cuda_on_cpu
                             else bench_cuda(args.quick))
                elif section == "input":
                    rows += (bench_input(args.quick, "cpu", size=32, batch=8) if args.input_on_cpu
                             else bench_input(args.quick))
                elif section == "claim":
                    rows += bench_claim(args.quick, work)
                elif section == "smoke":
                    rows += bench_smoke(args.quick, work)
            except Exception as e:  # noqa: BLE001 - a broken section is a failed row, the others still run
                rows.append(Row(section, f"{section} section", None, "", "<=", 0.0,
                                note="error", detail=f"{type(e).__name__}: {e}"[:2000]))
            timings[section] = round(time.time() - ts, 1)
            print(f"  {section}: {timings[section]:.0f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    table = render(rows)
    print("\n" + table)
    for r in rows:
        if r.detail:
            print(f"  {r.name}: {r.detail}")
    total = time.time() - t0
    print(f"\ntotal {total:.0f}s; load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    result = {"machine": info, "quick": args.quick, "threads_in_process": THREADS,
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in load_after],
              "seconds": round(total, 1), "section_seconds": timings, "rows": [r.to_dict() for r in rows]}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
