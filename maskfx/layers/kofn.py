"""K-of-N masks: the learned choice of K inputs out of N that MaskConnect's connections and
GateConnect's branch gates both make (Ahmed & Torresani, 2018), and the clipping that keeps the
real masks in ``[0, 1]`` after an optimizer step (``clip_masks``)."""
from __future__ import annotations

import torch
from torch import nn

from maskfx.errors import UserError

INITS = ("uniform", "previous")
SAMPLINGS = ("multinomial", "top-k")
ALL_ZERO_FLOOR = 1e-3  # a mask row clipped to all zeros is lifted to this uniform value
# Top-k sampling: how far a candidate's mask must exceed a selected one's to take its place.
# Without it the wiring flips back and forth: once a block reads another input, the gradient
# favours the one it left. Measured on a trained resnet18 (digits, K = 1, structure lr 0.5): the
# last blocks switched 12-19 times in 66 steps and accuracy after learning fell to 10.5%; with a
# margin of 0.3, no switch, and the trained chain kept its accuracy.
SWITCH_MARGIN = 0.3

@torch.no_grad()
def clip_mask_(mask: torch.Tensor) -> None:
    """Clip to ``[0, 1]``; each row (last dim: one K-of-N choice) clipped to all zeros becomes
    uniform. Per row, not per tensor: a ``(T, N)`` mask with one empty row must be lifted too,
    or that row would have nothing to normalise (branch-free, no host sync)."""
    mask.clamp_(0.0, 1.0)
    mask.add_((mask.sum(-1, keepdim=True) == 0).to(mask.dtype) * ALL_ZERO_FLOOR)


def clip_masks(net: nn.Module) -> None:
    """Clip the real masks of every K-of-N layer in ``net`` (``net`` may be one) to ``[0, 1]``,
    lifting all-zero rows (``clip_mask_``): the clip of the papers' update
    ``m <- clip(m - lr * dL/dm)``. Call it after each optimizer step that updates the masks, or let
    ``maskfx.train.clip_masks_after_steps`` call it after every step of that one optimizer."""
    for module in net.modules():
        if isinstance(module, KOfNMasks):
            clip_mask_(module.mask)


def check_kofn_args(fan_in: int, init: str, sampling: str = "multinomial") -> None:
    if not (isinstance(fan_in, int) and not isinstance(fan_in, bool) and fan_in >= 1):
        raise UserError(f"fan_in must be an int >= 1, got {fan_in!r}")
    if init not in INITS:
        raise UserError(f"init must be one of {INITS}, got {init!r}")
    if sampling not in SAMPLINGS:
        raise UserError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


class KOfNMasks(nn.Module):
    """Real masks ``m~`` of shape ``(N,)`` or ``(T, N)``: each row picks K of N candidates.

    Training: K distinct draws per row from the normalised row (a multinomial, the paper's
    ``sampling``), or the selected K (``"top-k"``: BinaryConnect's deterministic binarisation,
    which explores nothing: a candidate replaces a selected one only once its mask exceeds that
    one's by ``SWITCH_MARGIN``, so a switch sticks), returned as a binary tensor whose gradient
    flows to every entry of ``m~`` (straight-through, as BinaryConnect). Eval: the top K of each
    row (``"top-k"``: the selected K, what training used). ``freeze`` fixes that choice for good.
    ``clip_masks`` keeps the masks in ``[0, 1]`` with no all-zero row; ``fit`` calls it after
    every step.
    """

    def __init__(self, shape: tuple[int, ...], fan_in: int, init: str = "uniform", sampling: str = "multinomial") -> None:
        super().__init__()
        check_kofn_args(fan_in, init, sampling)
        self.sampling = sampling
        if not shape or shape[-1] < 1:
            raise ValueError("a connection needs at least one candidate input")
        self.fan_in = min(fan_in, shape[-1])
        start = torch.ones(shape) if init == "uniform" else torch.full(shape, 0.1)
        if init == "previous":
            start[..., -1] = 1.0
        self.mask = nn.Parameter(start)
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
        if self.sampling == "top-k":
            with torch.no_grad():
                self.selected.copy_(self._switched())
            return self.selected.clone()
        with torch.no_grad():
            clip_mask_(self.mask)  # the draw needs it: a loop may step the masks without clip_masks
            weights = self.mask.detach() + 1e-12  # zero entries stay drawable when fewer than K are positive
            drawn = torch.multinomial(weights / weights.sum(-1, keepdim=True), self.fan_in, replacement=False)
        return torch.zeros_like(self.frozen_mask).scatter_(-1, drawn, 1.0)

    def gates(self) -> torch.Tensor:
        """The binary mask this forward uses; in training its gradient reaches every ``m~`` entry."""
        if self.training and not self.is_frozen:
            return self.sample() + (self.mask - self.mask.detach())
        return self.active()
