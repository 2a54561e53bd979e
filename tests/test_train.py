"""The trainer, seeding and atomic writes on tiny CPU models and synthetic tensors."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.atomic import atomic_save, atomic_write_text
from kdclaims.data.base import Split
from kdclaims.methods.base import Distiller
from kdclaims.models.base import Classifier
from kdclaims.recipe import Recipe
from kdclaims.seeding import derive_seed, deterministic, seed_everything
from kdclaims.train import CHECKPOINT, LRSchedule, TrainResult, batch_order, evaluate, predict, train

torch.set_num_threads(1)

CLASSES, SIZE = 3, 6


def make_split(n: int = 96, seed: int = 0) -> Split:
    """Three classes, each a fixed random pattern plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(CLASSES, 1, SIZE, SIZE, generator=g) - 0.5
    y = torch.arange(n) % CLASSES
    x = (0.5 + 0.6 * protos[y] + 0.15 * torch.randn(n, 1, SIZE, SIZE, generator=g)).clamp(0, 1)
    return Split("synthetic", x, y, CLASSES)


def make_model(init_seed: int = 0, *, bn: bool = False, dropout: float = 0.0) -> Classifier:
    torch.manual_seed(init_seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * SIZE * SIZE, CLASSES)]
    return Classifier(nn.Sequential(*layers), arch="tiny", mean=(0.5,), std=(0.25,), taps={"F1": "net.0"})


class CE(Distiller):
    """Plain cross-entropy, label smoothing read from an attribute like the project's CE distillers."""

    needs_teacher = False
    label_smoothing: float = 0.0

    def __init__(self, student: Classifier):
        super().__init__(student, None)
        self.seen_smoothing: list[float] = []

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        self.seen_smoothing.append(self.label_smoothing)
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)}


class KD(Distiller):
    """CE + temperature-2 KL to a frozen teacher, plus a trainable projection of the student's logits."""

    def __init__(self, student: Classifier, teacher: Classifier):
        super().__init__(student, teacher)
        self.proj = nn.Linear(CLASSES, CLASSES)
        self.teacher_modes: list[bool] = []

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        self.teacher_modes.append(any(m.training for m in self.teacher.modules()))
        zt = self.teacher_forward(x)
        zs = self.student(x)
        kl = F.kl_div(F.log_softmax(self.proj(zs) / 2, 1), F.softmax(zt / 2, 1), reduction="batchmean") * 4
        return zs, {"ce": F.cross_entropy(zs, y), "kl": kl}


class Indexed(CE):
    """Checks that the index of every training image is passed along with it."""

    needs_index = True

    def __init__(self, student: Classifier, split: Split):
        super().__init__(student)
        self.split = split
        self.indices: list[Tensor] = []

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        assert index is not None
        assert torch.equal(self.split.x[index], x) and torch.equal(self.split.y[index], y)
        self.indices.append(index.clone())
        return super().forward_train(x, y, index)


def base_recipe(**kw) -> Recipe:
    params = dict(epochs=3, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4, amp=False, channels_last=False)
    params.update(kw)
    return Recipe(**params)


def assert_same_weights(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_learns():
    split = make_split()
    distiller = CE(make_model())
    before = evaluate(distiller.student, split)
    result = train(distiller, split, base_recipe(epochs=6), seed=0)
    assert isinstance(result, TrainResult)
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.history[-1]["train_acc"] > result.history[0]["train_acc"]
    after = evaluate(distiller.student, split)
    assert after > max(before, 1 / CLASSES + 0.3)
    h = result.history[0]
    assert h["losses"].keys() == {"ce"} and math.isclose(h["losses"]["ce"], h["loss"], rel_tol=1e-6)
    assert h["seconds"] > 0 and h["images_per_s"] > 0
    assert result.steps == 6 * (96 // 16) and result.resumed_from_epoch is None
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
    assert_same_weights(result.state_dict, distiller.student.state_dict())
    assert result.state_dict["net.0.weight"].data_ptr() != distiller.student.net[0].weight.data_ptr()


def test_same_seed_same_weights_other_seed_other_weights():
    split = make_split()
    recipe = base_recipe(epochs=2)
    runs = [train(CE(make_model(bn=True, dropout=0.3)), split, recipe, seed=s).state_dict for s in (0, 0, 1)]
    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0]["net.0.weight"], runs[2]["net.0.weight"])


