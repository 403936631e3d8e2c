"""Channels: a learned hard-concrete gate per output channel (Louizos et al., 2018), with channels
that must go together sharing one; what the budget cuts where the MACs are."""
from maskfx.technique import Flags, Option, ParamGroup, positive_int
from maskfx.techniques.channels.layers import ChannelGate
from maskfx.techniques.channels.rewrite import CONFIG, LAYERS, TECHNIQUE, budget_cost, collapse, freeze, rewrite
from maskfx.techniques.channels.structure import structure

LEARNED = (ChannelGate,)
DRAWS = (ChannelGate,)
# Trained with Adam by ``fit`` (as CoFi trains its L0 gates): the budget's penalty reaches each
# gate with a gradient of the order of its share of the MACs, which Adam's normalisation evens out.
PARAM_GROUP = ParamGroup("gates", (ChannelGate,), mask_momentum=False)
FLAGS = Flags("learned channel gates (width) on every prunable convolution and linear layer",
              (Option("round_to", "channel counts kept as multiples of this (default: ONNX Runtime's channel block on "
                     "this machine, 16 with AVX-512, else 8)", positive_int),))

__all__ = ["CONFIG", "DRAWS", "FLAGS", "LAYERS", "LEARNED", "PARAM_GROUP", "TECHNIQUE", "budget_cost", "collapse",
           "freeze", "rewrite", "structure"]
