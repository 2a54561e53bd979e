"""Image-file splits read lazily through a torch DataLoader (``FolderSplit``), and ImageNet as an ImageFolder tree."""

from __future__ import annotations

import functools
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kdclaims.data.base import Batch, Split
from kdclaims.errors import DataError
from kdclaims.data.paths import DataNotFound, require_root, stream
from kdclaims.data.sampling import select
from kdclaims.registries import DATASETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _v2():
    """torchvision.transforms.v2, imported on first use (importing torchvision costs seconds)."""
    from torchvision.transforms import v2

    return v2


def _to_tensor() -> list:
    v2 = _v2()
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB; a truncated, damaged or oversized image (more than PIL's
    ``MAX_IMAGE_PIXELS``: a decompression bomb) is a ``DataError`` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DataError(f"image {path} is too large to decode safely (a decompression bomb?): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"image {path} cannot be decoded: truncated, damaged or not an image ({e})") from None


def train_transform(size: int, augment: str = "crop_flip", scale: Sequence[float] = (0.08, 1.0)) -> Callable:
    """PIL -> float tensor in [0, 1]: ``crop_flip`` = RandomResizedCrop(size, scale) + flip; ``flip`` = test crop +
    flip; ``none`` = the test transform."""
    v2 = _v2()
    if augment == "crop_flip":
        ops = [v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True), v2.RandomHorizontalFlip()]
    elif augment == "flip":
        ops = [*_center_ops(size), v2.RandomHorizontalFlip()]
    elif augment == "none":
        ops = _center_ops(size)
    else:
        raise ValueError(f"augment must be one of crop_flip, flip, none; got '{augment}'")
    return v2.Compose([*ops, *_to_tensor()])


