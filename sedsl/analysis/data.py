"""Data sources: `sklearn:digits` (bundled with scikit-learn, no download) and image folders.

A source gives a train and a val split, each a list of labelled samples that are made into
tensors of the spec's input shape on demand. Splits are fixed: the same seed-0 permutation
whatever seed the training run uses, so a validation sample is never trained on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sedsl import extras
from sedsl.errors import DataError
from sedsl.files import Unusable, regular, shown

SPLIT_SEED = 0  # the train/val split never depends on the training seed
VAL_SHARE = 0.2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    """`sklearn:digits`, or a folder of class folders (or with train/ and val/ inside)."""
    if len(shape) != 3:
        raise DataError(f"the network's input is {shape}; data sources give C x H x W images")
    if text == "sklearn:digits":
        return digits(shape)
    if text.startswith("sklearn:"):
        raise DataError(f"unknown dataset `{text}`", "sklearn:digits")
    root = Path(text)
    if not root.is_dir():
        raise DataError(f"no data at `{shown(text)}`",
                        "a folder with one folder per class, or sklearn:digits")
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
