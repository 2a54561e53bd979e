"""§4.4: how often does a student predict the teacher's class on images from (unseen) domains?

``consensus/<domain>[arm]`` is 1 on an image when ``argmax student(x) == argmax teacher(x)``, right or wrong,
per seed. Predictions are compared in the models' own label space (e.g. 1000 ImageNet classes on the 16-class
model-vs-human images), so no label mapping is involved.

Params: ``domains`` (list; each a group name of the evaluation split, or else a dataset the bank resolves with
``eval_split(name)``; without it, the metric ``consensus`` over the whole evaluation split), ``teacher`` (the
teacher-like model to agree with, default ``teacher``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdclaims.data.base import Split
from kdclaims.probes.base import ModelBank, Measurements
from kdclaims.probes.common import batch_size, check_params, predict, require_teacher, students
from kdclaims.registries import PROBES

PROBE = "consensus"


def _domains(bank: ModelBank, split: Split, domains: Any) -> list[tuple[str, Split]]:
    if domains is None:
        return [(PROBE, split)]
    if isinstance(domains, str) or not isinstance(domains, (list, tuple)) or not domains:
        raise ValueError(f"probe '{PROBE}': domains must be a non-empty list of names, got {domains!r}")
    out = []
    for d in domains:
        sub = split.group(d) if d in split.group_names else bank.eval_split(d)
        if len(sub) == 0:
            raise ValueError(f"probe '{PROBE}': domain '{d}' has no images")
        out.append((f"{PROBE}/{d}", sub))
    return out


@PROBES.register(PROBE)
def consensus(bank: ModelBank, params: dict[str, Any]) -> Measurements:
    check_params(PROBE, params, optional=("domains", "teacher"))
    bs = batch_size(PROBE, params)
    teacher_name = require_teacher(PROBE, bank, params.get("teacher", "teacher"))
    split = bank.eval_split(params.get("data"))
    teacher = bank.model(teacher_name)
    models = list(students(bank))
    out = Measurements()
    sizes: dict[str, int] = {}
    for metric, sub in _domains(bank, split, params.get("domains")):
        ref = predict(teacher, sub.x, bs, PROBE).numpy()
        rows = {arm: np.empty((len(bank.seeds), len(sub))) for arm in bank.arms}
        for arm, row, _seed, model in models:
            rows[arm][row] = predict(model, sub.x, bs, PROBE).numpy() == ref
        for arm in bank.arms:
            out.add(metric, arm, rows[arm])
        sizes[metric] = len(sub)
    out.extras.update(teacher=teacher_name, n_images=sizes)
    return out
