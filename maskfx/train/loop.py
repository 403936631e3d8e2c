"""A reference training loop: plain PyTorch, AMP on CUDA, a progress bar.

It stops at a NaN or infinite loss before the optimizer step, where one bad batch (or a learning
rate that diverges) would turn every weight, mask and cluster logit into NaN for good. Given a
``Distillation``, the student learns from a frozen teacher's logits too (``maskfx.train.distill``).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from maskfx.budget import budget_penalty
from maskfx.errors import UserError
from maskfx.train import ddp
from maskfx.train.distill import Distillation, distillation_loss


class NonFiniteLossError(ArithmeticError):
    """Training met a NaN or infinite loss, or weights holding one, and stopped before an optimizer
    step could spread it (and before ``fit`` saved it: its last checkpoint stays the last good one)."""


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean over the samples whose step was taken
    skipped: int  # batches skipped for a non-finite loss (``skip_nonfinite``)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' but torch sees no GPU")
    return torch.device(device)


def _autocast(device: torch.device, amp: bool):
    # bf16 autocast needs no loss scaler; on CPU training stays in fp32.
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()


def _on_any_rank(flag: bool, job: ddp.Distributed) -> bool:
    """``flag`` or-ed over the ranks. Every rank must take the same decision: one that skipped its
    backward or stopped would leave the others waiting in DDP's gradient all-reduce."""
    return ddp.mean_over_ranks(float(flag), job) > 0


def _first_nonfinite(net: nn.Module, buffers: bool) -> str | None:
    """The name of the first parameter (or floating-point buffer) holding a NaN or an infinity."""
    module = net.module if isinstance(net, DistributedDataParallel) else net
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers() if buffers else ()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _check_state(net: nn.Module, where: str, job: ddp.Distributed, buffers: bool = True) -> None:
    """Raise ``NonFiniteLossError`` if any rank's weights (or buffers) are not finite: a step with a
    finite loss can still overflow them, and every later loss would then be NaN."""
    name = _first_nonfinite(net, buffers)
    if _on_any_rank(name is not None, job):
        raise NonFiniteLossError(f"{where}: {name or 'another rank'} holds NaN or infinite values, so training "
                                 f"diverged; lower the learning rate")


