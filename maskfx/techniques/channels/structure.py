"""The channels structure view: per channel space, each unit's probability of being open."""
from __future__ import annotations

import torch.fx as fx

from maskfx.technique import LearnedSite
from maskfx.techniques.channels.rewrite import TECHNIQUE, gates_of


def structure(gm: fx.GraphModule) -> list[LearnedSite]:
    return [LearnedSite(TECHNIQUE, gate.space.name, gate.keep_probability().detach().clone(),
                        (gate.deterministic() > 0).detach().clone(), gate.is_frozen)
            for gate in gates_of(gm).values()]
