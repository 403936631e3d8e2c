"""A reference training loop: plain PyTorch, AMP on CUDA, a progress bar."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm



def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no GPU")
    return torch.device(device)


def _autocast(device: torch.device, amp: bool):
    # bf16 autocast needs no loss scaler; on CPU training stays in fp32.
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()


def train_one_epoch(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp: bool = True, desc: str = "train", show: bool = True) -> float:
    """One pass of cross-entropy training; returns the mean loss over the samples seen."""
    net.to(device).train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None if show else True)
    for images, labels in bar:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(labels), seen + len(labels)
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


def train_epochs(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, epochs: int,
                 device: torch.device, amp: bool = True, desc: str = "train",
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> float:
    """Train ``epochs`` epochs with cross-entropy; returns the last epoch's mean loss."""
    mean_loss = float("nan")
    for epoch in range(epochs):
        mean_loss = train_one_epoch(net, loader, optimizer, device, amp, desc=f"{desc} {epoch + 1}/{epochs}")
        if scheduler is not None:
            scheduler.step()
    return mean_loss


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode logits and labels over a loader, on the CPU."""
    was_training = model.training
    model.to(device).eval()
    logits, labels = [], []
    for images, target in loader:
        logits.append(model(images.to(device)).float().cpu())
        labels.append(target)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()
