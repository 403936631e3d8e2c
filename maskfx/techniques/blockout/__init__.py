"""Blockout (Murdock et al., 2016): learned block-structured clusters on the classifier head."""
from maskfx.technique import Flags, Option, ParamGroup, positive_int
from maskfx.techniques.blockout.layers import BlockoutClusters, BlockoutLinear
from maskfx.techniques.blockout.rewrite import CONFIG, LAYERS, TECHNIQUE, collapse, freeze, rewrite
from maskfx.techniques.blockout.structure import structure

LEARNED = (BlockoutLinear,)  # its BlockoutClusters serve the BlockoutLinears
DRAWS = (BlockoutClusters,)
# The paper trains the cluster logits with the network's optimizer, momentum included.
PARAM_GROUP = ParamGroup("clusters", (BlockoutClusters,), mask_momentum=False)
FLAGS = Flags("Blockout on the classifier head", (Option("clusters", "Blockout clusters k", positive_int),))

__all__ = ["CONFIG", "DRAWS", "FLAGS", "LAYERS", "LEARNED", "PARAM_GROUP", "TECHNIQUE", "collapse", "freeze",
           "rewrite", "structure"]
