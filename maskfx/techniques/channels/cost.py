"""MACs as a function of the kept channels: the expected cost the budget trains against, and the
exact cost its selection meets.

Every convolution and linear call is a term ``macs * (kept inputs / inputs) * (kept outputs /
outputs)``; a depthwise or grouped convolution maps a space to itself and scales once with it.
MACs are counted as ``torch.utils.flop_counter`` counts them (2 FLOPs per MAC), so the cost
model and the measured MACs of the pruned graph agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping

import torch


@dataclass
class Term:
    """One convolution or linear call. ``inputs``: per segment of its input channels, the key of
    that space (the analysis's space index, then the rewrite's gate name; ``None``: fixed) and its
    width; ``output``: the key of its output space (``None``: fixed, or ``same``); ``same``:
    depthwise or grouped, its output is its input's space."""

    module: str
    macs: int
    inputs: list[tuple[Hashable | None, int]]
    output: Hashable | None
    same: bool
    in_channels: int
    out_channels: int


def cost(terms: list[Term], kept: Mapping[Hashable, torch.Tensor | float]) -> torch.Tensor | float:
    """The MACs of ``terms`` with ``kept[gate]`` channels kept per space (expected or exact)."""
    total = 0.0
    for term in terms:
        if term.same:
            gate = term.inputs[0][0]
            total = total + term.macs * (kept[gate] / term.in_channels if gate else 1.0)
            continue
        into = sum(kept[gate] if gate else width for gate, width in term.inputs) / term.in_channels
        out = kept[term.output] / term.out_channels if term.output else 1.0
        total = total + term.macs * into * out
    return total
