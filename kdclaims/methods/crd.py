"""Contrastive representation distillation (Tian et al. 2020; the paper's Eq. 3), memory-bank NCE version.

Both penultimate features are embedded by linear heads to ``feat_dim`` and L2-normalised: ``v_s``, ``v_t``.
Two memory banks (``n_data x feat_dim``, unit rows) hold past student and teacher embeddings of every training
image. For an anchor image ``i`` with positive index ``i`` and ``N`` negatives ``j_1..j_N`` drawn uniformly from
images of *other* classes, the scores are ``p(v, w) = exp(v . w / nce_t) / Z`` (``Z = mean score * n_data``,
estimated once on the first batch and then frozen), and with ``m = N * P_n = N / n_data``::

    L_NCE(v, bank) = -(1/B) sum_i [ log(p_i0 / (p_i0 + m)) + sum_k log(m / (p_ik + m)) ]
    L_CRD = L_NCE(v_t, student bank) + L_NCE(v_s, teacher bank)

which is Eq. 3 with ``h = p / (p + N/M)``, summed over the two directions. After each step the banks move to the
new embeddings, ``w_i <- normalise(momentum * w_i + (1 - momentum) * v_i)``. The teacher's head is trained with the
student; the teacher network is not. Negatives are drawn with replacement (independent draws from the noise
distribution, as NCE assumes); ``N`` is clamped to the smallest number of other-class images.
Under DDP, Z comes from all ranks' first batches and every rank applies all ranks' bank updates, so the banks stay
identical; the sampling generators travel in the state_dict (extra state), so a resumed run draws the same negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdclaims.data.base import Split
from kdclaims.methods.common import (
    CEDistiller,
    DeviceGenerators,
    all_gather_rows,
    all_reduce_mean,
    check_range,
    flat,
    infer_shapes,
    method_builder,
    model_device,
    sample_shape,
    seed_from_torch,
)
from kdclaims.models.base import Classifier
from kdclaims.registries import METHODS

_EPS = 1e-7


def nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """``-(1/B) sum_i [log(p_i0/(p_i0 + m)) + sum_{k>=1} log(m/(p_ik + m))]``, ``m = K / n_data``.

    ``scores`` is ``(B, 1 + K)``: column 0 the positive pair, the rest the ``K`` negatives.
    """
    k = scores.shape[1] - 1
    m = k / n_data
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + m + _EPS))
    log_d0 = torch.log(m / (neg + m + _EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


def random_unit_rows(n: int, dim: int, generator: torch.Generator) -> Tensor:
    return F.normalize(torch.randn(n, dim, generator=generator), dim=1)


class CRD(CEDistiller):
    """``L = gamma * CE(z_s, y) + beta * L_CRD`` (see the module docstring)."""

    needs_index = True

    def __init__(
        self,
        student: Classifier,
        teacher: Classifier,
        *,
        labels: Tensor,
        student_dim: int,
        teacher_dim: int,
        layer: str,
        teacher_layer: str,
        feat_dim: int,
        n_negatives: int,
        nce_t: float,
        momentum: float,
        gamma: float,
        beta: float,
        seed: int,
    ):
        super().__init__(student, teacher, gamma=gamma)
        device = model_device(student)  # the distiller's own parts start where the student is
        labels = labels.detach().to("cpu", torch.long)
        n = len(labels)
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
        most_negatives = n - int(counts.max())
        if most_negatives < 1:
            raise ValueError("crd needs training data of at least two classes")
        self.n_data = n
        self.n_negatives = min(n_negatives, most_negatives)
        self.layer, self.teacher_layer = layer, teacher_layer
        self.nce_t, self.momentum, self.beta, self.seed = nce_t, momentum, beta, seed
        self.embed_s = nn.Linear(student_dim, feat_dim)
        self.embed_t = nn.Linear(teacher_dim, feat_dim)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("bank_s", random_unit_rows(n, feat_dim, g))
        self.register_buffer("bank_t", random_unit_rows(n, feat_dim, g))
        self.register_buffer("z_s", torch.zeros(()))  # 0 = not estimated yet
        self.register_buffer("z_t", torch.zeros(()))
        # images sorted by class; class c occupies positions [start[c], start[c] + count[c]) of `order`
        self.register_buffer("order", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.generators = DeviceGenerators(seed)
        self.embed_s.to(device)
        self.embed_t.to(device)
        for name, buf in list(self.named_buffers(recurse=False)):
            setattr(self, name, buf.to(device))

    def get_extra_state(self) -> dict:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict) -> None:
        self.generators.load(state["generators"])

    def sample_negatives(self, index: Tensor) -> Tensor:
        """``(B, N)`` training-set indices, drawn uniformly with replacement from the classes other than each
        anchor's (the anchor's class from ``train_split.labels``)."""
        device = self.order.device
        index = index.to(device)
        cls = self.labels[index]
        start, count = self.class_start[cls][:, None], self.class_count[cls][:, None]
        available = self.n_data - count
        draws = torch.randint(
            0, 2**62, (len(index), self.n_negatives), generator=self.generators.get(device), device=device
        )
        pos = draws % available  # a position among the other-class images; the 2^62 range makes bias negligible
        pos = torch.where(pos < start, pos, pos + count)  # skip the anchor's class block
        return self.order[pos]

    def _scores(self, v: Tensor, bank: Tensor, idx: Tensor) -> Tensor:
        w = bank[idx]  # (B, 1 + N, d), a copy
        return torch.exp(torch.bmm(w, v.unsqueeze(2)).squeeze(2) / self.nce_t)

    @torch.no_grad()
    def _update_bank(self, bank: Tensor, index: Tensor, v: Tensor) -> None:
        rows = bank[index] * self.momentum + v.detach() * (1 - self.momentum)
        bank.index_copy_(0, index, F.normalize(rows, dim=1))

    def forward_train(self, x: Tensor, y: Tensor, index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if index is None:
            raise ValueError("crd needs each image's index in the training split (needs_index)")
        _, ft = self.teacher_taps(x, [self.teacher_layer])
        zs, fs = self.student_taps(x, [self.layer])
        index = index.to(self.bank_s.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            vs = F.normalize(self.embed_s(flat(fs[self.layer])), dim=1)
            vt = F.normalize(self.embed_t(flat(ft[self.teacher_layer])), dim=1)
            idx = torch.cat([index[:, None], self.sample_negatives(index)], dim=1)
            out_t = self._scores(vt, self.bank_s, idx)  # teacher anchors against past student embeddings
            out_s = self._scores(vs, self.bank_t, idx)  # student anchors against past teacher embeddings
            if self.z_s.item() == 0:  # estimated once, from the first batch (of all ranks)
                self.z_s.fill_(all_reduce_mean(out_s.detach().mean()) * self.n_data)
                self.z_t.fill_(all_reduce_mean(out_t.detach().mean()) * self.n_data)
            crd = nce_loss(out_s / self.z_s, self.n_data) + nce_loss(out_t / self.z_t, self.n_data)
            # under DDP every rank applies every rank's rows, so the banks stay identical across ranks
            index_all = all_gather_rows(index)
            self._update_bank(self.bank_s, index_all, all_gather_rows(vs.detach()))
            self._update_bank(self.bank_t, index_all, all_gather_rows(vt.detach()))
        return zs, {"ce": self.ce(zs, y), "crd": self.beta * crd}


@METHODS.register("crd")
@method_builder("crd", CRD)
def build_crd(
    student: Classifier,
    teacher: Classifier | None,
    train_split: Split,
    *,
    gamma: float = 1.0,
    beta: float = 0.8,
    feat_dim: int = 128,
    N: int = 16384,
    nce_t: float = 0.07,
    momentum: float = 0.5,
    layer: str = "penultimate",
    teacher_layer: str | None = None,
    seed: int | None = None,
) -> CRD:
    """Defaults: Appendix A's ImageNet settings (gamma = 1, beta = 0.8, nce_t = 0.07, N = 16384), RepDistiller's
    ``feat_dim = 128`` and ``momentum = 0.5``. ``seed`` (bank initialisation, negative sampling) defaults to a
    draw from torch's global RNG, so it follows the run's ``torch.manual_seed``.
    """
    m = "crd"
    assert teacher is not None
    teacher_layer = teacher_layer or layer
    shape = sample_shape(train_split)
    s_dim = infer_shapes(student, [layer], shape)[layer].numel()
    t_dim = infer_shapes(teacher, [teacher_layer], shape)[teacher_layer].numel()
    if int(feat_dim) < 1 or int(N) < 1:
        raise ValueError(f"method 'crd': feat_dim and N must be >= 1, got {feat_dim}, {N}")
    momentum = check_range(m, "momentum", momentum)
    if momentum >= 1:
        raise ValueError(f"method 'crd': momentum must be < 1, got {momentum}")
    return CRD(
        student,
        teacher,
        labels=train_split.labels,
        student_dim=s_dim,
        teacher_dim=t_dim,
        layer=layer,
        teacher_layer=teacher_layer,
        feat_dim=int(feat_dim),
        n_negatives=int(N),
        nce_t=check_range(m, "nce_t", nce_t, strict=True),
        momentum=momentum,
        gamma=check_range(m, "gamma", gamma),
        beta=check_range(m, "beta", beta),
        seed=seed_from_torch(seed),
    )
    return distiller
