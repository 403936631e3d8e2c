"""The plan of one GateConnect chain lowered for inference: which branches stay, how they are wired,
and the constant each module's values carry.

Wiring. Branch ``t`` of module ``i > 0`` reads the mean of K outputs of module ``i - 1``, its set.
Branches reading one set are kept together, so their conv1 is one conv; each set is summed once.

Scales. A lowered module computes its inputs as plain sums (``relu(sum of K outputs)``), not
means: a Mul by 1/K per sum would be an op of its own. Such a module's inputs, and so its outputs
(the identity path adds its inputs as they are), carry a scale ``s_i``: K times the previous
module's, folded into the weights (conv1 divides by it, conv3 and the bias multiply by it), at no
cost. Left alone that grows as K^i along a chain (16^22, about 1e27, over resnext101's
23-module stage at K = 16), which float16 cannot hold. So each module has its own scale, kept
within ``SCALE_RANGE`` of the chain's anchor: where growing once more would leave that range,
the module's sums are multiplied by the one factor that brings its scale back to the anchor (a
Mul per sum, once every few modules: at K = 16 every other module, at K = 2 every fifth, at K = 1
never). The anchor is 1 at a chain that starts with an identity shortcut (the chain input is
the first module's identity, as it is); with a projection shortcut, which can carry any scale,
it is the end's: the scale at which the end's most common mean coefficient is 1, so the end
needs no Mul for it, and the scales grow towards it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import torch

# How far (a factor) a module's scale may lie from its chain's anchor. Each reset costs a Mul per
# sum; a wider range needs fewer, but moves values further from their size at the anchor. At a
# projection start of C = 32 branches the anchor is 1/32 already, and 16 times below it (1/512)
# an activation of 0.03 is at float16's smallest normal number (6e-5).
SCALE_RANGE = 16


@dataclass(frozen=True)
class ModulePlan:
    """One lowered module. ``order``: the branches kept, those reading one input next to each other;
    ``readers[p]``: the input the branch at position ``p`` reads; ``sets[g]``: the positions, in the
    previous module's ``order``, that input ``g`` sums (None: the first module, whose input is the
    chain's); ``scale``: what its inputs (but the first module's) and its outputs are multiplied
    by; ``rescale``: the factor its sums are multiplied by to get there (1: none, no Mul)."""

    order: tuple[int, ...]
    readers: tuple[int, ...]
    sets: tuple[tuple[int, ...], ...] | None
    scale: Fraction
    rescale: Fraction

    @property
    def input_scale(self) -> Fraction:
        """The scale of the values conv1 reads: the chain input's (1) in the first module."""
        return Fraction(1) if self.sets is None else self.scale


@dataclass(frozen=True)
class ChainPlan:
    """A chain's modules, and its end: the last module returns ``relu(conv3(h) + sum of a * inputs)``
    with ``mix`` listing ``(a, inputs)`` groups. ``rectify``: K = 1, where a module's input is one
    output of the previous module, which rectifies its outputs itself, so no op sits between them."""

    modules: tuple[ModulePlan, ...]
    mix: tuple[tuple[Fraction, tuple[int, ...]], ...]
    rectify: bool


def kept_branches(gates: list[torch.Tensor | None], branches: list[int], prune: bool) -> list[list[int]]:
    """Per module, the branches that stay: all of them, or (``prune``) the last module's and, from
    there back, every branch a kept branch reads."""
    kept = [list(range(c)) for c in branches]
    if prune:
        for i in range(len(branches) - 2, -1, -1):
            kept[i] = torch.nonzero(gates[i + 1][kept[i + 1]].sum(0)).flatten().tolist()
    return kept


def _growing(length: int, fan_in: int) -> list[Fraction]:
    """Scales from 1, each K times the one before, back to 1 where that would pass ``SCALE_RANGE``."""
    scales = [Fraction(1)]
    for _ in range(length - 1):
        grown = scales[-1] * fan_in
        scales.append(grown if grown <= SCALE_RANGE else Fraction(1))
    return scales


def module_scales(length: int, fan_in: int, end: Fraction | None) -> list[Fraction]:
    """Each module's scale: growing from 1 at the start (``end`` None: an identity shortcut), or
    growing towards ``end`` at the last module (a projection shortcut takes any start)."""
    if end is None:
        return _growing(length, fan_in)
    return [end / s for s in reversed(_growing(length, fan_in))]


def plan_chain(gates: list[torch.Tensor | None], branches: list[int], projection: bool, prune: bool) -> ChainPlan:
    """The plan of a chain whose gates are fixed: ``gates[i]`` (binary, targets x sources; None for
    the first module) says which branches of module ``i - 1`` each branch of module ``i`` reads;
    ``projection``: the first module has a projection shortcut."""
    kept = kept_branches(gates, branches, prune)
    fan_in = int(gates[1].sum(1).max())
    last = len(branches) - 1
    reads = [{t: () for t in kept[0]}] + [{t: tuple(torch.nonzero(gates[i][t]).flatten().tolist()) for t in kept[i]}
                                          for i in range(1, last + 1)]
    counts = Counter(reads[last].values())  # the end's inputs, by how many branches read each
    common = Counter(counts.values()).most_common(1)[0][0]
    scales = module_scales(len(branches), fan_in, Fraction(common, branches[last]) if projection else None)
    modules, position = [], {}
    for i, scale in enumerate(scales):
        inputs = list(dict.fromkeys(reads[i].values()))
        order = [t for s in inputs for t in kept[i] if reads[i][t] == s]
        sets = tuple(tuple(position[k] for k in s) for s in inputs) if i else None
        rescale = scale / (scales[i - 1] * fan_in) if i else Fraction(1)
        modules.append(ModulePlan(tuple(order), tuple(inputs.index(reads[i][t]) for t in order), sets, scale, rescale))
        position = {t: p for p, t in enumerate(order)}
    by_coefficient: dict[Fraction, list[int]] = {}  # the end's mean over its branches, per input
    for g, s in enumerate(dict.fromkeys(reads[last].values())):
        by_coefficient.setdefault(Fraction(counts[s], branches[last]) / scales[last], []).append(g)
    return ChainPlan(tuple(modules), tuple((a, tuple(members)) for a, members in by_coefficient.items()), fan_in == 1)
