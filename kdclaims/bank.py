"""The models of one claim item: teachers and students built on first use, trained once through the store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdclaims.data.base import Split
from kdclaims.models.base import Classifier
from kdclaims.convergence import converged
from kdclaims.recipe import Recipe
from kdclaims.seeding import INIT_STREAM, METHOD_STREAM, STREAMS_VERSION, derive_seed, seeded, stream_seed
from kdclaims.spec.schema import Claim, DataSpec, TeacherSpec
from kdclaims.store import CheckpointStore, TrainedState, recipe_key

log = logging.getLogger("kdclaims.bank")
EVAL_SAMPLE_SEED = 20231  # fixed: every arm, seed and run sees the same evaluation images
VALIDATION_SEED = 7919  # fixed: every model of a data set holds out the same validation images


@dataclass
class RunContext:
    """Where things are and where they run: the pytest options, or the CLI's."""

    store: CheckpointStore
    tier: str = "smoke"
    data_root: Path | None = None
    weights_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    recipe_mode: str = "paper"


class Bank:
    """Implements the ``ModelBank`` protocol of ``kdclaims.probes.base`` for one resolved claim."""

    def __init__(self, claim: Claim, ctx: RunContext):
        self.claim, self.ctx = claim, ctx
        self.seeds = list(claim.setup.seeds)
        self.arms = [m.name for m in claim.setup.methods]
        self.teachers = list(claim.setup.all_teachers())
        self.device = ctx.device
        self._methods = {m.name: m for m in claim.setup.methods}
        self._models: dict[tuple[str, int | None], Classifier] = {}
        self._splits: dict[str, Split] = {}
        self._read: dict[str, tuple[DataSpec, str, frozenset[str]]] = {}  # split key -> (spec, which, files read)
        self._prints: dict[str, str] = {}  # split key -> content fingerprint (``kdclaims.fingerprint``)
        self._keys: dict[tuple[str, int | None], dict[str, Any]] = {}
        # one per model: model, seed, source (cache/trained/weights), key, history (per-epoch dicts), converged
        self.events: list[dict[str, Any]] = []

    # -- data ------------------------------------------------------------------------------------------
    def split(self, spec: DataSpec, which: str) -> Split:
        from kdclaims.data import build_dataset

        k = f"{which}:{spec.model_dump_json()}"
        if k not in self._splits:
            from kdclaims.fingerprint import recording_reads

            with recording_reads() as files:
                self._splits[k] = build_dataset(spec.name, which, root=self.ctx.data_root, seed=0, **spec.params)
            self._read[k] = (spec, which, frozenset(files))
        return self._splits[k]

    def training_parts(self, spec: DataSpec, recipe: Recipe) -> tuple[Split, Split | None]:
        """(images a model trains on, validation images or None): ``recipe.validation`` of the training split,
        stratified and seeded with ``VALIDATION_SEED``, is held out. Test images never enter either."""
        full = self.split(spec, "train")
        if recipe.validation == 0:
            return full, None
        k = f"holdout:{recipe.validation}:{spec.model_dump_json()}"
        if k not in self._splits:
            from kdclaims.data.sampling import holdout_indices

            val = holdout_indices(full.labels, recipe.validation, torch.Generator().manual_seed(VALIDATION_SEED))
            keep = torch.ones(len(full), dtype=torch.bool)
            keep[val] = False
            self._splits[k] = full.subset(torch.nonzero(keep).flatten())
            self._splits[k + ":val"] = full.subset(val, name=f"{full.name}/validation")
        return self._splits[k], self._splits[k + ":val"]

    def data_fingerprint(self, spec: DataSpec, which: str) -> str:
        """The content fingerprint of a split (built on first use): what enters the model keys."""
        from kdclaims.fingerprint import split_fingerprint

        k = f"{which}:{spec.model_dump_json()}"
        if k not in self._prints:
            split = self.split(spec, which)
            self._prints[k] = split_fingerprint(split, self._read[k][2])
        return self._prints[k]

    def reads(self) -> list[dict[str, Any]]:
        """Every split this bank has built, with its fingerprint; the probe cache stores it with the measurements."""
        return [{"which": which, "data": spec.key(), "sha": self.data_fingerprint(spec, which)}
                for spec, which, _ in list(self._read.values())]

    def changed_reads(self, reads: list[dict[str, Any]]) -> list[str]:
        """The splits among ``reads`` (see ``reads``) whose content differs now; reading them again raises what
        reading bad data raises (missing files, truncated files)."""
        changed = []
        for r in reads:
            spec = DataSpec.model_validate(r["data"])
            if self.data_fingerprint(spec, r["which"]) != r["sha"]:
                changed.append(f"{spec.name} ({r['which']})")
        return changed

    def for_probe(self, probe) -> "Bank":
        """A view of this bank whose ``eval_split`` follows another probe spec (``extra_probes``)."""
        view = object.__new__(Bank)
        view.__dict__.update(self.__dict__)
        view._probe = probe
        return view

    def eval_split(self, data: Any = None) -> Split:
        probe = getattr(self, "_probe", None) or self.claim.probe
        spec = DataSpec.model_validate(data) if data is not None else (probe.data or self.claim.setup.data)
        k = f"eval:{spec.model_dump_json()}:{probe.images}"
        if k not in self._splits:
            self._splits[k] = self.split(spec, "test").sample(probe.images, seed=EVAL_SAMPLE_SEED)
        return self._splits[k]

    def arm_method(self, arm: str) -> str:
        return self._methods[arm].method

    # -- models ----------------------------------------------------------------------------------------
    def model(self, name: str, seed: int | None = None) -> Classifier:
        if name in self.teachers:
            return self._teacher(name)
        if name not in self._methods:
            raise KeyError(f"no model '{name}'; arms: {self.arms}; teachers: {self.teachers}")
        if seed is None:
            raise ValueError(f"student arm '{name}' needs a seed; seeds: {self.seeds}")
        return self._student(name, seed)

    def model_key(self, name: str, seed: int | None = None) -> dict[str, Any]:
        """The recipe dict that identifies a model (without training it when it is a student)."""
        if name in self.teachers:
            return self._teacher_key(name)
        return self._student_key(name, seed)

    def _build(self, arch_spec, split: Split) -> Classifier:
        from kdclaims.models import create_model

        return create_model(arch_spec.arch, split.num_classes, in_chans=split.channels, mean=split.mean,
                            std=split.std, **arch_spec.params)

    def _teacher_spec(self, name: str) -> tuple[TeacherSpec, DataSpec, Recipe]:
        t = self.claim.setup.all_teachers()[name]
        return t, t.data or self.claim.setup.data, t.recipe or self.claim.setup.recipe

    def _teacher_key(self, name: str) -> dict[str, Any]:
        t, data, recipe = self._teacher_spec(name)
        if t.weights:
            from kdclaims.fingerprint import weights_fingerprint
            from kdclaims.models.weights import resolve_weights

            return {"kind": "weights", "arch": t.arch, "params": t.params, "weights": t.weights, "data": data.key(),
                    **weights_fingerprint(resolve_weights(t.weights, self.ctx.weights_dir))}
        return {"kind": "teacher", "arch": t.arch, "params": t.params, "data": data.key(),
                "data_sha": self.data_fingerprint(data, "train"), "recipe": recipe.key(), "seed": t.seed,
                "streams": STREAMS_VERSION, "tier": self.ctx.tier}

    def _teacher(self, name: str) -> Classifier:
        if (name, None) in self._models:
            return self._models[(name, None)]
        from kdclaims.registries import METHODS

        t, data, recipe = self._teacher_spec(name)
        split, val = self.training_parts(data, recipe) if not t.weights else (self.split(data, "train"), None)
        stream = stream_seed("teacher", t.seed)
        with seeded(derive_seed(stream, INIT_STREAM)):
            model = self._build(t, split)
        if t.weights:
            from kdclaims.models.weights import load_weights

            load_weights(model, t.weights, self.ctx.weights_dir)
            self.events.append({"model": name, "seed": None, "source": f"weights {t.weights}", "history": None,
                                "converged": None})
        else:
            key = self._teacher_key(name)

            def train_fn(workdir: Path) -> dict[str, torch.Tensor]:
                distiller = METHODS.get("independent")(model, None, split)
                return self._train(distiller, split, val, recipe, stream, workdir, f"teacher {name}")

            state, hit = self.ctx.store.get_or_train(key, train_fn, label=f"{self.claim.id}:{name}")
            model.load_state_dict(state)
            self._record(name, None, key, recipe, state, hit)
        model.to(self.device).eval()
        self._models[(name, None)] = model
        return model

    def _student_parts(self, arm: str) -> tuple[Any, Any, DataSpec, Recipe]:
        from kdclaims.registries import METHODS

        m = self._methods[arm]
        builder = METHODS.get(m.method)
        recipe = self.claim.setup.recipe
        if self.ctx.recipe_mode == "fast" and self.claim.fast is not None:
            recipe = Recipe.model_validate({**recipe.model_dump(), **self.claim.fast.recipe})
        elif m.recipe:
            recipe = Recipe.model_validate({**recipe.model_dump(), **m.recipe})
        return m, builder, self.claim.setup.data, recipe

    def _student_key(self, arm: str, seed: int | None) -> dict[str, Any]:
        m, builder, data, recipe = self._student_parts(arm)
        needs_teacher = getattr(builder, "needs_teacher", True)
        s = self.claim.setup.student
        return {"kind": "student", "arch": s.arch, "params": s.params, "method": m.method, "method_params": m.params,
                "teacher": self._teacher_key(m.teacher) if needs_teacher else None, "data": data.key(),
                "data_sha": self.data_fingerprint(data, "train"), "recipe": recipe.key(), "seed": seed,
                "streams": STREAMS_VERSION, "tier": self.ctx.tier}

    def _student(self, arm: str, seed: int) -> Classifier:
        if (arm, seed) in self._models:
            return self._models[(arm, seed)]
        m, builder, data, recipe = self._student_parts(arm)
        needs_teacher = getattr(builder, "needs_teacher", True)
        split, val = self.training_parts(data, recipe)
        key = self._student_key(arm, seed)
        stream = stream_seed("student", seed)  # shared by every arm of this seed: the paired design
        with seeded(derive_seed(stream, INIT_STREAM)):
            model = self._build(self.claim.setup.student, split)

        def train_fn(workdir: Path) -> dict[str, torch.Tensor]:
            teacher = self._teacher(m.teacher) if needs_teacher else None
            # a method's own parts (Hint regressor, CRD heads and banks) are a function of the key alone, not of
            # whatever this process drew from the global RNG before (loading or training the teacher, other items)
            with seeded(derive_seed(stream, METHOD_STREAM)):
                distiller = builder(model, teacher, split, **m.params)
            return self._train(distiller, split, val, recipe, stream, workdir, f"{arm} seed {seed}")

        state, hit = self.ctx.store.get_or_train(key, train_fn, label=f"{self.claim.id}:{arm}:{seed}")
        model.load_state_dict(state)
        model.to(self.device).eval()
        self._record(arm, seed, key, recipe, state, hit)
        self._models[(arm, seed)] = model
        return model

    def _record(self, name: str, seed: int | None, key: dict[str, Any], recipe: Recipe, state, hit: bool) -> None:
        """One ``events`` entry; the history comes from this training or from the store entry's manifest."""
        info = getattr(state, "info", None)
        if info is not None:
            history = info.get("history")
        else:
            try:
                history = self.ctx.store.manifest(recipe_key(key)).get("training", {}).get("history")
            except (OSError, ValueError, AttributeError):
                history = None
        self.events.append({"model": name, "seed": seed, "source": "cache" if hit else "trained",
                            "key": recipe_key(key), "history": history,
                            "converged": converged(history, recipe.convergence)})

    def _train(self, distiller, split: Split, val: Split | None, recipe: Recipe, stream: int, workdir: Path,
               desc: str) -> TrainedState:
        """Train; the result carries the history and the seconds of this training alone (a teacher trained on
        demand before it is not counted)."""
        from kdclaims.train import train

        tic = time.perf_counter()
        result = train(distiller, split, recipe, seed=stream, device=self.device, workdir=workdir,
                       progress=self.ctx.progress, desc=f"{self.claim.id} {desc}", validation=val)
        return TrainedState(result.state_dict, history=result.history, seconds=time.perf_counter() - tic,
                            images=len(split), validation_images=len(val) if val is not None else 0)
