"""Blockout's structure view: per node set of each head, its cluster probabilities and hard clusters."""
from __future__ import annotations

import torch.fx as fx

from maskfx.technique import LearnedSite
from maskfx.techniques.blockout.rewrite import TECHNIQUE, heads_of


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    """A site per node set: the first layer's inputs, then every layer's outputs."""
    sites = []
    for head, _, clusters, _ in heads_of(gm):
        names = [f"{head.layers[0]} inputs"] + [f"{name} outputs" for name in head.layers]
        for name, p, c in zip(names, clusters.probabilities(), clusters.hard()):
            sites.append(LearnedSite(TECHNIQUE, name, p.detach().clone(), c.bool(), bool(clusters.frozen)))
    return sites
