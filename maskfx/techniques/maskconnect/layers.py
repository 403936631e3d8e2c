"""MaskConnect (Ahmed & Torresani, ECCV 2018): learned K-of-N input connections between modules.

A connection layer feeds module ``j`` with ``x_j = sum_k m_k * adapt(y_k)`` over candidate outputs
``y_k`` of earlier modules (eq. 1). Real masks ``m~`` in ``[0, 1]`` are normalised to a
multinomial and K distinct candidates are drawn per training forward; the binary mask is used
forward and backward, and its gradient ``<dL/dx_j, adapt(y_k)>`` updates every entry of ``m~``
(BinaryConnect style). Outputs of another shape are adapted without parameters: strided
subsampling and zero-padded channels, as ResNet's option-A shortcuts do.
"""
from __future__ import annotations

from typing import Sequence

import torch

from maskfx.layers.adapt import strided
from maskfx.layers.autocast import BACKWARD_AS_FORWARD, FP32_UNDER_AUTOCAST
from maskfx.layers.kofn import KOfNMasks


def adapted_sum(candidates: Sequence[torch.Tensor], adapters, indices: Sequence[int]) -> torch.Tensor:
    """``sum(adapt(candidates[k], *adapters[k]) for k in indices)`` accumulated in one buffer.

    Strided candidates are read as views; the widest terms start the buffer (one ``add`` of two
    full-width terms allocates it), narrower ones add into its leading channels in place, so
    the zero padding is never written. One allocation and K-1 in-place passes."""
    channels = adapters[indices[0]][0]
    views = sorted((strided(candidates[k], adapters[k][1]) for k in indices), key=lambda v: -v.shape[1])
    if views[0].shape[1] < channels:
        out, rest = views[0].new_zeros((views[0].shape[0], channels, *views[0].shape[2:])), views
    elif len(views) > 1 and views[1].shape[1] == channels:
        out, rest = torch.add(views[0], views[1]), views[2:]
    else:
        out, rest = views[0].clone(), views[1:]
    for view in rest:
        out[:, : view.shape[1]].add_(view)
    return out


def _inner(g: torch.Tensor, y: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """``<g, adapt(y)>`` without padding: ``g``'s leading channels against the strided view of ``y``.

    A single fused ``dot`` (no temporary) when both are dense with the same shape, the common case
    of candidates in the same stage; else one product of ``y``'s adapted size, never ``g``'s."""
    view = strided(y, strides)
    if view.shape == g.shape and view.is_contiguous() and g.is_contiguous():
        return torch.dot(g.view(-1), view.view(-1))
    return torch.mul(g[:, : view.shape[1]], view).sum()


def _candidate_grad(g: torch.Tensor, shape: torch.Size, strides: Sequence[int]) -> torch.Tensor:
    """``adapt^T(g)`` for a candidate of ``shape``: a view of ``g``'s leading channels, or, for a
    subsampled candidate, those values scattered into the positions it was read at (autograd
    needs a gradient of the candidate's full shape; the crop is copied straight from ``g``)."""
    cropped = g[:, : shape[1]]
    if all(s == 1 for s in strides):
        return cropped
    grad = g.new_zeros(shape)
    strided(grad, strides).copy_(cropped)
    return grad


class _MaskedSum(torch.autograd.Function):
    """Forward: ``adapted_sum`` of the active candidates only. Backward: the active candidates get
    ``adapt^T(g)``; with a learned ``mask``, every entry gets ``<g, adapt(y_k)>`` (BinaryConnect),
    the same values as multiplying every candidate by its 0/1 mask at the cost of K candidates."""

    @staticmethod
    @FP32_UNDER_AUTOCAST
    def forward(ctx, mask: torch.Tensor | None, active: list[int], adapters, *candidates: torch.Tensor) -> torch.Tensor:
        ctx.active, ctx.adapters = active, adapters
        ctx.shapes = [y.shape for y in candidates]
        ctx.learn_mask = mask is not None and ctx.needs_input_grad[0]
        if ctx.learn_mask:
            ctx.save_for_backward(*candidates)
        return adapted_sum(candidates, adapters, active)

    @staticmethod
    @BACKWARD_AS_FORWARD
    def backward(ctx, g: torch.Tensor):
        mask_grad = None
        if ctx.learn_mask:
            mask_grad = torch.stack([_inner(g, y, strides)
                                     for y, (_, strides) in zip(ctx.saved_tensors, ctx.adapters)]).to(g.dtype)
        candidate_grads = [_candidate_grad(g, shape, strides)
                           if k in ctx.active and ctx.needs_input_grad[3 + k] else None
                           for k, (shape, (_, strides)) in enumerate(zip(ctx.shapes, ctx.adapters))]
        return (mask_grad, None, None, *candidate_grads)


class MaskedConnection(KOfNMasks):
    """Input of one module: the sum of K of its ``len(adapters)`` candidate inputs.

    Args:
        adapters: per candidate, ``(channels, strides)`` for ``adapt`` (static, from shape propagation).
        fan_in: K; capped at the number of candidates.
        init: ``"uniform"`` (all ``m~ = 1``) or ``"previous"``: the last candidate (the previous
            module, the original chain) at 1, the others at 0.1, so eval and freeze start from the
            original network at K = 1 and always keep it among the top K.
        sampling: ``"multinomial"`` or ``"top-k"`` (``KOfNMasks``).

    The layer's own defaults are the paper's (``"uniform"``, ``"multinomial"``);
    ``MaskConnectConfig``, what ``transform`` uses, defaults to ``"previous"``/``"top-k"``.
    """

    def __init__(self, adapters: Sequence[tuple[int, tuple[int, ...]]], fan_in: int, init: str = "uniform",
                 sampling: str = "multinomial") -> None:
        super().__init__((len(adapters),), fan_in, init, sampling)
        self.adapters = [(int(c), tuple(int(s) for s in strides)) for c, strides in adapters]

    def forward(self, *candidates: torch.Tensor) -> torch.Tensor:
        learning = self.training and not self.is_frozen
        return _MaskedSum.apply(self.mask if learning else None, self._active_indices(), self.adapters, *candidates)

    def _active_indices(self) -> list[int]:
        """The candidates this forward sums: frozen (fine-tuning, eval), a fresh draw (training: one
        host read of K indices), else the current choice (``active``)."""
        if self.is_frozen:
            return self._frozen_indices
        return torch.nonzero(self.sample() if self.training else self.active()).flatten().tolist()

    def extra_repr(self) -> str:
        return f"candidates={len(self.adapters)}, fan_in={self.fan_in}, sampling={self.sampling}"