def _center_ops(size: int, resize: int | None = None) -> list:
    v2 = _v2()
    return [v2.Resize(resize or round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]


def eval_transform(size: int, resize: int | None = None) -> Callable:
    """PIL -> float tensor in [0, 1]: Resize(``resize``, default size·256/224) then CenterCrop(size)."""
    return _v2().Compose([*_center_ops(size, resize), *_to_tensor()])


class ImageFiles(Dataset):
    """``(image tensor, label, index)`` for a list of image files."""

    def __init__(self, files: Sequence[str], labels: Tensor, transform: Callable):
        self.files, self.labels, self.transform = list(files), labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.transform(load_rgb(self.files[i])), self.labels[i], i


class _OrderSampler(Sampler[int]):
    """Yields the order set just before each pass (so one persistent DataLoader serves every epoch)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


MAX_EAGER_IMAGES = 100_000  # ``FolderSplit.x`` refuses to hold more images than this in memory


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


# What the fork server imports once, so that each worker forked from it starts warm.
FORKSERVER_PRELOAD = ["torch", "torchvision.io", "torchvision.transforms.v2", "kdclaims.data.folder",
                      "kdclaims.data.gpu_input"]


def worker_start_method(workers: int, device: torch.device, requested: str | None = None) -> str | None:
    """How DataLoader workers start: ``requested`` if given; ``forkserver`` when the batches feed a CUDA device or
    this process has started CUDA; otherwise None, the platform default (``fork`` on Linux).

    Forking a process whose CUDA runtime runs threads can hang a worker (Python and torch warn about it). A fork
    server is a clean process, started once with ``FORKSERVER_PRELOAD`` imported, that forks the workers: they start
    in milliseconds, where spawned ones would each import torch (seconds, for every short-lived loader of a probe).
    Either way the workers unpickle the dataset and its transform, so neither may hold a lambda or a closure."""
    if workers == 0:
        return None
    if requested:
        return requested
    if device.type == "cuda" or torch.cuda.is_initialized():
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return "spawn"  # Windows
        multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
        return "forkserver"
    return None


@dataclass(eq=False)
class FolderSplit:
    """A split of image files decoded on the fly, with the interface of ``Split``.

    ``x`` decodes every image once and keeps the tensor (for probes that index images directly); it is refused for
    splits with random transforms (``deterministic=False``) or of more than ``MAX_EAGER_IMAGES`` images.
    ``batches`` runs a DataLoader with ``num_workers`` worker processes (default ``min(8, cpu count)``, kept alive
    between passes, started as ``worker_start_method`` says: from a fork server where CUDA is in use), pinned
    memory when the target device is CUDA, and the shuffle order drawn from ``generator`` in the main process.
    Random transforms in the workers are seeded from ``loader_seed``.
    """

    name: str
    files: list[str]
    y: Tensor
    num_classes: int
    transform: Callable
    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    groups: Tensor | None = None
    group_names: list[str] = field(default_factory=list)
    meta: dict[str, Tensor] = field(default_factory=dict)
    num_workers: int | None = None
    loader_seed: int = 0
    channels: int = 3
    deterministic: bool = True  # False when ``transform`` draws random numbers (training augmentation)
    start_method: str | None = None  # the workers' start method; None: see ``worker_start_method``
    _loaders: dict = field(default_factory=dict, init=False, repr=False)
    _x: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.files) != len(self.y):
            raise ValueError(f"split {self.name}: {len(self.files)} files but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labels(self) -> Tensor:
        return self.y

    @property
    def x(self) -> Tensor:
        """All images as one (N, C, size, size) tensor, decoded on first use and kept."""
        if self._x is None:
            if not self.deterministic:
                raise ValueError(f"split {self.name}: its transform is random (training augmentation), so it has no "
                                 "fixed images; iterate batches() instead")
            if len(self) > MAX_EAGER_IMAGES:
                raise ValueError(f"split {self.name}: {len(self)} images are too many to hold in memory "
                                 f"(limit {MAX_EAGER_IMAGES}); iterate batches() or take a subset (n=...)")
            xs = [b.x for b in self.batches(256)]
            self._x = torch.cat(xs) if xs else torch.zeros(0, self.channels, self.image_size, self.image_size)
        return self._x

    def subset(self, index: Tensor | list[int], name: str | None = None) -> "FolderSplit":
        index = torch.as_tensor(index, dtype=torch.long)
        out = replace(
            self,
            name=name or self.name,
            files=[self.files[i] for i in index.tolist()],
            y=self.y[index],
            groups=None if self.groups is None else self.groups[index],
            meta={k: v[index] for k, v in self.meta.items()},
        )
        if self._x is not None:
            out._x = self._x[index]
        return out

    def sample(self, n: int | None, seed: int) -> "FolderSplit":
        """A seeded random subset of ``n`` images (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)

    def group(self, name: str) -> "FolderSplit":
        """The images of one group."""
        if self.groups is None or name not in self.group_names:
            raise KeyError(f"split {self.name} has no group '{name}'; groups: {self.group_names}")
        gid = self.group_names.index(name)
        return self.subset(torch.nonzero(self.groups == gid).flatten(), name=f"{self.name}/{name}")

    def _dataset(self, device: torch.device) -> tuple[Dataset, Callable | None]:
        """The DataLoader's dataset and collate function (None: the default) for batches bound for ``device``."""
        return ImageFiles(self.files, self.y, self.transform), None

    def _loader(self, batch_size: int, drop_last: bool, device: torch.device) -> DataLoader:
        pin = device.type == "cuda" and torch.cuda.is_available()
        dataset, collate = self._dataset(device)
        key = (batch_size, drop_last, device.type, type(dataset))
        if key not in self._loaders:
            workers = default_workers() if self.num_workers is None else int(self.num_workers)
            self._loaders[key] = DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=_OrderSampler(),
                drop_last=drop_last,
                num_workers=workers,
                collate_fn=collate,
                pin_memory=pin,
                persistent_workers=workers > 0,
                multiprocessing_context=worker_start_method(workers, device, self.start_method),
                generator=torch.Generator().manual_seed(self.loader_seed),
            )
        return self._loaders[key]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> Iterator[Batch]:
        n = len(self)
        if n == 0:
            return
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        loader = self._loader(batch_size, drop_last, torch.device(device))
        loader.sampler.order = order.tolist()
        try:
            for x, y, idx in loader:
                yield Batch(x.to(device, non_blocking=True), y.to(device), idx.long().to(device))
        except DataError as e:  # from a worker process: its message carries the worker's traceback; keep the cause
            raise DataError(str(e).strip().splitlines()[-1].removeprefix("kdclaims.errors.DataError: ")
                            .removeprefix("DataError: ")) from None

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def to_split(self) -> Split:
        """The images decoded into an in-memory ``Split`` (see ``x``)."""
        return Split(name=self.name, x=self.x, y=self.y.clone(), num_classes=self.num_classes, mean=self.mean,
                     std=self.std, groups=self.groups, group_names=list(self.group_names), meta=dict(self.meta))

    def close(self) -> None:
        """Stop the persistent DataLoader workers."""
        self._loaders.clear()


