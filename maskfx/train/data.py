"""Datasets named on the command line: the embedded digits, an ImageFolder, local CIFAR-10/100.

Nothing is downloaded. ``load_data`` returns train and test sets plus what a model and a
checkpoint need to know about them (class count, input shape).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

NUM_CLASSES = 10
DATA_HELP = "digits (embedded), imagefolder:PATH (PATH/train and PATH/val), cifar10:PATH or cifar100:PATH"


class DataError(ValueError):
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


def digits_loaders(batch_size: int = 64, image_size: int = 32, test_fraction: float = 0.25,
                   seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled train loader and ordered test loader over a fixed, seeded split."""
    data = digits_split(image_size, test_fraction, seed)
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    return train_loader, DataLoader(data.test, batch_size=256)


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
