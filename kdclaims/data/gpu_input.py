"""The ``tensor`` input pipeline of ImageFolder splits: torchvision.io decoding and v2 transforms on tensors, run on
the device that trains (data parameter ``pipeline: tensor``; the default ``pil`` decodes with PIL in workers).

- Batches bound for CUDA: DataLoader workers only read file bytes (a file that is not a JPEG, e.g. a PNG, is decoded
  to a uint8 tensor there); the main process decodes a batch's JPEGs in one call on the GPU
  (``decode_jpeg(list, device="cuda")``, nvjpeg), crops, resizes and flips each image there, then scales the
  stacked batch to float [0, 1]. Random numbers come from the global CPU generator under ``fork_rng``, seeded per
  batch from the epoch's order generator: the same draws, in the same order, as ``ImageOps.compose()`` makes.
- Batches bound for the CPU: the workers decode with ``decode_image`` and apply the same v2 transform.

Both give the images of the ``pil`` pipeline up to resampling rounding: PIL and torchvision use the same
libjpeg-turbo on the CPU (identical pixels), PIL's resize rounds differently (at most 1/255 on the fixture tree);
nvjpeg's IDCT rounds differently again. Normalisation stays in the model, as for every split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.utils.data import Dataset

from kdclaims.data.base import Batch
from kdclaims.data.folder import FolderSplit, ImageFiles, eval_transform, train_transform

AUGMENTS = ("crop_flip", "flip", "none")
_JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


def _io():
    """torchvision.io, imported on first use (importing torchvision costs seconds)."""
    import torchvision.io

    return torchvision.io


def _functional():
    from torchvision.transforms.v2 import functional

    return functional


def is_jpeg(data: Tensor) -> bool:
    """Whether 1-D uint8 file bytes start with the JPEG SOI marker ``FF D8 FF`` (the name's extension is ignored)."""
    return len(data) >= 3 and tuple(data[:3].tolist()) == _JPEG_MAGIC


def decode_file(path: str, data: Tensor | None = None) -> Tensor:
    """The image at ``path`` (bytes ``data`` if already read) as a uint8 RGB (3, H, W) tensor, decoded on the CPU."""
    io = _io()
    try:
        data = io.read_file(path) if data is None else data
        return io.decode_image(data, mode=io.ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot decode the image: {exc}") from exc


def read_encoded(path: str) -> Tensor:
    """A JPEG's bytes (1-D uint8), or any other image decoded (3-D uint8): what a worker hands the main process."""
    data = _io().read_file(path)
    return data if is_jpeg(data) else decode_file(path, data)


class DecodedFiles(ImageFiles):
    """``(transform(decoded image), label, index)``: decoding by torchvision in the workers (batches for the CPU)."""

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.transform(decode_file(self.files[i])), self.labels[i], i


class EncodedFiles(ImageFiles):
    """``(read_encoded(file), label, index)``: the workers only read (batches decoded on the device)."""

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return read_encoded(self.files[i]), self.labels[i], i


def collate_encoded(items: Sequence[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A worker's batch as four tensors (each tensor crossing processes costs a file descriptor, so not one per
    image): every item's bytes flattened into one uint8 tensor, a (B, 4) table ``[length, C, H, W]`` (C = H = W = 0
    for encoded bytes), the labels and the indices. ``unpack`` undoes it."""
    data, labels, index = zip(*items)
    shapes = [[d.numel(), *(d.shape if d.ndim == 3 else (0, 0, 0))] for d in data]
    flat = torch.cat([d.reshape(-1) for d in data])
    index_t = torch.tensor(index, dtype=torch.long)
    return flat, torch.tensor(shapes, dtype=torch.long), torch.stack(list(labels)), index_t


def unpack(flat: Tensor, shapes: Tensor) -> list[Tensor]:
    """The items of ``collate_encoded``: 1-D encoded bytes or (C, H, W) decoded images, views into ``flat``."""
    out, start = [], 0
    for length, c, h, w in shapes.tolist():
        piece = flat[start:start + length]
        out.append(piece.view(c, h, w) if c else piece)
        start += length
    return out


def decode_batch(data: Sequence[Tensor], files: Sequence[str], device: torch.device) -> list[Tensor]:
    """uint8 RGB (3, H, W) images on ``device``: the 1-D entries (JPEG bytes) decoded in one ``decode_jpeg`` call
    on ``device``, the 3-D ones (decoded by a worker) moved there. A batch that the batched call refuses (a CMYK or
    damaged JPEG) is decoded file by file, on the CPU where the device decoder fails; an undecodable file is a
    ``ValueError`` naming it."""
    io = _io()
    out = [d.to(device, non_blocking=True) if d.ndim == 3 else d for d in data]
    jpeg = [k for k, d in enumerate(data) if d.ndim == 1]
    if not jpeg:
        return out
    try:
        decoded = io.decode_jpeg([data[k] for k in jpeg], mode=io.ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = [_decode_one(data[k], files[k], device) for k in jpeg]
    for k, img in zip(jpeg, decoded):
        out[k] = img
    return out


def _decode_one(data: Tensor, path: str, device: torch.device) -> Tensor:
    io = _io()
    try:
        return io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_file(path, data).to(device)


@dataclass(frozen=True)
class ImageOps:
    """What is done to each decoded image, for the whole batch at once (``apply``) or one image (``compose()``).

    ``crop_flip``: RandomResizedCrop(size, scale) then a horizontal flip with p = 1/2; ``flip``: Resize(resize)
    + CenterCrop(size) + flip; ``none``: Resize(resize) + CenterCrop(size), ``resize`` defaulting to size·256/224.
    Output: float (B, 3, size, size) in [0, 1].
    """

    size: int
    augment: str = "none"
    scale: tuple[float, float] = (0.08, 1.0)
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}; got '{self.augment}'")

    def compose(self) -> Callable:
        """The same operations as one v2 transform (PIL image or uint8 tensor in; the ``pil`` pipeline's own)."""
        if self.augment == "none":
            return eval_transform(self.size, self.resize)
        return train_transform(self.size, self.augment, self.scale)

    def apply(self, images: Sequence[Tensor]) -> Tensor:
        """uint8 (3, H, W) images of any sizes, on one device -> float (B, 3, size, size) in [0, 1] there.

        Draws from the global CPU generator image by image, as ``compose()`` would: the crop box (torchvision's
        RandomResizedCrop rule), then ``rand() < 1/2`` for the flip."""
        from torchvision.transforms import v2

        F = _functional()
        side = [self.size, self.size]
        rrc = v2.RandomResizedCrop(self.size, scale=self.scale, antialias=True) if self.augment == "crop_flip" else None
        resize = [self.resize or round(self.size * 256 / 224)]
        out, flips = [], []
        for img in images:
            if rrc is not None:
                img = F.resized_crop(img, **rrc.make_params([img]), size=side, antialias=True)
            else:
                img = F.center_crop(F.resize(img, resize, antialias=True), side)
            out.append(img)
            flips.append(self.augment != "none" and bool(torch.rand(1) < 0.5))
        x = torch.stack(out)
        if any(flips):
            mask = torch.tensor(flips, device=x.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(-1), x)
        return F.to_dtype(x, torch.float32, scale=True)


@dataclass(eq=False)
class TensorFolderSplit(FolderSplit):
    """A ``FolderSplit`` whose images are decoded by torchvision and transformed as tensors (module doc).

    ``main_decode``: decode in the main process on the target device (batched) rather than in the workers;
    None (default) does so exactly when the target is CUDA. ``True`` runs the CUDA code path on the CPU (tests).
    """

    ops: ImageOps | None = None
    main_decode: bool | None = None
    decodes_on_device = True  # the trainer asks for batches on its own device (``kdclaims.train._data_device``)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ops is None:
            raise ValueError(f"split {self.name}: a TensorFolderSplit needs its ImageOps")

    def _in_main(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.main_decode is None else bool(self.main_decode)

    def _dataset(self, device: torch.device) -> tuple[Dataset, Callable | None]:
        if self._in_main(device):
            return EncodedFiles(self.files, self.y, None), collate_encoded
        return DecodedFiles(self.files, self.y, self.transform), None

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> Iterator[Batch]:
        """As ``FolderSplit.batches``; decoded on ``device`` when ``main_decode`` says so. There, batch ``b`` of a
        pass draws its augmentation from seed ``s + b``, ``s`` drawn from ``generator`` after the order (from
        ``loader_seed`` without one): a pass is a function of the generator's state."""
        device = torch.device(device)
        if not self._in_main(device):
            yield from super().batches(batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                                       device=device)
            return
        n = len(self)
        if n == 0:
            return
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        base = self.loader_seed if generator is None else int(torch.randint(2**62, (1,), generator=generator))
        loader = self._loader(batch_size, drop_last, device)
        loader.sampler.order = order.tolist()
        for b, (flat, shapes, y, index) in enumerate(loader):
            images = decode_batch(unpack(flat, shapes), [self.files[i] for i in index.tolist()], device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(base + b)
                x = self.ops.apply(images)
            yield Batch(x, y.to(device, non_blocking=True), index.to(device, non_blocking=True))


def with_tensor_pipeline(split: FolderSplit, ops: ImageOps) -> TensorFolderSplit:
    """``split`` with the ``tensor`` pipeline applying ``ops`` (its transform becomes ``ops.compose()``)."""
    state = {f.name: getattr(split, f.name) for f in fields(split) if f.init}
    state["transform"] = ops.compose()
    return TensorFolderSplit(**state, ops=ops)
