"""The bank's training side: each model's random streams, models as functions of their key, convergence records.

Tiny claims on synthetic data (claimkit); every training here is a few steps of tiny CNNs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdclaims.bank import Bank, RunContext
from kdclaims.spec.loader import load_claim_file
from kdclaims.store import CheckpointStore
from tests.claimkit import TINY_CLAIM, write_claim

HINT_CLAIM = TINY_CLAIM.replace(
    "    - {{name: kl, params: {{gamma: 0.5, alpha: 0.5, tau: 4.0}}}}\n",
    "    - {{name: kl, params: {{gamma: 0.5, alpha: 0.5, tau: 4.0}}}}\n"
    "    - {{name: hint, params: {{gamma: 1.0, beta: 2.0}}}}\n"
    "    - {{name: crd, params: {{gamma: 1.0, beta: 0.1, nce_t: 0.1, N: 16}}}}\n",
).replace("seeds: [0]", "seeds: [0, 1]")


def tiny_claim(tmp_path: Path, text: str = HINT_CLAIM, tier: str = "smoke"):
    path = write_claim(tmp_path / "claims", text=text.format(id="bank-claim"))
    return next(i.claim for i in load_claim_file(path).items if i.tier == tier and i.claim is not None)


def make_bank(tmp_path: Path, claim, store: str = "store") -> Bank:
    return Bank(claim, RunContext(store=CheckpointStore(tmp_path / store), tier=claim.tier))


def test_no_student_shares_its_teachers_batch_order_and_paired_students_share_theirs(tmp_path, monkeypatch):
    """Each model's training seed as the trainer receives it, turned into its epoch-0 and epoch-1 batch orders:
    the teacher's order differs from every student's, the arms of one seed share one order, and seeds differ.
    Fails without role-derived streams (checked: with ``stream_seed`` returning the bare seed, the teacher (seed 0)
    and every seed-0 student got one batch order)."""
    import kdclaims.train as trainer

    orders: dict[str, list[torch.Tensor]] = {}
    real_train = trainer.train

    def recording_train(distiller, split, recipe, *, seed, desc="", **kw):
        orders[desc.split(" ", 1)[1]] = [trainer.batch_order(len(split), seed, e) for e in (0, 1)]
        return real_train(distiller, split, recipe.model_copy(update={"epochs": 1, "max_steps": 1}), seed=seed,
                          desc=desc, **kw)

    monkeypatch.setattr(trainer, "train", recording_train)
    bank = make_bank(tmp_path, tiny_claim(tmp_path))
    for arm in bank.arms:
        for seed in bank.seeds:
            bank.model(arm, seed)
    teacher = orders.pop("teacher teacher")
    assert len(orders) == len(bank.arms) * len(bank.seeds) == 8
    for name, student in orders.items():
        assert all(not torch.equal(t, s) for t, s in zip(teacher, student)), name
    for seed in bank.seeds:
        reference = orders[f"independent seed {seed}"]
        for arm in bank.arms:
            assert all(torch.equal(r, o) for r, o in zip(reference, orders[f"{arm} seed {seed}"])), (arm, seed)
    assert not torch.equal(orders["independent seed 0"][0], orders["independent seed 1"][0])