def _restore_buffers(net: nn.Module, saved: list[torch.Tensor]) -> None:
    """Undo what a skipped batch's forward wrote into buffers (BatchNorm statistics, a NaN now)."""
    with torch.no_grad():
        for buffer, value in zip(net.buffers(), saved, strict=True):
            buffer.copy_(value)


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Put each module back in its own train/eval mode (a teacher may hold eval-mode parts).
    Through ``train()``, not the ``training`` flag: a module may switch more than the flag (a
    maskfx ``DualGraphModule`` switches its graph). ``modes`` is in pre-order, so a parent's call
    sets its whole subtree first and the children that differed from it are set after."""
    for module, training in modes.items():
        if module.training != training:
            module.train(training)


@contextlib.contextmanager
def _teaching(distill: Distillation | None, optimizer: torch.optim.Optimizer, device: torch.device) -> Iterator[None]:
    """The teacher on ``device`` in eval mode for an epoch (BatchNorm statistics fixed, no
    dropout: a deterministic target), each module's mode restored afterwards. A teacher whose
    parameters the optimizer holds (the student itself, or a part of it) would learn along with
    the student, so it is refused."""
    if distill is None:
        yield
        return
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if any(id(p) in optimized for p in distill.teacher.parameters()):
        raise UserError("the distillation teacher shares parameters with the student's optimizer, so it would "
                        "train too; distill from a separate copy (copy.deepcopy)")
    modes = {module: module.training for module in distill.teacher.modules()}
    distill.teacher.to(device).eval()
    try:
        yield
    finally:
        _restore_modes(modes)


def _loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, distill: Distillation | None) -> torch.Tensor:
    """Cross-entropy, or with ``distill`` the distillation loss against the teacher's logits, which
    no gradient flows into (``no_grad``: no graph kept for them, no ``.grad`` on the teacher)."""
    logits = net(images)
    if distill is None:
        return F.cross_entropy(logits, labels)
    with torch.no_grad():
        teacher_logits = distill.teacher(images)
    return distillation_loss(logits, teacher_logits, labels, distill.temperature, distill.alpha)


def run_epoch(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
              amp: bool = True, desc: str = "train", show: bool = True, *, skip_nonfinite: bool = False,
              job: ddp.Distributed = ddp.Distributed(), distill: Distillation | None = None) -> EpochStats:
    """One pass of cross-entropy training (with ``distill``, of ``distillation_loss`` against its
    teacher); returns the mean loss and how many batches were skipped.

    A batch whose loss is NaN or infinite on any rank raises ``NonFiniteLossError`` before its
    backward and optimizer step. With ``skip_nonfinite`` the batch is skipped instead and what its
    forward wrote into buffers undone (a copy of the buffers per step), unless the weights are the
    cause: non-finite, or no batch of the epoch gave a finite loss. Weights and buffers are checked
    at the end of the epoch too, before anything can save them: a step with a finite loss can
    overflow them, and only the next loss shows it. ``job`` makes all ranks decide alike.

    The teacher runs in eval mode on ``device`` under the student's autocast, is never wrapped in
    DDP (each rank runs its own copy: it takes no gradient to average) and gets its modes back at
    the end; its parameters must not be in ``optimizer`` (``UserError``).
    """
    net.to(device).train()
    total, seen, skipped = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None if show else True)
    with _teaching(distill, optimizer, device):
        for step, (images, labels) in enumerate(bar, 1):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            saved = [buffer.detach().clone() for buffer in net.buffers()] if skip_nonfinite else []
            with _autocast(device, amp):
                loss = _loss(net, images, labels, distill)
            loss = loss + budget_penalty(net).to(loss.device)
            value = loss.item()
            if _on_any_rank(not math.isfinite(value), job):
                where = f"{desc}, step {step}"
                _check_state(net, where, job, buffers=False)  # the weights, not the batch (buffers: its forward's)
                if not skip_nonfinite:
                    loss_is = f"the loss is {value}" if not math.isfinite(value) else "another rank's loss is not finite"
                    raise NonFiniteLossError(f"{where}: {loss_is}; stopped before the optimizer step. Lower the "
                                             f"learning rate, or skip such batches (skip_nonfinite=True)")
                _restore_buffers(net, saved)
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + value * len(labels), seen + len(labels)
            bar.set_postfix(loss=f"{total / seen:.3f}", **({"skipped": skipped} if skipped else {}))
    if skipped and not seen:
        raise NonFiniteLossError(f"{desc}: every batch had a non-finite loss, so no step was taken; lower the "
                                 f"learning rate, or check the data")
    _check_state(net, desc, job)
    return EpochStats(total / max(seen, 1), skipped)


def train_one_epoch(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp: bool = True, desc: str = "train", show: bool = True, skip_nonfinite: bool = False,
                    distill: Distillation | None = None) -> float:
    """One pass of cross-entropy (or ``distill``) training; returns the mean loss over the samples
    seen (``run_epoch``, which also counts skipped batches, says what stops it)."""
    return run_epoch(net, loader, optimizer, device, amp, desc, show, skip_nonfinite=skip_nonfinite,
                     distill=distill).loss


def train_epochs(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, epochs: int,
                 device: torch.device, amp: bool = True, desc: str = "train",
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, skip_nonfinite: bool = False,
                 distill: Distillation | None = None) -> float:
    """Train ``epochs`` epochs with cross-entropy (or ``distill``); returns the last epoch's mean loss."""
    mean_loss = float("nan")
    for epoch in range(epochs):
        mean_loss = train_one_epoch(net, loader, optimizer, device, amp, desc=f"{desc} epoch {epoch + 1}/{epochs}",
                                    skip_nonfinite=skip_nonfinite, distill=distill)
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
