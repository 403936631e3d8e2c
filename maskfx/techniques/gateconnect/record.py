"""What GateConnect's rewrite records of each chain it built, for the stages after it.

``collapse`` and ``structure`` read these records instead of finding the chains again by the
shape of the graph: which modules a chain holds, the gates between them, and the nodes its end
(the mean over the last module's branches, then a ReLU) was written as. Nodes are named, not
held: names survive the deep copies of the graph that ``collapse`` lowers (``maskfx.dual``'s eval
graph, ``copy.deepcopy``), node objects do not. The records describe the eval graph, the one
``collapse`` and ``structure`` read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from maskfx.state import get_state
from maskfx.techniques.gateconnect.config import TECHNIQUE


@dataclass(frozen=True)
class ModuleRecord:
    """One ResNeXt module of a chain: ``path``, its place in the original model; ``module``, the
    ``BranchedBottleneck`` standing there (an attribute name, also its node's target) and
    ``node``, the node calling it; ``gates``/``gates_node``, the ``BranchGates`` choosing its
    branches' inputs among the previous module's branches (None for a chain's first module)."""

    path: str
    module: str
    node: str
    gates: str | None = None
    gates_node: str | None = None


@dataclass(frozen=True)
class ChainRecord:
    """A chain of two or more modules, in order; ``mean`` and ``relu`` name the end's nodes, whose
    output replaced the last original module's."""

    modules: tuple[ModuleRecord, ...]
    mean: str
    relu: str


def chains_of(gm: fx.GraphModule) -> tuple[ChainRecord, ...]:
    """The chains GateConnect's rewrite recorded on ``gm``: none if it found none, or once ``gm``
    is collapsed (its state keeps the record, but the chains are lowered: no node it names is left)."""
    state = get_state(gm)
    return () if state.collapsed is not None else state.records.get(TECHNIQUE, ())


def nodes_of(gm: fx.GraphModule, chain: ChainRecord) -> dict[str, fx.Node]:
    """The nodes ``chain`` names, by name, in ``gm``'s graph; a ``RuntimeError`` if one is missing
    (the record and the graph went apart: a bug, not a user error)."""
    by_name = {node.name: node for node in gm.graph.nodes}
    names = [chain.mean, chain.relu] + [n for m in chain.modules for n in (m.node, m.gates_node) if n is not None]
    missing = [name for name in names if name not in by_name]
    if missing:
        raise RuntimeError(f"gateconnect's record names nodes the graph does not have: {missing}")
    return {name: by_name[name] for name in names}
