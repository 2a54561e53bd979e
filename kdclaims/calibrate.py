"""Calibration of the verdict statistics by simulation: ``python -m kdclaims.calibrate [--sims N] [--write]``.

Simulated claim ``kl − independent > 0`` on 0/1 outcomes (correct or not per image):

    p[arm, seed, image] = q_image + g[arm, image] + u[arm, seed] + δ·[arm = kl],   y ~ Bernoulli(p),

q ~ U(0.2, 0.8) the image's difficulty (shared by both arms), g ~ N(0, 0.05²) truncated at ±2 sd (an image x arm
term: what one arm gets right on an image, whatever its seed), u ~ N(0, seed_sd²) truncated at ±3 sd (a seed
effect per arm and seed). p stays inside (0, 1), so the method-level truth is exactly θ = δ. Under the null
δ = 0 a verdict "supported" is a false support; with δ = ``PLANTED`` it is power. Coverage: the share of
(1 − 2α) intervals that contain δ.

Every simulation goes through ``kdclaims.stats.seed_answer``: the function that gives the verdicts. ``--write``
replaces the table between the markers in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdclaims import stats

IMAGES = (500, 2000)
SEEDS = (2, 3, 5, 8)
SEED_SDS = (0.0, 0.01, 0.03)
PLANTED = 0.03
IMAGE_ARM_SD = 0.05
ALPHA = 0.05
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


@dataclass
class Cell:
    images: int
    seeds: int
    seed_sd: float
    effect: float
    sims: int
    supported: float
    covered: float
    mean_mde: float

    @property
    def bound(self) -> float:
        """α + 2 Monte-Carlo standard errors: the most false support a calibrated test shows in ``sims`` runs."""
        return ALPHA + 2.0 * np.sqrt(ALPHA * (1 - ALPHA) / self.sims)

    @property
    def ok(self) -> bool:
        """Null cells: false support within its bound; every cell: coverage within 0.03 of 1 − 2α."""
        level = self.effect != 0 or self.supported <= self.bound
        return level and abs(self.covered - (1 - 2 * ALPHA)) <= 0.03


def simulate(rng: np.random.Generator, sims: int, images: int, seeds: int, seed_sd: float, effect: float):
    """(kl, independent) 0/1 arrays of shape (sims, seeds, images) from the model in the module docstring."""
    q = rng.uniform(0.2, 0.8, size=(sims, 1, 1, images))
    g = np.clip(rng.normal(0.0, IMAGE_ARM_SD, size=(sims, 2, 1, images)), -2 * IMAGE_ARM_SD, 2 * IMAGE_ARM_SD)
    u = np.clip(rng.normal(0.0, 1.0, size=(sims, 2, seeds, 1)), -3.0, 3.0) * seed_sd
    p = q + g + u + effect * np.array([0.0, 1.0])[None, :, None, None]
    y = (rng.random((sims, 2, seeds, images)) < p).astype(np.float64)
    return y[:, 1], y[:, 0]


def run_cell(rng: np.random.Generator, sims: int, images: int, seeds: int, seed_sd: float, effect: float,
             answer=None) -> Cell:
    """Simulate ``sims`` claims and judge each with ``answer(terms)`` (default: the verdict's seed-level answer,
    a dict with verdict, ci_low, ci_high, mde)."""
    answer = answer or (lambda terms: stats.seed_answer(terms, kind="directional", alternative="greater",
                                                       threshold=0.0, alpha=ALPHA))
    hits = covered = 0
    mdes = []
    chunk = max(1, 4_000_000 // (2 * seeds * images))
    for start in range(0, sims, chunk):
        kl, ind = simulate(rng, min(chunk, sims - start), images, seeds, seed_sd, effect)
        for a, b in zip(kl, ind):
            r = answer([stats.Term(1.0, a), stats.Term(-1.0, b)])
            hits += r["verdict"] == "supported"
            covered += r["ci_low"] <= effect <= r["ci_high"]
            mdes.append(r["mde"])
    return Cell(images, seeds, seed_sd, effect, sims, hits / sims, covered / sims, float(np.mean(mdes)))


def grid(sims: int, seed: int = 2026) -> list[Cell]:
    rng = np.random.default_rng(seed)
    return [run_cell(rng, sims, n, s, sd, eff)
            for eff in (0.0, PLANTED) for n in IMAGES for s in SEEDS for sd in SEED_SDS]


def table(cells: list[Cell]) -> str:
    rows = ["| images | seeds | seed sd | false support (null) | bound | power (δ = 0.03) | 90 % coverage "
            "(null / planted) | mean MDE | ok |", "|---|---|---|---|---|---|---|---|---|"]
    null = {(c.images, c.seeds, c.seed_sd): c for c in cells if c.effect == 0}
    planted = {(c.images, c.seeds, c.seed_sd): c for c in cells if c.effect != 0}
    for key, c in null.items():
        p = planted[key]
        ok = "yes" if c.ok and p.ok else "NO"
        rows.append(f"| {c.images} | {c.seeds} | {c.seed_sd:g} | {100 * c.supported:.1f} % | {100 * c.bound:.1f} % | "
                    f"{100 * p.supported:.1f} % | {c.covered:.3f} / {p.covered:.3f} | {p.mean_mde:.3f} | {ok} |")
    return "\n".join(rows)


def write_table(text: str, path: Path) -> None:
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found")
    head, rest = doc.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdclaims.calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulations per cell (default 1000)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--write", metavar="MD", nargs="?", const="docs/statistics.md",
                    help="replace the table in this markdown file (default docs/statistics.md)")
    args = ap.parse_args(argv)
    t0 = time.process_time()
    cells = grid(args.sims, args.seed)
    text = table(cells) + (f"\n\n{args.sims} simulations per cell, seed {args.seed}, α = {ALPHA}, "
                           f"image x arm sd {IMAGE_ARM_SD}; {time.process_time() - t0:.0f} s of CPU time.")
    print(text)
    if args.write:
        write_table(text, Path(args.write))
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
