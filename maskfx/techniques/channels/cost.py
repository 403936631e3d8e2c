"""MACs and parameters as functions of the kept channels: the expected cost the budget trains
against, and the exact cost its selection meets.

Every convolution and linear call is a term ``macs * (kept inputs / inputs) * (kept outputs /
outputs)``, and its weights likewise (its bias scales with the kept outputs alone); a depthwise or
grouped convolution, and a BatchNorm's affine, map a space to itself and scale once with it.
MACs are counted as ``torch.utils.flop_counter`` counts them (2 FLOPs per MAC) and parameters as
``count_parameters`` does, so the cost model and the measured pruned graph agree.
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
    weights: int = 0  # parameters that scale as the MACs do
    biases: int = 0  # parameters that scale with the kept outputs alone

    def full(self, resource: str) -> int:
        return self.macs if resource == "macs" else self.weights


RESOURCES = ("macs", "params")


def cost(terms: list[Term], kept: Mapping[Hashable, torch.Tensor | float],
         resource: str = "macs") -> torch.Tensor | float:
    """The MACs (or parameters) of ``terms`` with ``kept[gate]`` channels kept per space (expected
    or exact)."""
    params = resource == "params"
    total = 0.0
    for term in terms:
        if term.same:
            gate = term.inputs[0][0]
            share = kept[gate] / term.in_channels if gate else 1.0
            total = total + (term.full(resource) + params * term.biases) * share
            continue
        into = sum(kept[gate] if gate else width for gate, width in term.inputs) / term.in_channels
        out = kept[term.output] / term.out_channels if term.output else 1.0
        total = total + term.full(resource) * into * out + params * term.biases * out
    return total