def _fake_transforms(calls: list) -> types.ModuleType:
    """A stand-in for ``kdclaims.data.transforms``: a seeded random horizontal flip per image."""

    def build_augment(specs):
        calls.append(("build", specs))

        def augment(x: Tensor, g: torch.Generator) -> Tensor:
            calls.append(("call", g))
            flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

        return augment

    module = types.ModuleType("kdclaims.data.transforms")
    module.build_augment = build_augment
    return module


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "step")])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch, optimizer, schedule):
    calls: list = []
    monkeypatch.setitem(sys.modules, "kdclaims.data.transforms", _fake_transforms(calls))
    split = make_split()
    recipe = base_recipe(
        optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, schedule=schedule, milestones=(2,),
        warmup_epochs=0.5, augment=({"name": "hflip"},),
    )
    full = train(CE(make_model(bn=True, dropout=0.2)), split, recipe, seed=7, workdir=tmp_path / "full")
    assert calls[0] == ("build", [{"name": "hflip"}]) and isinstance(calls[1][1], torch.Generator)

    work = tmp_path / "interrupted"
    crashing = CE(make_model(bn=True, dropout=0.2))
    n_calls = {"n": 0}
    original = crashing.forward_train

    def crash_in_epoch_2(x, y, index=None):
        n_calls["n"] += 1
        if n_calls["n"] == 6 + 3:  # 6 steps per epoch: the 3rd step of epoch 2
            raise KeyboardInterrupt("simulated crash")
        return original(x, y, index)

    monkeypatch.setattr(crashing, "forward_train", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(crashing, split, recipe, seed=7, workdir=work)
    saved = torch.load(work / CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert not [p for p in work.iterdir() if p.name != CHECKPOINT]  # no temp file left behind

    fresh = CE(make_model(init_seed=123, bn=True, dropout=0.2))  # other initial weights: all must come from disk
    resumed = train(fresh, split, recipe, seed=7, workdir=work)
    assert resumed.resumed_from_epoch == 1 and resumed.steps == full.steps == 3 * 6
    assert_same_weights(resumed.state_dict, full.state_dict)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]

    again = train(CE(make_model(init_seed=5, bn=True, dropout=0.2)), split, recipe, seed=7, workdir=work)  # finished: nothing to do
    assert again.resumed_from_epoch == 3 and again.steps == 18
    assert_same_weights(again.state_dict, full.state_dict)

    with pytest.raises(ValueError, match="another run"):
        train(CE(make_model()), split, recipe, seed=8, workdir=work)


def test_real_augmentation_is_seeded_by_the_run_seed():
    transforms = pytest.importorskip("kdclaims.data.transforms")
    if not hasattr(transforms, "build_augment"):
        pytest.skip("kdclaims.data.transforms.build_augment is not there yet")
    split = make_split()
    aug = base_recipe(epochs=2, augment=({"name": "hflip"}, {"name": "shift", "max_shift": 1}))
    a, b = (train(CE(make_model()), split, aug, seed=4).state_dict for _ in range(2))
    plain = train(CE(make_model()), split, base_recipe(epochs=2), seed=4).state_dict
    assert_same_weights(a, b)
    assert not torch.equal(a["net.0.weight"], plain["net.0.weight"])


def test_teacher_gets_no_optimizer_state_and_stays_in_eval(tmp_path):
    split = make_split()
    teacher = make_model(init_seed=1, bn=True, dropout=0.5)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = KD(make_model(bn=True), teacher)
    result = train(distiller, split, base_recipe(epochs=2), seed=0, workdir=tmp_path)
    assert set(result.history[0]["losses"]) == {"ce", "kl"}
    assert distiller.teacher_modes and not any(distiller.teacher_modes)
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert_same_weights(teacher.state_dict(), teacher_before)  # BatchNorm statistics included

    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    n_trainable = len(list(distiller.student.parameters())) + len(list(distiller.proj.parameters()))
    assert sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"]) == n_trainable
    assert len(ckpt["optimizer"]["state"]) == n_trainable  # momentum buffers for student and projection only
    assert set(ckpt["distiller"]) == set(distiller.state_dict())
    assert any(k.startswith("proj.") for k in ckpt["distiller"])


def test_index_passed_and_batches_cover_the_split_in_a_seeded_order():
    split = make_split(n=40)
    d = Indexed(make_model(), split)
    result = train(d, split, base_recipe(epochs=2, batch_size=8), seed=3)
    assert result.steps == 10 and len(d.indices) == 10
    epoch1, epoch2 = torch.cat(d.indices[:5]), torch.cat(d.indices[5:])
    assert sorted(epoch1.tolist()) == list(range(40)) == sorted(epoch2.tolist())
    assert torch.equal(epoch1, batch_order(40, 3, 0)) and torch.equal(epoch2, batch_order(40, 3, 1))
    assert not torch.equal(epoch1, epoch2)


def test_max_steps_and_a_split_smaller_than_a_batch():
    split = make_split(n=40)
    assert train(CE(make_model()), split, base_recipe(epochs=2, batch_size=8, max_steps=3), seed=0).steps == 6
    assert train(CE(make_model()), split, base_recipe(epochs=3, batch_size=16), seed=0).steps == 3 * 2  # 8 dropped
    d = Indexed(make_model(), split.subset(range(10)))
    r = train(d, d.split, base_recipe(epochs=2, batch_size=16), seed=0)  # one partial batch per epoch, not dropped
    assert r.steps == 2 and [len(i) for i in d.indices] == [10, 10]


def test_gradient_clipping_bounds_the_step():
    split = make_split(n=16)
    d = CE(make_model())
    before = torch.cat([p.detach().flatten().clone() for p in d.student.parameters()])
    recipe = base_recipe(epochs=1, momentum=0.0, weight_decay=0.0, lr=0.1, grad_clip=1e-3)
    train(d, split, recipe, seed=0)
    after = torch.cat([p.detach().flatten() for p in d.student.parameters()])
    assert 0 < (after - before).norm() <= 0.1 * 1e-3 * (1 + 1e-4)


def test_label_smoothing_reaches_the_method_and_is_restored():
    split = make_split(n=32)
    d = CE(make_model())
    train(d, split, base_recipe(epochs=1, label_smoothing=0.2), seed=0)
    assert d.seen_smoothing == [0.2, 0.2] and d.label_smoothing == 0.0

    class NoSmoothing(Distiller):
        needs_teacher = False

        def forward_train(self, x, y, index=None):
            z = self.student(x)
            return z, {"ce": F.cross_entropy(z, y)}

    with pytest.warns(UserWarning, match="label_smoothing"):
        train(NoSmoothing(make_model()), split, base_recipe(epochs=1, label_smoothing=0.1), seed=0)


def test_non_finite_loss_raises_and_writes_no_checkpoint(tmp_path):
    split = make_split(n=32)
    d = CE(make_model())
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(d, split, base_recipe(epochs=1, lr=1e30, momentum=0.0), seed=0, workdir=tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()


# ------------------------------------------------------------------------------------------------ schedules


def test_step_schedule_lr_at_known_steps():
    s = LRSchedule.from_recipe(base_recipe(epochs=6, schedule="step", milestones=(2, 4), gamma=0.1, lr=0.1), 10)
    expected = {0: 0.1, 19: 0.1, 20: 0.01, 39: 0.01, 40: 0.001, 59: 0.001}
    for step, lr in expected.items():
        assert math.isclose(s.lr(step), lr, rel_tol=1e-12), step


def test_cosine_schedule_lr_at_known_steps():
    s = LRSchedule.from_recipe(base_recipe(epochs=6, schedule="cosine", lr=0.2), 10)
    assert s.total_steps == 60
    assert s.lr(0) == 0.2
    assert math.isclose(s.lr(15), 0.2 * (1 + math.cos(math.pi / 4)) / 2, rel_tol=1e-12)
    assert math.isclose(s.lr(30), 0.1, rel_tol=1e-12)
    assert math.isclose(s.lr(60), 0.0, abs_tol=1e-15)
    lrs = [s.lr(i) for i in range(61)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_warmup_then_cosine():
    s = LRSchedule.from_recipe(base_recipe(epochs=6, schedule="cosine", lr=0.2, warmup_epochs=1), 10)
    assert s.warmup_steps == 10
    assert math.isclose(s.lr(0), 0.02, rel_tol=1e-12) and math.isclose(s.lr(4), 0.1, rel_tol=1e-12)
    assert s.lr(9) == 0.2 and s.lr(10) == 0.2
    assert math.isclose(s.lr(35), 0.1, rel_tol=1e-12)  # half way through the 50 cosine steps


def test_onecycle_rises_to_the_peak_then_anneals():
    s = LRSchedule.from_recipe(base_recipe(epochs=10, schedule="onecycle", lr=1.0), 10)
    assert math.isclose(s.lr(0), 1 / 25) and math.isclose(s.lr(30), 1.0)
    lrs = [s.lr(i) for i in range(101)]
    assert max(lrs) == lrs[30] and math.isclose(lrs[100], 1 / (25 * 1e4))
    assert all(a < b for a, b in zip(lrs[:30], lrs[1:31])) and all(a > b for a, b in zip(lrs[30:100], lrs[31:]))


def test_trainer_applies_the_schedule(tmp_path):
    split = make_split(n=32)
    recipe = base_recipe(epochs=3, schedule="step", milestones=(1, 2), gamma=0.5, lr=0.08)
    result = train(CE(make_model()), split, recipe, seed=0, workdir=tmp_path)
    assert [h["lr"] for h in result.history] == [0.08, 0.04, 0.02]
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.02


# ----------------------------------------------------------------------------------------------- evaluation


def test_predict_and_evaluate_match_a_direct_forward():
    split = make_split(n=50)
    model = make_model(bn=True, dropout=0.5)
    model.train()
    preds = predict(model, split, batch_size=16)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    model.eval()
    with torch.no_grad():
        direct = model(split.x).argmax(1)
    assert preds.dtype == torch.long and torch.equal(preds, direct)
    preds[0] = 0  # a normal tensor, writable outside inference mode
    assert evaluate(model, split, batch_size=7) == pytest.approx((direct == split.y).float().mean().item())


# -------------------------------------------------------------------------------------- seeding and atomic


def test_seed_everything_repeats_every_generator():
    import random

    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    seed_everything(11)
    first = draw()
    seed_everything(11)
    assert draw() == first
    seed_everything(12)
    assert draw() != first


def test_derive_seed_is_a_fixed_function_of_its_parts():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    seeds = {derive_seed(s, e, r) for s in range(5) for e in range(5) for r in range(3)}
    assert len(seeds) == 75 and all(0 <= s < 2**63 for s in seeds)


def test_derive_seed_tells_trailing_zeros_apart():
    """A model's init stream ``(seed, 0)`` must not be its epoch-0 stream ``(seed, 0, 0, 0)``. Fails without the
    length mixed into ``derive_seed`` (checked: NumPy's SeedSequence gives all four the same state)."""
    assert len({derive_seed(5), derive_seed(5, 0), derive_seed(5, 0, 0), derive_seed(5, 0, 0, 0)}) == 4


def test_deterministic_as_context_restores_the_previous_flags():
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        with deterministic(False):
            assert not torch.are_deterministic_algorithms_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


def test_atomic_save_and_write_text(tmp_path):
    path = tmp_path / "sub" / "w.pt"
    atomic_save({"w": torch.arange(4), "n": 3}, path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(4)) and loaded["n"] == 3

    with pytest.raises(Exception):
        atomic_save({"bad": lambda: None}, path)  # cannot be pickled: the old file must survive intact
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["w.pt"]

    text = tmp_path / "r.json"
    atomic_write_text(text, '{"a": 1}')
    atomic_write_text(text, "ünïcode")
    assert text.read_text(encoding="utf-8") == "ünïcode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "sub"]


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "not_torch", "empty"])
def test_damaged_resume_checkpoint_is_set_aside_and_training_restarts(tmp_path, damage):
    """An unreadable ``last.pt`` (disk damage; the trainer itself writes atomically) no longer blocks the run: it is
    renamed ``last.pt.damaged-*`` and training starts from epoch 0, ending with the uninterrupted run's weights.
    Checked to fail: before this change each case raised (RuntimeError/EOFError) and the run stopped."""
    split = make_split()
    recipe = base_recipe(epochs=2)
    full = train(CE(make_model()), split, recipe, seed=3)
    work = tmp_path / "work"
    train(CE(make_model()), split, base_recipe(epochs=1), seed=3, workdir=tmp_path / "other")
    good = (tmp_path / "other" / CHECKPOINT).read_bytes()
    work.mkdir()
    data = {"truncated": good[: len(good) // 2], "zeroed": bytes(len(good)), "not_torch": b"hello, not a zip",
            "empty": b""}[damage]
    (work / CHECKPOINT).write_bytes(data)
    with pytest.warns(RuntimeWarning, match="set aside"):
        result = train(CE(make_model()), split, recipe, seed=3, workdir=work)
    assert result.resumed_from_epoch is None and result.steps == full.steps
    assert_same_weights(result.state_dict, full.state_dict)
    aside = [p for p in work.iterdir() if p.name.startswith(f"{CHECKPOINT}.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == data  # kept for inspection, unchanged
