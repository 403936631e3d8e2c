"""Parameter-free shape adapters: strided subsampling and zero-padded channels, as ResNet's
option-A shortcuts adapt an output to a narrower, larger-resolution reader. Learned connections
use them to sum outputs of different shapes; ``maskfx.graph.channel_pad`` lowers the padding."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def strided(y: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """A view of ``y`` subsampled by ``strides`` in dims 2.. (``y`` itself when all are 1)."""
    if all(s == 1 for s in strides):
        return y
    return y[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]


_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def subsample(y: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """``strided(y, strides)`` for deployed graphs: a kernel-1 max pool (the same values) exports
    as one MaxPool node, where slicing exports as one Slice per dimension."""
    pool = _POOLS.get(len(strides))
    return pool(y, kernel_size=1, stride=tuple(strides)) if pool else strided(y, strides).contiguous()


def adapt(y: torch.Tensor, channels: int, strides: Sequence[int]) -> torch.Tensor:
    """Parameter-free shape adaptation: subsample dims 2.. by ``strides``, zero-pad dim 1 to ``channels``.

    The reference formula (MaskConnect's eq. 1 adapted candidate); its kernels compute the same sums
    without materialising the padded copy."""
    y = strided(y, strides)
    if y.shape[1] < channels:
        y = F.pad(y, [0, 0] * len(strides) + [0, channels - y.shape[1]])
    return y


def pad_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad dim 1 to ``channels`` (deployed graphs, where it exports as one Pad node)."""
    return adapt(y, channels, (1,) * (y.dim() - 2))
