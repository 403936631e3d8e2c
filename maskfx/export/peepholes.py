"""Backend peepholes: exact rewrites of a lowered graph that only some ONNX Runtime providers want.

``collapse`` lowers every technique to plain PyTorch modules that any backend runs as they are.
A peephole rewrites that graph into the same function in a form one provider's kernels handle
better. ``export_onnx`` applies the peepholes of the provider it exports for to a copy of the
module, so the deployed module stays the backend-neutral lowering, and its parity check compares
ONNX Runtime with that unrewritten module.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from maskfx.graph.channel_pad import absorb_channel_pads, is_channel_pad
from maskfx.graph.surgery import finish, propagate_shapes


@dataclass(frozen=True)
class Peephole:
    """One rewrite: the providers it is for, the nodes it may rewrite (a graph with none is exported
    as it is, uncopied), and the rewrite, which reads recorded shapes and returns how many rewrites
    it made."""

    name: str
    providers: frozenset[str]
    site: Callable[[fx.Node], bool]
    rewrite: Callable[[fx.GraphModule], int]


# The channel-pad rewrite is for the CPU provider only. There ONNX Runtime's NCHWc layout pass
# (MLAS, CPU kernels only) has no Pad, and three Pads cost a pruned resnet50 10 Conv + Add + Relu
# fusions and 19 layout reorders (README, MaskConnect design notes). The CUDA provider runs NCHW
# cuDNN kernels with no such layout pass for a Pad to break: a Pad is one copy kernel there, and the
# rewrite would trade it for a Concat copy and a second convolution launch, so it gains nothing
# (reasoned, not measured on a GPU).
PEEPHOLES = (
    Peephole("channel_pad", frozenset({"CPUExecutionProvider"}), is_channel_pad, absorb_channel_pads),
)


def apply_peepholes(model: nn.Module, provider: str,
                    example_inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, dict[str, int]]:
    """``model`` rewritten by ``provider``'s peepholes, and the rewrites each made (0 where it found
    nothing to rewrite). ``model`` is never changed: the rewrites go to a copy, made only when a
    peephole has a site in its graph, with every node's shape propagated from ``example_inputs``."""
    chosen = [p for p in PEEPHOLES if provider in p.providers]
    counts = dict.fromkeys((p.name for p in chosen), 0)
    if not isinstance(model, fx.GraphModule):
        return model, counts
    wanted = [p for p in chosen if any(map(p.site, model.graph.nodes))]
    if not wanted:
        return model, counts
    rewritten = copy.deepcopy(model)
    propagate_shapes(rewritten, example_inputs)
    for peephole in wanted:
        counts[peephole.name] = peephole.rewrite(rewritten)
    return finish(rewritten), counts
