"""GateConnect's structure view: per module, each branch's gates over the previous module's branches."""
from __future__ import annotations

import torch.fx as fx

from maskfx.graph.surgery import nodes_calling
from maskfx.technique import LearnedSite
from maskfx.techniques.gateconnect.layers import BranchGates
from maskfx.techniques.gateconnect.rewrite import TECHNIQUE


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    return [LearnedSite(TECHNIQUE, str(node.target), layer.mask.detach().clone(), layer.active().bool(),
                        layer.is_frozen)
            for node, layer in nodes_calling(gm, BranchGates)]