@functools.lru_cache(maxsize=8)
def _scan(folder: str, classes: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    files: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        cdir = Path(folder) / cls
        if not cdir.is_dir():
            continue
        names = sorted(e.name for e in os.scandir(cdir) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        files += [str(cdir / name) for name in names]
        labels += [label] * len(names)
    return tuple(files), tuple(labels)


def image_folder(folder: Path, classes: Sequence[str]) -> tuple[list[str], Tensor]:
    """Files ``folder/<class>/<img>`` with an image extension (sorted) and their class indices into ``classes``."""
    files, labels = _scan(str(folder), tuple(classes))
    return list(files), torch.tensor(labels, dtype=torch.long)


def class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


@DATASETS.register("imagenet")
def imagenet(
    split: str,
    root: Path | None,
    seed: int,
    *,
    size: int = 224,
    augment: str = "crop_flip",
    crop_scale: Sequence[float] = (0.08, 1.0),
    n: int | None = None,
    num_workers: int | None = None,
    pipeline: str = "pil",
) -> FolderSplit:
    """ImageNet from ROOT/imagenet/{train,val}/<wnid>/*.JPEG; classes = the sorted wnid folders of train (or val).

    Train images get ``augment`` (RandomResizedCrop(size, crop_scale) + flip by default); test images
    Resize(size·256/224) + CenterCrop(size). ``n`` keeps a seeded class-stratified subset. ``pipeline``: ``pil``
    (PIL decodes in DataLoader workers) or ``tensor`` (torchvision decodes and transforms on the training device,
    ``kdclaims.data.gpu_input``).
    """
    if pipeline not in ("pil", "tensor"):
        raise ValueError(f"imagenet: pipeline must be 'pil' or 'tensor', got '{pipeline}'")
    sub = {"train": "train", "test": "val"}.get(split)
    if sub is None:
        raise ValueError(f"imagenet: split must be 'train' or 'test', got '{split}'")
    folder = require_root("imagenet", root, f"imagenet/{sub}")
    train_dir = Path(root) / "imagenet" / "train"
    classes = class_dirs(train_dir if train_dir.is_dir() else folder)
    if not classes:
        raise DataNotFound(f"imagenet: no class folders in {train_dir if train_dir.is_dir() else folder}")
    files, labels = image_folder(folder, classes)
    if not files:
        raise DataNotFound(f"imagenet: no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}/<wnid>/")
    train_tf = train_transform(size, augment, crop_scale)  # also checks ``augment`` when building the test split
    transform = train_tf if split == "train" else eval_transform(size)
    out = FolderSplit(name=f"imagenet-{split}", files=files, y=labels, num_classes=len(classes), transform=transform,
                      image_size=size, num_workers=num_workers, loader_seed=seed,
                      deterministic=split == "test" or augment == "none")
    if pipeline == "tensor":
        from kdclaims.data.gpu_input import ImageOps, with_tensor_pipeline

        out = with_tensor_pipeline(out, ImageOps(size, augment if split == "train" else "none", tuple(crop_scale)))
    index = select(labels, None, [], n=n, composition=None, generator=stream(seed, split, "imagenet", "select"))
    return out if index is None else out.subset(index)
