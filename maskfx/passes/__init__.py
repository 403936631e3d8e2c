"""One module per technique: how to find its sites in a graph, rewrite them, and collapse them.

Every pass module fits ``TechniquePass``; ``maskfx.transform`` runs them in ``PIPELINE`` order
and checks and recompiles the graph once at the end (``graph.finish``). No pass runs another.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch.fx as fx
from torch import nn

from maskfx.passes import blockout, gateconnect, jumpout, maskconnect
from maskfx.state import Rewrite


@runtime_checkable
class TechniquePass(Protocol):
    """What a technique's pass module provides."""

    TECHNIQUE: str  # its name, also the keyword argument of maskfx.transform
    CONFIG: type  # its config dataclass
    LAYERS: tuple[type[nn.Module], ...]  # the layers rewrite adds; collapse leaves none of them

    def rewrite(self, gm: fx.GraphModule, config: Any, example_inputs: tuple | None) -> Rewrite:
        """Find the sites in ``gm``'s graph and rewrite them in place."""

    def freeze(self, gm: fx.GraphModule) -> None:
        """Fix this technique's learned structure for fine-tuning (``maskfx.freeze``)."""

    def collapse(self, gm: fx.GraphModule, mode: str, config: Any) -> list[str]:
        """Lower this technique's layers to plain ones (``mode``: "expected" or "prune"); notes."""


# Rewrite order: structure first (ResNeXt branches before residual blocks, which skip the modules
# GateConnect took), then regularisers around what is left. Collapse runs in reverse.
PIPELINE: tuple[TechniquePass, ...] = (gateconnect, maskconnect, blockout, jumpout)
