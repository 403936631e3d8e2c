"""A hard-concrete gate per channel unit (Louizos, Welling & Kingma, "Learning sparse neural
networks through L0 regularization", 2018, as CoFi prunes with it).

Training draws ``z = clamp(sigmoid((logit(u) + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)``
with ``u ~ U(0, 1)``: exact zeros and ones with non-zero probability, and a gradient to
``log_alpha`` in between. Its probability of being non-zero, ``sigmoid(log_alpha - beta *
log(-gamma / zeta))``, is differentiable: the budget's expected cost is built from it. Eval uses
the deterministic ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``; ``freeze``
replaces both by a fixed 0/1 mask.

The alternative, ``estimator="straight-through"``: a unit is open with probability
``p = sigmoid(log_alpha)``; training draws ``z ~ Bernoulli(p)`` and passes ``dL/dz`` to ``p``
(the straight-through gradient, as the MaskConnect and Blockout papers learn their binary
masks); eval keeps the units with ``p > 0.5``. Both give the budget the same differentiable
``P(open)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

GAMMA, ZETA = -0.1, 1.1  # the stretch interval of the paper and CoFi


@dataclass
class Producer:
    """A layer writing the gated channels: its module, the BatchNorm right after it (the gate
    follows that), and the tensor dim holding the channels."""

    module: str
    norm: str | None
    dim: int


@dataclass
class Reader:
    """A layer reading the gated channels at ``offset`` of its input channels (after a concat)."""

    module: str
    offset: int


@dataclass
class BranchEnd:
    """A layer that reads only this space and whose output (through its BatchNorm ``norm``) is
    only added to another tensor: with the space closed it adds a constant, its bias through the
    BatchNorm, shaped to broadcast (``rank`` dims, channels on ``dim``)."""

    module: str
    norm: str | None
    rank: int
    dim: int


@dataclass
class ChannelSpace:
    """The record of one set of channels that must go together: joined by adds or elementwise
    products, read by depthwise or grouped convolutions (whose unit, a group, goes whole).
    ``ends``: when every reader is a ``BranchEnd``, the space may close entirely, and the residual
    branch it is the inside of goes with it (depth, through the same gates as width)."""

    name: str
    channels: int
    unit: int
    producers: list[Producer] = field(default_factory=list)
    grouped: list[str] = field(default_factory=list)  # grouped/depthwise convs mapping the space to itself
    readers: list[Reader] = field(default_factory=list)
    ends: list[BranchEnd] = field(default_factory=list)

    @property
    def closable(self) -> bool:
        return bool(self.ends)


class ChannelGate(nn.Module):
    """The gates of one channel space, one per unit; called after each layer writing it."""

    def __init__(self, space: ChannelSpace, init_keep: float = 0.99, temperature: float = 2 / 3,
                 estimator: str = "hard-concrete") -> None:
        super().__init__()
        self.space = space
        self.temperature = float(temperature)
        self.straight_through = estimator == "straight-through"
        units = space.channels // space.unit
        # P(open) = init_keep at the start: sigmoid(log_alpha - beta * log(-gamma / zeta)) for the
        # hard-concrete, sigmoid(log_alpha) for the straight-through gate.
        start = math.log(init_keep / (1 - init_keep)) + self._shift()
        self.log_alpha = nn.Parameter(torch.full((units,), start))
        self.register_buffer("frozen_mask", torch.ones(units))
        self.register_buffer("frozen", torch.tensor(False))
        self._frozen = False  # host mirror of ``frozen``: forward never syncs on a buffer
        # One draw per training forward, shared by every layer writing the space (it is called once
        # per writer): a channel is closed in all of them or in none.
        self._draw: torch.Tensor | None = None
        self._uses_left = 0

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def structure_parameters(self) -> list[nn.Parameter]:
        return [self.log_alpha] if self.log_alpha.requires_grad else []

    def _shift(self) -> float:
        """log_alpha minus the logit of P(open)."""
        return 0.0 if self.straight_through else self.temperature * math.log(-GAMMA / ZETA)

    def keep_probability(self) -> torch.Tensor:
        """P(z > 0) per unit, differentiable (a frozen gate: its 0/1 mask)."""
        if self.is_frozen:
            return self.frozen_mask
        return torch.sigmoid(self.log_alpha - self._shift())

    def deterministic(self) -> torch.Tensor:
        """The gate eval uses per unit: in [0, 1], exactly 0 for a closed unit."""
        if self.is_frozen:
            return self.frozen_mask
        if self.straight_through:
            return (self.log_alpha > 0).to(self.log_alpha.dtype)
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def sample(self) -> torch.Tensor:
        if self.straight_through:
            p = torch.sigmoid(self.log_alpha)
            return torch.bernoulli(p.detach()) + p - p.detach()
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def channel_values(self) -> torch.Tensor:
        """The gate per channel for this call (each unit's value repeated over its channels)."""
        if not self.training or self.is_frozen:
            return self.deterministic().repeat_interleave(self.space.unit)
        if self._uses_left == 0:
            self._draw = self.sample().repeat_interleave(self.space.unit)
            self._uses_left = len(self.space.producers)
        self._uses_left -= 1
        draw = self._draw
        if self._uses_left == 0:
            self._draw = None  # the forward's last use: keep no autograd graph on the module
        return draw

    def train(self, mode: bool = True) -> "ChannelGate":
        self._uses_left, self._draw = 0, None  # a forward cut short leaves no draw behind for the next one
        return super().train(mode)

    @torch.no_grad()
    def freeze(self, keep: torch.Tensor) -> None:
        """Fix the gates to ``keep`` (a bool per unit) and stop learning them."""
        self.frozen_mask.copy_(keep.to(self.frozen_mask.dtype))
        self.frozen.fill_(True)
        self._frozen = True
        self.log_alpha.requires_grad_(False)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._frozen = bool(self.frozen)
        self.log_alpha.requires_grad_(not self._frozen)

    def forward(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        gate = self.channel_values().to(x.dtype)
        shape = [1] * x.dim()
        shape[dim] = gate.numel()
        return x * gate.view(shape)

    def extra_repr(self) -> str:
        return f"{self.space.name}: channels={self.space.channels}, unit={self.space.unit}"

