"""MaskConnect (Ahmed & Torresani, ECCV 2018): learned K-of-N input connections between modules.

A connection layer feeds module ``j`` with ``x_j = sum_k m_k * adapt(y_k)`` over candidate outputs
``y_k`` of earlier modules (eq. 1). Real masks ``m~`` in ``[0, 1]`` are normalised to a
multinomial and K distinct candidates are drawn per training forward; the binary mask is used
forward and backward, and its gradient ``<dL/dx_j, adapt(y_k)>`` updates every entry of ``m~``
(BinaryConnect style). Outputs of another shape are adapted without parameters: strided
subsampling and zero-padded channels, as ResNet's option-A shortcuts do.
"""
from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from maskfx.errors import UserError
from maskfx.nn.autocast import BACKWARD_AS_FORWARD, FP32_UNDER_AUTOCAST

INITS = ("uniform", "previous")
SAMPLINGS = ("multinomial", "top-k")
ALL_ZERO_FLOOR = 1e-3  # a mask row clipped to all zeros is lifted to this uniform value
# Top-k sampling: how far a candidate's mask must exceed a selected one's to take its place.
# Without it the wiring flips back and forth: once a block reads another input, the gradient
# favours the one it left. Measured on a trained resnet18 (digits, K = 1, structure lr 0.5): the
# last blocks switched 12-19 times in 66 steps and accuracy after learning fell to 10.5%; with a
# margin of 0.3, no switch, and the trained chain kept its accuracy.
SWITCH_MARGIN = 0.3

# id -> mask; tensors compare elementwise, so membership is by identity, not by a WeakSet's ==.
_clipped_masks: "weakref.WeakValueDictionary[int, nn.Parameter]" = weakref.WeakValueDictionary()
_hook_handle = None


@torch.no_grad()
def clip_mask_(mask: torch.Tensor) -> None:
    """Clip to ``[0, 1]``; each row (last dim: one K-of-N choice) clipped to all zeros becomes
    uniform. Per row, not per tensor: a ``(T, N)`` mask with one empty row must be lifted too,
    or that row would have nothing to normalise (branch-free, no host sync)."""
    mask.clamp_(0.0, 1.0)
    mask.add_((mask.sum(-1, keepdim=True) == 0).to(mask.dtype) * ALL_ZERO_FLOOR)


def _clip_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if _clipped_masks.get(id(p)) is p:
                clip_mask_(p)


def register_clipped_mask(mask: nn.Parameter) -> None:
    """Keep ``mask`` in ``[0, 1]`` after every ``torch.optim`` step, whichever optimizer it is."""
    global _hook_handle
    _clipped_masks[id(mask)] = mask
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_post_hook(_clip_after_step)


