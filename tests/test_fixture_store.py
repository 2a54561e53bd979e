"""fixtures/store: every smoke model is shipped pre-trained, served read-only and sha-checked, never trained again.

The smoke tier's planted effects must hold on every CPU; training rounds differently under other SIMD kernels, so
smoke items load their models from this store (see ``kdclaims.fixture_store``)."""

from __future__ import annotations

import shutil

import pytest
import torch

from kdclaims import fixture_store
from kdclaims.bank import Bank, RunContext
from kdclaims.store import CheckpointStore, recipe_key


def _accuracy_gain_smoke():
    return next(i.claim for i in fixture_store.smoke_items() if i.claim.id == "accuracy-gain")


def test_every_smoke_model_is_in_the_fixture_store():
    """A recipe change (a new key) without a rebuilt store fails here, naming the models and the command.
    Checked: against an empty folder every smoke model is reported missing (``missing_keys(tmp)``)."""
    missing = fixture_store.missing_keys()
    assert not missing, (f"{len(missing)} smoke models are not in fixtures/store (recipe keys changed?), e.g. "
                         f"{missing[:4]}; rebuild it with `{fixture_store.REBUILD}` and commit fixtures/store")


def test_missing_keys_sees_an_empty_store(tmp_path):
    """The presence check can fail: an empty store lacks every model."""
    missing = fixture_store.missing_keys(tmp_path)
    assert len(missing) > 20 and any(m.startswith("accuracy-gain:kl:") for m in missing)


def test_a_smoke_student_comes_from_the_fallback_without_training(tmp_path):
    """Checked: with ``fallbacks=()`` the same call trains the student (``store.trained == 1``)."""
    store = CheckpointStore(tmp_path / "cache", fallbacks=fixture_store.fallbacks())
    bank = Bank(_accuracy_gain_smoke(), RunContext(store=store, tier="smoke"))
    bank.model("kl", 0)
    assert store.trained == 0 and store.hits == 1
    assert not any((tmp_path / "cache" / "ckpt").iterdir()), "a fallback hit must not be copied into the cache"


def test_a_damaged_fallback_entry_is_not_served(tmp_path):
    """A fallback entry whose model.pt no longer matches its manifest is skipped and the model is trained.
    Checked: with ``_from_fallbacks`` loading the file without ``load``'s sha check, the damaged tensor is served."""
    claim = _accuracy_gain_smoke()
    probe_ctx = RunContext(store=CheckpointStore.read_only(fixture_store.FIXTURE_STORE), tier="smoke")
    recipe = Bank(claim, probe_ctx).model_key("independent", 0)
    key = recipe_key(recipe)
    src = fixture_store.FIXTURE_STORE / "ckpt" / key[:2] / key
    dst = tmp_path / "fb" / "ckpt" / key[:2] / key
    shutil.copytree(src, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    name = next(iter(state))
    state[name] = state[name] + 1.0
    torch.save(state, dst / "model.pt")
    store = CheckpointStore(tmp_path / "cache", fallbacks=(CheckpointStore.read_only(tmp_path / "fb"),))
    fresh = {"w": torch.zeros(1)}
    got, hit = store.get_or_train(recipe, lambda workdir: fresh)
    assert not hit and store.trained == 1 and torch.equal(got["w"], fresh["w"])


def test_the_fallback_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("KDCLAIMS_FIXTURE_STORE", "0")
    assert fixture_store.fallbacks() == ()
    monkeypatch.delenv("KDCLAIMS_FIXTURE_STORE")
    assert len(fixture_store.fallbacks()) == 1


def test_read_only_store_writes_nothing(tmp_path):
    """Opening a fallback must not create folders (the checkout may be read-only)."""
    CheckpointStore.read_only(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
