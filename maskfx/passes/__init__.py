"""One module per technique: how to find its sites in a graph, rewrite them, and collapse them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.fx as fx
from torch import nn

from maskfx.config import JumpoutConfig
from maskfx.nn import Jumpout
from maskfx.passes import jumpout
from maskfx.state import Site


@dataclass(frozen=True)
class TechniquePass:
    name: str  # also the keyword argument of maskfx.transform
    config_type: type
    layer_types: tuple[type[nn.Module], ...]  # what the pass adds; none may survive collapse
    rewrite: Callable[[fx.GraphModule, object], list[Site]]
    collapse: Callable[[fx.GraphModule, str], list[str]]


# Rewrite order: structure first, then regularisers around what is left. Collapse runs in reverse.
PIPELINE: tuple[TechniquePass, ...] = (
    TechniquePass(jumpout.TECHNIQUE, JumpoutConfig, (Jumpout,), jumpout.rewrite, jumpout.collapse),
)
