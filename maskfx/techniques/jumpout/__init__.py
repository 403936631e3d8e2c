"""Jumpout (Wang et al., 2019): dropout after every rectifier, with a sampled, normalised rate.
Its layers learn nothing, so it has no structure to view, freeze or share."""
from maskfx.technique import Flags, no_structure as structure
from maskfx.techniques.jumpout.rewrite import CONFIG, LAYERS, TECHNIQUE, collapse, freeze, rewrite

LEARNED = ()
DRAWS = ()  # its random drop depends on the data: each rank draws its own
PARAM_GROUP = None
FLAGS = Flags("Jumpout after every ReLU and ReLU6")

__all__ = ["CONFIG", "DRAWS", "FLAGS", "LAYERS", "LEARNED", "PARAM_GROUP", "TECHNIQUE", "collapse", "freeze",
           "rewrite", "structure"]
