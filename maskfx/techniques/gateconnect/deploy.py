"""A GateConnect chain lowered to plain convolutions for inference, as its ``ChainPlan`` says.

Each conv + BatchNorm becomes one conv through torch's own fusion (``fuse_conv_bn_weights``);
the module's scale (``plan``) is folded into the weights: conv1 divides by the scale of what it
reads, conv3, its bias and a projection shortcut multiply by the module's. A chain whose gates
are all on needs none of this: it is the original ResNeXt modules again (``original_module``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from maskfx.techniques.gateconnect.layers import BottleneckParts, BranchedBottleneck, DeployedBranches, \
    DeployedEnd, DeployedModule, ResNeXtBlock, conv_like
from maskfx.techniques.gateconnect.plan import ChainPlan, ModulePlan


def _fused(weight: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a bias-free conv of ``weight`` followed by the eval-mode ``norm``."""
    fused = fuse_conv_bn_weights(weight, None, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
    return fused[0].detach(), fused[1].detach()


def _rows(branches: tuple[int, ...], width: int, device: torch.device) -> torch.Tensor:
    """The channels of ``branches``, ``width`` each, in that order."""
    return torch.tensor([t * width + r for t in branches for r in range(width)], device=device)


def _front(block: BranchedBottleneck, plan: ModulePlan) -> tuple[list[nn.Conv2d], nn.Conv2d]:
    """The kept branches' conv1, one per input they read (divided by that input's scale), and conv2."""
    width, device = block.conv2.in_channels // block.branches, block.conv2.weight.device
    w1, b1 = _fused(block.conv1.weight, block.bn1)
    conv1 = []
    for g in range(max(plan.readers) + 1):
        rows = _rows(tuple(t for t, reads in zip(plan.order, plan.readers) if reads == g), width, device)
        conv1.append(conv_like(block.conv1, block.in_channels, len(rows), 1, w1[rows] / float(plan.input_scale),
                               b1[rows]))
    w2, b2 = _fused(block.conv2.weight, block.bn2)
    rows = _rows(plan.order, width, device)
    return conv1, conv_like(block.conv2, len(rows), len(rows), len(plan.order), w2[rows], b2[rows])


@torch.no_grad()
def lower_module(block: BranchedBottleneck, plan: ModulePlan, chain: ChainPlan, end: bool) -> DeployedModule:
    """``block`` with the wiring and scale of ``plan``: the chain's end (``end``) or a module before it."""
    width, out = block.conv2.in_channels // block.branches, block.out_channels
    conv1, conv2 = _front(block, plan)
    w3, b3 = _fused(block.dense_conv3_weight(), block.bn3)  # (out, C * width): the branches side by side
    per_branch = w3.view(out, block.branches, width).permute(1, 0, 2)[list(plan.order)]  # (kept, out, width)
    sets = None if plan.sets is None else [list(s) for s in plan.sets]
    if end:  # the branches' conv3 as one dense conv over h
        dense = per_branch.permute(1, 0, 2).reshape(out, -1, 1, 1)
        return DeployedEnd(sets, float(plan.rescale), list(plan.readers), conv1, conv2,
                           conv_like(block.conv3, dense.shape[1], out, 1, dense, b3),
                           [(float(a), list(members)) for a, members in chain.mix])
    scale = float(plan.scale)
    shortcut = None
    if block.downsample is not None:
        weight, bias = _fused(block.downsample[0].weight, block.downsample[1])
        shortcut = conv_like(block.downsample[0], block.in_channels, out, 1, weight * scale, bias * scale)
    elif plan.sets is None and scale != 1:
        raise RuntimeError("the plan put a scale on an identity shortcut, which cannot carry one")
    weights = [(w * (block.scale * scale)).view(out, width, 1, 1) for w in per_branch]
    return DeployedBranches(sets, float(plan.rescale), list(plan.readers), conv1, conv2, weights, b3 * scale,
                            shortcut, chain.rectify)


def lower_chain(blocks: list[BranchedBottleneck], plan: ChainPlan) -> nn.Sequential:
    """The chain's modules lowered, in order: chain input -> chain output."""
    last = len(blocks) - 1
    return nn.Sequential(*(lower_module(block, module, plan, i == last)
                           for i, (block, module) in enumerate(zip(blocks, plan.modules))))


def original_module(block: BranchedBottleneck) -> ResNeXtBlock:
    """The original module again, for a chain whose every branch reads the same input (all gates on)."""
    c, out = block.branches, block.out_channels
    width = block.conv2.in_channels // c
    conv1 = block.conv1 if block.shared_input else conv_like(block.conv1, block.in_channels, c * width, 1,
                                                              block.conv1.weight)
    conv3 = conv_like(block.conv3, c * width, out, 1, block.dense_conv3_weight())
    projection = tuple(block.downsample) if block.downsample is not None else None
    return ResNeXtBlock(BottleneckParts(conv1, block.bn1, block.conv2, block.bn2, conv3, block.bn3, projection))
