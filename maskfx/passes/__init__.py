"""One module per technique: how to find its sites in a graph, rewrite them, and collapse them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.fx as fx
from torch import nn

from maskfx.config import BlockoutConfig, JumpoutConfig, MaskConnectConfig
from maskfx.nn import BlockoutClusters, BlockoutLinear, BranchGates, Jumpout, MaskedConnection
from maskfx.passes import blockout, jumpout, maskconnect
from maskfx.state import Rewrite


@dataclass(frozen=True)
class TechniquePass:
    name: str  # also the keyword argument of maskfx.transform
    config_type: type
    layer_types: tuple[type[nn.Module], ...]  # what the pass adds; none may survive collapse
    rewrite: Callable[[fx.GraphModule, object, tuple | None], Rewrite]  # graph, config, example inputs
    collapse: Callable[[fx.GraphModule, str, object], list[str]]  # graph, mode, config -> notes


# Rewrite order: structure first, then regularisers around what is left. Collapse runs in reverse.
PIPELINE: tuple[TechniquePass, ...] = (
    TechniquePass(maskconnect.TECHNIQUE, MaskConnectConfig, (MaskedConnection, BranchGates),
                  maskconnect.rewrite, maskconnect.collapse),
    TechniquePass(blockout.TECHNIQUE, BlockoutConfig, (BlockoutClusters, BlockoutLinear),
                  blockout.rewrite, blockout.collapse),
    TechniquePass(jumpout.TECHNIQUE, JumpoutConfig, (Jumpout,), jumpout.rewrite, jumpout.collapse),
)
