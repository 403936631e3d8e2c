"""Phase schedules: learn structure and weights jointly, freeze the structure, fine-tune."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from maskfx.train.loop import train_epochs
from maskfx.train.params import param_groups
from maskfx.transform import freeze


@dataclass(frozen=True)
class Phase:
    epochs: int
    lr: float
    mask_lr: float = 0.0
    freeze_first: bool = False  # call maskfx.freeze before this phase


def maskconnect_recipe(lr: float = 0.1, mask_lr: float = 0.3,
                       epochs: tuple[int, int, int, int] = (30, 30, 10, 10)) -> list[Phase]:
    """MaskConnect's recipe (paper, appendix A.6): joint learning at ``lr``/``mask_lr``; then
    freeze the top-K connectivity and fine-tune at ``lr``, ``lr/10`` and ``lr/100``."""
    if len(epochs) != 4 or not all(isinstance(e, int) and e >= 0 for e in epochs):
        raise ValueError(f"epochs must be four ints >= 0, got {epochs!r}")
    return [Phase(epochs[0], lr, mask_lr), Phase(epochs[1], lr, freeze_first=True),
            Phase(epochs[2], lr / 10), Phase(epochs[3], lr / 100)]


def run_phases(net: nn.Module, loader: Iterable, phases: list[Phase], device: torch.device,
               momentum: float = 0.9, weight_decay: float = 1e-4, amp: bool = True) -> list[float]:
    """Train ``net`` through ``phases`` with SGD; returns each phase's last-epoch mean loss."""
    losses = []
    for i, phase in enumerate(phases):
        if phase.freeze_first:
            freeze(net)
        groups = param_groups(net, lr=phase.lr, mask_lr=phase.mask_lr, weight_decay=weight_decay)
        optimizer = torch.optim.SGD(groups, lr=phase.lr, momentum=momentum)
        if phase.epochs:
            losses.append(train_epochs(net, loader, optimizer, phase.epochs, device, amp=amp,
                                       desc=f"phase {i + 1}/{len(phases)}"))
    return losses
