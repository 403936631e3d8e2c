"""GateConnect's freeze and collapse: the gates fixed, then each recorded chain lowered to plain
convolutions (``plan``, ``deploy``) in place of its gates, modules, mean and ReLU."""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from maskfx.graph.surgery import freeze_modules, fresh_name
from maskfx.techniques.gateconnect.config import GateConnectConfig
from maskfx.techniques.gateconnect.layers import BranchedBottleneck, BranchGates
from maskfx.techniques.gateconnect.deploy import lower_chain, original_module
from maskfx.techniques.gateconnect.plan import plan_chain
from maskfx.techniques.gateconnect.record import ChainRecord, chains_of, nodes_of


def freeze(gm: fx.GraphModule) -> None:
    """Fix every connection at its current top K (``BranchGates.freeze``). Every gate layer of the
    module, not only the recorded chains': the record describes the eval graph, and a train-only
    path (an auxiliary head) may hold gates of its own, which must stop learning too."""
    freeze_modules(gm, BranchGates)


@dataclass(frozen=True)
class ChainLowered:
    """One chain as collapse left it: per module, its name, the branches kept and the branches it
    had; ``merged``: every gate was on, so the chain became the original ResNeXt modules."""

    modules: tuple[tuple[str, int, int], ...]
    merged: bool


@dataclass(frozen=True)
class GateConnectLowered:
    mode: str
    chains: tuple[ChainLowered, ...]

    def notes(self) -> list[str]:
        return [f"gateconnect collapse ({self.mode}): every gate on, {len(chain.modules)} original ResNeXt modules"
                if chain.merged else
                f"gateconnect collapse ({self.mode}): active branches "
                + ", ".join(f"{name}: {kept}/{branches}" for name, kept, branches in chain.modules)
                for chain in self.chains]


def _replace_chain(gm: fx.GraphModule, chain: ChainRecord, deployed: nn.Module) -> None:
    """Put ``deployed`` (chain input -> chain output) where the chain's gates, modules, mean and ReLU were."""
    nodes = nodes_of(gm, chain)
    first = nodes[chain.modules[0].node]
    name = fresh_name(gm, f"{first.target}_chain")
    gm.add_submodule(name, deployed)
    with gm.graph.inserting_before(first):
        output = gm.graph.call_module(name, (first.args[0],))
    nodes[chain.relu].replace_all_uses_with(output)
    for node_name in [chain.relu, chain.mean] + [n for m in reversed(chain.modules) for n in (m.node, m.gates_node)
                                                 if n is not None]:
        gm.graph.erase_node(nodes[node_name])


def collapse(gm: fx.GraphModule, mode: str, config: GateConnectConfig) -> GateConnectLowered:
    """Each recorded chain becomes plain convolutions with its gates fixed (``plan_chain``,
    ``lower_chain``); ``"prune"`` also drops the branches nobody reads. A chain whose gates are all
    on (K = C) becomes the original ResNeXt modules again."""
    lowered = []
    for chain in chains_of(gm):
        blocks: list[BranchedBottleneck] = [gm.get_submodule(m.module) for m in chain.modules]
        gates = [None if m.gates is None else gm.get_submodule(m.gates).active() for m in chain.modules]
        if all(g is None or bool(g.all()) for g in gates):
            kept = tuple((m.module, b.branches, b.branches) for m, b in zip(chain.modules, blocks))
            lowered.append(ChainLowered(kept, merged=True))
            _replace_chain(gm, chain, nn.Sequential(*(original_module(b) for b in blocks)))
            continue
        plan = plan_chain(gates, [b.branches for b in blocks], blocks[0].downsample is not None, mode == "prune")
        lowered.append(ChainLowered(tuple((m.module, len(p.order), b.branches)
                                          for m, p, b in zip(chain.modules, plan.modules, blocks)), merged=False))
        _replace_chain(gm, chain, lower_chain(blocks, plan))
    return GateConnectLowered(mode, tuple(lowered))
