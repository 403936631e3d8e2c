"""A read-only view of what a transformed network has learned, as tensors.

Reports, plots and tests read this instead of parsing summaries: per site, the learned values
(Blockout cluster probabilities of one layer's nodes, a block's MaskConnect mask, a module's
GateConnect gates) and what ``freeze``/``collapse("prune")`` would keep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from maskfx.dual import eval_module
from maskfx.marks import BLOCK
from maskfx.nn import BlockoutClusters, BlockoutLinear, BranchGates, Jumpout, MaskedConnection
from maskfx.passes.graph import module_of, nodes_calling
from maskfx.passes.maskconnect import block_names
from maskfx.state import get_state


@dataclass(frozen=True)
class LearnedSite:
    """One site's learned structure.

    ``values``: Blockout, the cluster probabilities ``P`` of one layer's nodes, ``(nodes, k)``;
    MaskConnect, the real mask over the block's candidate inputs, ``(candidates,)``; GateConnect,
    the gates of each branch over the previous module's branches, ``(branches, sources)``.
    ``keep``: the boolean structure that ``freeze`` fixes and ``collapse("prune")`` keeps (hard
    clusters; the K active inputs of each row). ``sources`` names MaskConnect's candidates.
    """

    technique: str
    location: str
    values: torch.Tensor
    keep: torch.Tensor
    frozen: bool
    sources: tuple[str, ...] = ()


def _blockout(gm: fx.GraphModule) -> list[LearnedSite]:
    sites = []
    for draws, clusters in nodes_calling(gm, BlockoutClusters):
        readers = set(draws.users)
        layers = [str(n.target) for n, _ in nodes_calling(gm, BlockoutLinear) if n.args[1] in readers]
        names = [f"{layers[0]} inputs"] + [f"{name} outputs" for name in layers]
        for name, p, c in zip(names, clusters.probabilities(), clusters.hard()):
            sites.append(LearnedSite("blockout", name, p.detach().clone(), c.bool(), bool(clusters.frozen)))
    return sites


def _source_name(gm: fx.GraphModule, node: fx.Node, names: dict) -> str:
    """The block whose output ``node`` is, looking through a Jumpout inserted after it."""
    while isinstance(module_of(gm, node), Jumpout):
        node = node.args[0]
    return names.get(node.meta.get(BLOCK), "chain input")


def _connections(gm: fx.GraphModule) -> list[LearnedSite]:
    names = block_names(gm)
    sites = []
    for node, layer in nodes_calling(gm, (MaskedConnection, BranchGates)):
        if isinstance(layer, MaskedConnection):
            technique, location = "maskconnect", names[node.meta[BLOCK]]
            sources = tuple(_source_name(gm, a, names) for a in node.args)
        else:
            technique, location, sources = "gateconnect", str(node.target), ()
        sites.append(LearnedSite(technique, location, layer.mask.detach().clone(), layer.active().bool(),
                                 layer.is_frozen, sources))
    return sites


def structure(net: fx.GraphModule) -> list[LearnedSite]:
    """The learned structure of every site of ``net`` (a ``maskfx.transform`` result), in graph
    order: Blockout layers, then MaskConnect blocks and GateConnect modules. Tensors are copies."""
    get_state(net)
    view = eval_module(net)  # the eval graph: every learned site is in it
    return _blockout(view) + _connections(view)
