"""A read-only view of what a transformed network has learned, as tensors.

Reports, plots and tests read this instead of parsing summaries: per site, the learned values
(Blockout cluster probabilities of one layer's nodes, a block's MaskConnect mask, a module's
GateConnect gates) and what ``freeze``/``collapse("prune")`` would keep. Each technique gives
the view of its own sites (``Technique.structure``).
"""
from __future__ import annotations

import torch.fx as fx

from maskfx import techniques
from maskfx.dual import eval_module
from maskfx.state import get_state
from maskfx.technique import LearnedSite

__all__ = ["LearnedSite", "structure"]


def structure(net: fx.GraphModule) -> list[LearnedSite]:
    """The learned structure of every site of ``net`` (a ``maskfx.transform`` result): technique
    by technique in collapse order (Blockout, MaskConnect, GateConnect), each in graph order.
    Tensors are copies."""
    get_state(net)
    view = eval_module(net)  # the eval graph: every learned site is in it
    return [site for technique in reversed(techniques.PIPELINE) for site in technique.structure(view)]
