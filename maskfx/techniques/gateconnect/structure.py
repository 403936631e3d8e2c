"""GateConnect's structure view: per module, each branch's gates over the previous module's branches."""
from __future__ import annotations

import torch.fx as fx

from maskfx.technique import LearnedSite
from maskfx.techniques.gateconnect.config import TECHNIQUE
from maskfx.techniques.gateconnect.layers import BranchGates
from maskfx.techniques.gateconnect.record import chains_of


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    """The gates of every recorded chain, chain by chain, module by module: graph order."""
    sites = []
    for chain in chains_of(gm):
        for module in chain.modules[1:]:
            layer: BranchGates = gm.get_submodule(module.gates)
            sites.append(LearnedSite(TECHNIQUE, module.gates, layer.mask.detach().clone(), layer.active().bool(),
                                     layer.is_frozen))
    return sites
