"""Blockout's structure view: per node set of each head, its cluster probabilities and hard clusters."""
from __future__ import annotations

import torch.fx as fx

from maskfx.graph.surgery import nodes_calling
from maskfx.technique import LearnedSite
from maskfx.techniques.blockout.layers import BlockoutClusters, BlockoutLinear
from maskfx.techniques.blockout.rewrite import TECHNIQUE


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    """A site per node set: the first layer's inputs, then every layer's outputs."""
    sites = []
    for draws, clusters in nodes_calling(gm, BlockoutClusters):
        readers = set(draws.users)
        layers = [str(n.target) for n, _ in nodes_calling(gm, BlockoutLinear) if n.args[1] in readers]
        names = [f"{layers[0]} inputs"] + [f"{name} outputs" for name in layers]
        for name, p, c in zip(names, clusters.probabilities(), clusters.hard()):
            sites.append(LearnedSite(TECHNIQUE, name, p.detach().clone(), c.bool(), bool(clusters.frozen)))
    return sites
