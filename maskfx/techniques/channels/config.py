"""The channels technique's config: how gates start and how kept widths are rounded."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from maskfx.errors import UserError

ESTIMATORS = ("hard-concrete", "straight-through")


def ort_cpu_channel_block() -> int:
    """The channel block of ONNX Runtime's CPU convolutions here (MLAS's NCHWc layout): 16 where
    the CPU has AVX-512, else 8. Read from torch's CPU capability, a stand-in for MLAS's own CPUID
    check (``ATEN_CPU_CAPABILITY`` can lower torch's)."""
    return 16 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 8


def deployment_channel_block() -> int:
    """The channel multiple the kernels that will run the pruned model compute in, on this machine:
    8 where CUDA runs it (tensor cores), else ONNX Runtime's CPU block (``ort_cpu_channel_block``).

    A width off the CPU block is padded up to it, MACs and all, and the adds and pools around it
    fall out of the blocked layout into reorders: on this project's AVX-512 machine a resnet18
    pruned at multiples of 8 ran ten kernels more than at multiples of 16, which ran the dense
    model's 25 (``benchmarks/width_latency.py``'s profile table)."""
    return 8 if torch.cuda.is_available() else ort_cpu_channel_block()


@dataclass(frozen=True)
class ChannelConfig:
    """A learned gate per output channel of every prunable convolution and linear layer.

    ``round_to``: every pruned width is a multiple of it; by default the channel block of the
    kernels that will run the model, on the machine that transforms it
    (``deployment_channel_block``: 16 on a CPU with AVX-512, else 8), recorded in the config so a
    checkpoint prunes alike anywhere. ONNX Runtime pads a width off the block and reorders around
    it; a space narrower than ``round_to`` keeps at least one unit.

    ``init_keep``: the probability that a gate is open at the start (Louizos et al.'s
    hard-concrete gate); near 1 keeps a trained start's function until the budget's penalty
    closes gates. At 0.99 one hard-concrete training draw in five is fractional (in (0, 1)): a
    start whole 99% of the time (``init_keep=0.9996``) was measured against it, distilled at T = 2
    (at the gates' former Adam momentum 0.9), and lost on both models. The budget suite's resnet18
    learned less of the cut before the freeze (0.66-0.72 of the MACs against 0.44-0.56 at budget
    0.5) and shipped 0.16-0.24 points lower on the mean of 3 seeds at each budget (lower in 7 of
    the 9 seed-budget pairs); the demo's ResNeXt, whose units are whole branches, 15.6 points
    lower (74.2% against 89.8%). The task needs fractional draws to tell units apart.
    Every unit of a space starts alike. A start ranked by magnitude (each unit's ``log_alpha``
    moved by ``s`` times its rank within the space, spread over [-1, 1], by Torch-Pruning's L2
    group importance: its writers' rows, BatchNorm scales and readers' columns) was measured on the
    budget suite's 8 starts at Torch-Pruning's MACs 0.404 / 0.303, distilled, paired against the
    uniform start: s = 1 +0.06 [-0.18, +0.31] / +0.29 [-0.29, +0.88] points; s = 2 +0.14
    [-0.05, +0.33] / +0.08 [-0.54, +0.71]; s = 3 +0.14 [-0.28, +0.55] / +0.07 [-0.54, +0.69] (7
    seeds); s = 1 with the budget's multiplier started at 3 +0.18 [-0.30, +0.65] / +0.20 [-0.13,
    +0.53] (7 seeds). None is resolved; the start stays uniform, borrowing nothing from the peer.
    ``temperature``: the hard-concrete's beta (2/3 in the paper and CoFi).
    ``estimator``: ``"hard-concrete"`` (the default) or ``"straight-through"``, a Bernoulli gate
    with a binary forward and the straight-through gradient, as the papers' masks learn
    (``benchmarks/gates.py`` measures the two against each other).
    """

    round_to: int = field(default_factory=deployment_channel_block)
    init_keep: float = 0.99
    temperature: float = 2 / 3
    estimator: str = "hard-concrete"

    def __post_init__(self) -> None:
        if not (isinstance(self.round_to, int) and not isinstance(self.round_to, bool) and self.round_to >= 1):
            raise UserError(f"round_to must be an int >= 1, got {self.round_to!r}")
        if not (isinstance(self.init_keep, (int, float)) and 0 < self.init_keep < 1):
            raise UserError(f"init_keep must be a probability strictly between 0 and 1, got {self.init_keep!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise UserError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
