"""A tiny training run that tests/test_ddp.py launches under torchrun (2 ranks, gloo) and runs in one process.

Usage: ``python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py OUT.pt [WORKDIR]``. Rank 0 saves
the distiller's weights, the history, the accuracy from ``evaluate`` and the world size to OUT.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.methods.base import Distiller
from kdclaims.models.base import Classifier
from kdclaims.recipe import Recipe
from kdclaims.train import evaluate, train

N, CLASSES, SIZE = 64, 4, 6


class EmbeddingCE(Distiller):
    """CE plus a per-image embedding pulled towards the student's logits: the extra trainable part (like a CRD
    memory head) only gets gradients through the images' indices, so DDP must shard indices with the images and
    all-reduce the extra part's gradients too."""

    needs_teacher = False
    needs_index = True

    def __init__(self, student: Classifier):
        super().__init__(student, None)
        self.embed = nn.Embedding(N, CLASSES)

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y), "embed": F.mse_loss(self.embed(index), logits)}


def build() -> tuple[Split, EmbeddingCE]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % CLASSES
    protos = torch.rand(CLASSES, 1, SIZE, SIZE, generator=g)
    x = (0.7 * protos[y] + 0.3 * torch.rand(N, 1, SIZE, SIZE, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, CLASSES))
    student = Classifier(net, arch="tiny", mean=(0.5,), std=(0.25,), taps={})
    return Split("synthetic", x, y, CLASSES), EmbeddingCE(student)


RECIPE = Recipe(
    epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine", max_steps=3,
    amp=False, channels_last=False, grad_clip=5.0,
)


def run(out: Path, workdir: Path | None = None) -> None:
    torch.set_num_threads(1)
    split, distiller = build()
    result = train(distiller, split, RECIPE, seed=3, workdir=workdir)
    acc = evaluate(distiller.student, split, batch_size=10)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_initialized() else (0, 1)
    if rank == 0:
        torch.save(
            {"distiller": distiller.state_dict(), "student": result.state_dict, "history": result.history,
             "steps": result.steps, "acc": acc, "world": world},
            out,
        )


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
