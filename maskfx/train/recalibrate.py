"""BatchNorm statistics for the function that ships.

Running statistics gathered in training describe the training forward: with Jumpout's noise in
front of every convolution, or a structure that ``freeze`` then fixed, they no longer match what
eval mode (and ``collapse``) computes, and a network full of BatchNorm loses accuracy to the
shift alone (EfficientNet-Lite0 on Fashion-MNIST: 22.5 points, of which 17.7 came back).
``recalibrate`` recomputes them with everything else in eval mode.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from maskfx.errors import UserError

# Batches the command line recalibrates over by default: the demo's budget part measured its pruned
# resnet18 at 93.3% as trained and 94.4% recalibrated over 20 (benchmarks/demo/report.json).
DEFAULT_BATCHES = 20


@torch.no_grad()
def recalibrate(net: nn.Module, loader: Iterable, batches: int | None = None) -> nn.Module:
    """Recompute ``net``'s BatchNorm running statistics in place, as a cumulative average over
    ``batches`` batches of ``loader`` (all by default; ``(images, labels)`` or images), every other
    layer in eval mode: Jumpout is the identity, the structure is the eval one. Momentum and the
    train/eval mode are restored; returns ``net``."""
    if batches is not None and batches < 1:
        raise UserError(f"batches must be >= 1 or None, got {batches!r}")
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    was_training, momenta = net.training, [norm.momentum for norm in norms]
    device = next(iter(net.parameters()), torch.empty(0)).device
    net.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    try:
        for index, batch in enumerate(loader):
            if batches is not None and index >= batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            net(images.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        net.train(was_training)
    return net
