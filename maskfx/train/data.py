"""Offline demo data: scikit-learn's 8x8 digits, shaped like a small RGB image dataset."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 10


def digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(N, 3, image_size, image_size)`` float images (zero mean, unit std)
    and their labels: three equal channels, so torchvision models take them unchanged."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    return images.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


def digits_loaders(batch_size: int = 64, image_size: int = 32, test_fraction: float = 0.25,
                   seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled train loader and ordered test loader over a fixed, seeded split."""
    images, labels = digits_tensors(image_size)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    train_loader = DataLoader(TensorDataset(images[train], labels[train]), batch_size=batch_size,
                              shuffle=True, generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(TensorDataset(images[test], labels[test]), batch_size=256)
    return train_loader, test_loader
