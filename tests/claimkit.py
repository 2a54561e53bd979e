"""Helpers that write small claim files for engine tests (synthetic data: smoke-test only)."""

from __future__ import annotations

from pathlib import Path

TINY_CLAIM = """\
id: {id}
title: Tiny test claim
paper: {{section: "4", table: "1"}}
statement: A tiny distilled student is compared with its independent twin on synthetic data.
setup:
  teacher: {{arch: tiny_cnn_wide, recipe: {{epochs: 2, batch_size: 32, optimizer: adam, lr: 0.01, weight_decay: 0.0}}}}
  student: {{arch: tiny_cnn}}
  methods:
    - independent
    - {{name: kl, params: {{gamma: 0.5, alpha: 0.5, tau: 4.0}}}}
  data: {{name: synthetic, n: 160, size: 8, num_classes: 4}}
  seeds: [0]
  recipe: {{epochs: 1, batch_size: 32, optimizer: adam, lr: 0.01, weight_decay: 0.0}}
probe: {{name: accuracy, images: 80}}
expect:
  - {{metric: accuracy, compare: "kl > independent"}}
significance: {{resamples: 200}}
tiers:
  smoke: {{}}
"""


def write_claim(folder: Path, name: str = "tiny.yaml", claim_id: str = "tiny-claim", text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text if text is not None else TINY_CLAIM.format(id=claim_id))
    return path
