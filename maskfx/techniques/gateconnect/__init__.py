"""GateConnect (Ahmed & Torresani, 2018): learned branch connectivity in chains of ResNeXt modules."""
from maskfx.layers.kofn import KOfNMasks
from maskfx.technique import Flags, Option, ParamGroup, positive_int
from maskfx.techniques.gateconnect.config import TECHNIQUE
from maskfx.techniques.gateconnect.layers import BranchedBottleneck
from maskfx.techniques.gateconnect.lower import collapse, freeze
from maskfx.techniques.gateconnect.rewrite import CONFIG, LAYERS, rewrite
from maskfx.techniques.gateconnect.structure import structure

LEARNED = (BranchedBottleneck, KOfNMasks)
DRAWS = (KOfNMasks,)
# The paper trains the gates with plain gradient steps, as MaskConnect its masks.
PARAM_GROUP = ParamGroup("structure", (KOfNMasks,), mask_momentum=True)
FLAGS = Flags("GateConnect on chains of ResNeXt modules", (Option("fan_in", "MaskConnect/GateConnect inputs K",
                                                                  positive_int),))

__all__ = ["CONFIG", "DRAWS", "FLAGS", "LAYERS", "LEARNED", "PARAM_GROUP", "TECHNIQUE", "collapse", "freeze",
           "rewrite", "structure"]
