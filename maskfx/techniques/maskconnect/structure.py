"""MaskConnect's structure view: per block, its mask over the candidate inputs, named."""
from __future__ import annotations

import torch.fx as fx

from maskfx.graph.marks import BLOCK
from maskfx.graph.surgery import nodes_calling
from maskfx.technique import LearnedSite
from maskfx.techniques.maskconnect.layers import MaskedConnection
from maskfx.techniques.maskconnect.rewrite import TECHNIQUE, block_names


def _source_name(node: fx.Node, names: dict) -> str:
    """The block whose output ``node`` is, looking through the layers a later pass inserted after
    a block output (module calls outside every block, reading one)."""
    while node.op == "call_module" and BLOCK not in node.meta and len(node.args) == 1 \
            and isinstance(node.args[0], fx.Node) and BLOCK in node.args[0].meta:
        node = node.args[0]
    return names.get(node.meta.get(BLOCK), "chain input")


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    names = block_names(gm)
    return [LearnedSite(TECHNIQUE, names[node.meta[BLOCK]], layer.mask.detach().clone(), layer.active().bool(),
                        layer.is_frozen, tuple(_source_name(a, names) for a in node.args))
            for node, layer in nodes_calling(gm, MaskedConnection)]