def check_maskconnect_args(fan_in: int, init: str, sampling: str = "multinomial") -> None:
    if not (isinstance(fan_in, int) and not isinstance(fan_in, bool) and fan_in >= 1):
        raise UserError(f"fan_in must be an int >= 1, got {fan_in!r}")
    if init not in INITS:
        raise UserError(f"init must be one of {INITS}, got {init!r}")
    if sampling not in SAMPLINGS:
        raise UserError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def _strided(y: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """A view of ``y`` subsampled by ``strides`` in dims 2.. (``y`` itself when all are 1)."""
    if all(s == 1 for s in strides):
        return y
    return y[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]


_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def subsample(y: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """``_strided(y, strides)`` for deployed graphs: a kernel-1 max pool (the same values) exports
    as one MaxPool node, where slicing exports as one Slice per dimension."""
    pool = _POOLS.get(len(strides))
    return pool(y, kernel_size=1, stride=tuple(strides)) if pool else _strided(y, strides).contiguous()


def adapt(y: torch.Tensor, channels: int, strides: Sequence[int]) -> torch.Tensor:
    """Parameter-free shape adaptation: subsample dims 2.. by ``strides``, zero-pad dim 1 to ``channels``.

    The reference formula (eq. 1's adapted candidate); the kernels below compute the same sums
    without materialising the padded copy."""
    y = _strided(y, strides)
    if y.shape[1] < channels:
        y = F.pad(y, [0, 0] * len(strides) + [0, channels - y.shape[1]])
    return y


def pad_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad dim 1 to ``channels`` (deployed graphs, where it exports as one Pad node)."""
    return adapt(y, channels, (1,) * (y.dim() - 2))


def adapted_sum(candidates: Sequence[torch.Tensor], adapters, indices: Sequence[int]) -> torch.Tensor:
    """``sum(adapt(candidates[k], *adapters[k]) for k in indices)`` accumulated in one buffer.

    Strided candidates are read as views; the widest terms start the buffer (one ``add`` of two
    full-width terms allocates it), narrower ones add into its leading channels in place, so
    the zero padding is never written. One allocation and K-1 in-place passes."""
    channels = adapters[indices[0]][0]
    views = sorted((_strided(candidates[k], adapters[k][1]) for k in indices), key=lambda v: -v.shape[1])
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
    view = _strided(y, strides)
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
    _strided(grad, strides).copy_(cropped)
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


class KOfNMasks(nn.Module):
    """Real masks ``m~`` of shape ``(N,)`` or ``(T, N)``: each row picks K of N candidates.

    Training: K distinct draws per row from the normalised row (a multinomial, the paper's
    ``sampling``), or the selected K (``"top-k"``: BinaryConnect's deterministic binarisation,
    which explores nothing: a candidate replaces a selected one only once its mask exceeds that
    one's by ``SWITCH_MARGIN``, so a switch sticks), returned as a binary tensor whose gradient
    flows to every entry of ``m~`` (straight-through, as BinaryConnect). Eval: the top K of each
    row (``"top-k"``: the selected K, what training used). ``freeze`` fixes that choice for good.
    The masks stay in ``[0, 1]`` after any ``torch.optim`` step and never become all zero.
    """

    def __init__(self, shape: tuple[int, ...], fan_in: int, init: str = "uniform", sampling: str = "multinomial") -> None:
        super().__init__()
        check_maskconnect_args(fan_in, init, sampling)
        self.sampling = sampling
        if not shape or shape[-1] < 1:
            raise ValueError("a connection needs at least one candidate input")
        self.fan_in = min(fan_in, shape[-1])
        start = torch.ones(shape) if init == "uniform" else torch.full(shape, 0.1)
        if init == "previous":
            start[..., -1] = 1.0
        self.mask = nn.Parameter(start)
        register_clipped_mask(self.mask)
        self.register_buffer("frozen_mask", torch.zeros(shape))
        self.register_buffer("frozen", torch.tensor(False))
        self.register_buffer("selected", self.top_k())  # the wiring "top-k" sampling trains on
        # Host mirror of the frozen state, so forward never syncs on a buffer.
        self._frozen_indices: list[int] | None = None

    @property
    def is_frozen(self) -> bool:
        return self._frozen_indices is not None

    def structure_parameters(self) -> list[nn.Parameter]:
        return [self.mask] if self.mask.requires_grad else []

    def top_k(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Binary mask of the K largest entries of each row of ``scores`` (default: the masks).
        Ties go to the later candidate (the previous module first), so equal masks give the
        original chain: deterministic."""
        scores = self.mask.detach() if scores is None else scores
        n = scores.shape[-1]
        reversed_order = torch.argsort(scores.flip(-1), dim=-1, descending=True, stable=True)
        chosen = n - 1 - reversed_order[..., : self.fan_in]
        return torch.zeros_like(self.frozen_mask).scatter_(-1, chosen, 1.0)

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the connectivity eval uses (``active``) and stop learning the mask."""
        self.frozen_mask.copy_(self.active())
        self.frozen.fill_(True)
        self.mask.requires_grad_(False)
        self._frozen_indices = torch.nonzero(self.frozen_mask.flatten()).flatten().tolist()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "selected" in missing_keys:  # saved before the selection was state: it was the top K
            missing_keys.remove(prefix + "selected")
            with torch.no_grad():
                self.selected.copy_(self.top_k())
        frozen = bool(self.frozen)
        self._frozen_indices = torch.nonzero(self.frozen_mask.flatten()).flatten().tolist() if frozen else None
        self.mask.requires_grad_(not frozen)

    def active(self) -> torch.Tensor:
        """The binary mask that eval and collapse use: frozen, else the current top K (with
        ``"top-k"`` sampling, the K training selected, switched where a mask passed by the margin)."""
        if self.is_frozen:
            return self.frozen_mask
        return self._switched() if self.sampling == "top-k" else self.top_k()

    def _switched(self) -> torch.Tensor:
        """The selection after the switch margin: what the next ``"top-k"`` training forward reads
        (masks set by hand take effect here too)."""
        return self.top_k(self.mask.detach() + SWITCH_MARGIN * self.selected)

    def sample(self) -> torch.Tensor:
        """K distinct candidates per row drawn from the normalised masks (or the selected K, updated
        with the switch margin), as a binary mask."""
        register_clipped_mask(self.mask)  # again: a deep copy of this layer skipped __init__
        if self.sampling == "top-k":
            with torch.no_grad():
                self.selected.copy_(self._switched())
            return self.selected.clone()
        with torch.no_grad():
            clip_mask_(self.mask)  # a safety net for updates made outside torch.optim
            weights = self.mask.detach() + 1e-12  # zero entries stay drawable when fewer than K are positive
            drawn = torch.multinomial(weights / weights.sum(-1, keepdim=True), self.fan_in, replacement=False)
        return torch.zeros_like(self.frozen_mask).scatter_(-1, drawn, 1.0)

    def gates(self) -> torch.Tensor:
        """The binary mask this forward uses; in training its gradient reaches every ``m~`` entry."""
        if self.training and not self.is_frozen:
            return self.sample() + (self.mask - self.mask.detach())
        return self.active()


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
