"""A training recipe: everything the trainer needs besides the model, the method and the data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdclaims.convergence import Convergence


class Recipe(BaseModel):
    """Optimiser, schedule, augmentation and precision settings of one training run.

    ``augment`` lists batch augmentations by name with their parameters, applied in order to each training
    batch (``kdclaims.data.transforms.build_augment``), e.g. ``{name: color_jitter, brightness: 0.4}``.
    ``amp`` (bf16 autocast) and ``channels_last`` take effect on CUDA only. ``max_steps`` caps the steps of
    each epoch (smoke fixtures). ``validation`` holds that share of the training images out of training
    (stratified by class, the same images for every model of a data set) and records the model's accuracy on them
    after every epoch; test images are never used. ``convergence`` is the rule a model must meet
    (``kdclaims.convergence``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(1, ge=0, le=10_000)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["none", "step", "cosine", "onecycle"] = "none"
    milestones: tuple[int, ...] = ()
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: tuple[dict[str, Any], ...] = ()
    max_steps: int | None = Field(None, ge=1)
    amp: bool = True
    channels_last: bool = True
    grad_clip: float | None = Field(None, gt=0)
    validation: float = Field(0.0, ge=0, lt=1)
    convergence: Convergence | None = None

    @model_validator(mode="after")
    def _validation_for_convergence(self) -> "Recipe":
        if self.convergence is not None and self.convergence.monitor == "val_acc" and self.validation == 0:
            raise ValueError("convergence monitors val_acc: give the recipe a validation share, e.g. validation: 0.1")
        return self

    def key(self) -> dict[str, Any]:
        """The JSON-able content that identifies this recipe in the checkpoint store.

        A ``plateau`` convergence rule is left out: it judges a finished history and changes no weight, so editing
        it re-judges the stored models instead of retraining them. An ``early_stop`` rule is part of the key.
        Settings that cannot change the training are written in one canonical form, so that identical trainings
        share a key however their YAML spelled them: a step schedule whose milestones all fall at or after the
        last epoch is ``none``; ``milestones``/``gamma`` of any other schedule, and ``momentum``/``nesterov`` of
        Adam/AdamW, take their defaults.
        """
        out = self.model_dump(mode="json")
        if self.convergence is None or not self.convergence.stops_training:
            out.pop("convergence")
        fields = type(self).model_fields
        milestones = [m for m in self.milestones if m < self.epochs]  # milestone m scales epochs m, m+1, ...
        if self.schedule != "step" or not milestones:
            if self.schedule == "step":
                out["schedule"] = "none"
            out["milestones"], out["gamma"] = [], fields["gamma"].default
        else:
            out["milestones"] = milestones
        if self.optimizer != "sgd":
            out["momentum"], out["nesterov"] = fields["momentum"].default, fields["nesterov"].default
        return out
