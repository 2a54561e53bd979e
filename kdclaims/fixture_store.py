"""The shipped store of pre-trained smoke-tier models (``fixtures/store``) and how it is rebuilt.

Why: the smoke tier's planted effects must come out the same on every CPU. Training rounds differently under the
AVX2, AVX512 and default kernels, so smoke items load their tiny models from a store made once by
``python fixtures/make_store.py`` and keyed exactly as the real store keys them. Inference differs between kernels
only in the last bits. Training itself is covered by the trainer and method tests.

The fixture store is a read-only fallback of every ``CheckpointStore`` the plugin and the CLI open: an entry missing
from the user's cache is looked up there (sha256-checked) before anything is trained. Keys name their tier, so only
smoke models are ever found there. ``KDCLAIMS_FIXTURE_STORE=0`` turns the fallback off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdclaims.store import CheckpointStore, recipe_key

FIXTURE_STORE = Path(__file__).resolve().parent.parent / "fixtures" / "store"
REBUILD = "python fixtures/make_store.py"


def fallbacks() -> tuple[CheckpointStore, ...]:
    """The read-only fixture store, when this is a checkout that ships one and it is not turned off."""
    if os.environ.get("KDCLAIMS_FIXTURE_STORE", "1") == "0" or not (FIXTURE_STORE / "ckpt").is_dir():
        return ()
    return (CheckpointStore.read_only(FIXTURE_STORE),)


def smoke_items(paths: list[Path] | None = None) -> Iterator[Any]:
    """Every valid smoke-tier claim item under ``paths`` (default: the checkout's ``claims/``)."""
    from kdclaims.spec.loader import find_claim_files, load_claim_file

    for f in find_claim_files(paths or [FIXTURE_STORE.parent.parent / "claims"]):
        for item in load_claim_file(f).items:
            if item.tier == "smoke" and item.claim is not None:
                yield item


def trained_models(claim: Any, ctx: Any) -> dict[str, dict[str, Any]]:
    """``{label: recipe}`` of every model of ``claim`` that is trained (not loaded from a weights file)."""
    from kdclaims.bank import Bank

    bank = Bank(claim, ctx)
    out = {f"{claim.id}:{t}": bank.model_key(t) for t in bank.teachers}
    out.update({f"{claim.id}:{arm}:{s}": bank.model_key(arm, s) for arm in bank.arms for s in bank.seeds})
    return {label: key for label, key in out.items() if key.get("kind") != "weights"}


def missing_keys(store_root: Path = FIXTURE_STORE) -> list[str]:
    """Labels (``claim:arm:seed``) of smoke models whose recipe key has no complete entry in the fixture store."""
    from kdclaims.bank import RunContext

    store = CheckpointStore.read_only(store_root)
    ctx = RunContext(store=store, tier="smoke", data_root=FIXTURE_STORE.parent / "data",
                     weights_dir=FIXTURE_STORE.parent / "weights")
    missing = []
    for item in smoke_items():
        for label, key in trained_models(item.claim, ctx).items():
            if not store.is_complete(recipe_key(key)):
                missing.append(label)
    return missing
