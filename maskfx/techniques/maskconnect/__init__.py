"""MaskConnect (Ahmed & Torresani, 2018): learned K-of-N connections between residual blocks."""
from maskfx.layers.kofn import INITS, SAMPLINGS, KOfNMasks
from maskfx.technique import Flags, Option, ParamGroup, positive_int
from maskfx.techniques.maskconnect.rewrite import CONFIG, LAYERS, TECHNIQUE, collapse, freeze, rewrite
from maskfx.techniques.maskconnect.structure import structure

LEARNED = (KOfNMasks,)
DRAWS = (KOfNMasks,)
# The paper's update is m <- clip(m - lr * dL/dm) (Alg. 1): no momentum, whatever the weights get.
PARAM_GROUP = ParamGroup("structure", (KOfNMasks,), mask_momentum=True)
FLAGS = Flags("MaskConnect on chains of residual blocks", (
    Option("fan_in", "MaskConnect/GateConnect inputs K", positive_int),
    Option("init", "MaskConnect masks' start (default 'previous': the original chain; 'uniform': the paper's)",
           choices=INITS),
    Option("sampling", "how MaskConnect's training forwards pick K inputs (default 'top-k'; 'multinomial': "
           "the paper's)", choices=SAMPLINGS),
))

__all__ = ["CONFIG", "DRAWS", "FLAGS", "LAYERS", "LEARNED", "PARAM_GROUP", "TECHNIQUE", "collapse", "freeze",
           "rewrite", "structure"]
