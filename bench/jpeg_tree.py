#!/usr/bin/env python
"""An ImageFolder tree of JPEGs at ImageNet-like sizes, cut from scikit-learn's two sample photos (bench input).

    python bench/jpeg_tree.py OUT [--files 3000] [--classes 100] [--workers 8]

writes ``OUT/imagenet/train/<class>/*.JPEG`` (``--files`` images) and ``OUT/imagenet/val/<class>/*.JPEG`` (a tenth
as many), the layout the ``imagenet`` dataset reads. Image ``i`` is a random crop (a quarter to all of a photo's
area, aspect 3:4 to 4:3) resized to about 500 x 375 (one in five portrait, each side within ±15 %), its brightness
scaled by U[0.8, 1.2], saved at JPEG quality 90: ImageNet's typical size and quality. A fixed function of
``(seed, split, i)``, so the same arguments write the same files. Nothing is committed: make it in a temp folder.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _photos() -> tuple[np.ndarray, ...]:
    sys.path.insert(0, str(ROOT))
    from kdclaims.data.sklearn_assets import sample_photo_arrays

    return sample_photo_arrays()


def make_image(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One random crop of ``photo`` at an ImageNet-like size, with a random brightness (module doc)."""
    h, w = photo.shape[:2]
    area = rng.uniform(0.25, 1.0) * h * w
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    ch, cw = min(h, round((area / aspect) ** 0.5)), min(w, round((area * aspect) ** 0.5))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out_w, out_h = (375, 500) if rng.random() < 0.2 else (500, 375)
    size = (round(out_w * rng.uniform(0.85, 1.15)), round(out_h * rng.uniform(0.85, 1.15)))
    crop = photo[top:top + ch, left:left + cw].astype(np.float32) * rng.uniform(0.8, 1.2)
    return Image.fromarray(crop.clip(0, 255).astype(np.uint8)).resize(size, Image.BILINEAR)


def _write(job: tuple[Path, int, int, int]) -> int:
    path, seed, split_id, i = job
    rng = np.random.default_rng([seed, split_id, i])
    photos = _photos()
    img = make_image(photos[i % len(photos)], rng)
    img.save(path, format="JPEG", quality=90)
    return path.stat().st_size


def make_tree(root: Path, files: int = 3000, classes: int = 100, workers: int = 8, seed: int = 0) -> dict:
    """Write the tree under ``root`` (module doc); returns counts and mean file size."""
    if files < classes or classes < 1:
        raise ValueError(f"need at least one file per class: files={files}, classes={classes}")
    jobs = []
    for split_id, (split, n) in enumerate((("train", files), ("val", max(classes, files // 10)))):
        for i in range(n):
            folder = root / "imagenet" / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{split}_{i:06d}.JPEG", seed, split_id, i))
    if workers > 1:  # spawned: the bench calls this after CUDA has started, and forking that process is unsafe
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            sizes = list(pool.map(_write, jobs, chunksize=32))
    else:
        sizes = [_write(job) for job in jobs]
    return {"train": files, "val": len(jobs) - files, "classes": classes, "mean_bytes": float(np.mean(sizes))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    info = make_tree(args.out, args.files, args.classes, args.workers, args.seed)
    print(f"{args.out}: {info['train']} train + {info['val']} val JPEGs in {info['classes']} classes, "
          f"mean {info['mean_bytes'] / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
