"""How GateConnect finds its sites: ResNeXt modules, by the shape of their graph, and chains of them.

A ResNeXt module is recognised however its forward is written (activation modules or functions,
``+`` or ``+=``, the shortcut on either side, ``nn.Identity`` placeholders): a residual add of
1x1 conv -> BN -> ReLU -> grouped conv -> BN -> ReLU -> 1x1 conv -> BN and the input or a conv +
BN projection of it, followed by a ReLU. A chain is a run of such modules, each reading the
previous one's output. It starts at a module with a projection shortcut (that module reads the
summed input: a per-branch projection would cost C times its multiply-adds) or at the first
module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch.fx as fx
from torch import nn

from maskfx.graph.marks import block_name
from maskfx.graph.surgery import add_operands, ancestors, is_relu, module_of
from maskfx.state import Rejection
from maskfx.techniques.gateconnect.config import TECHNIQUE
from maskfx.techniques.gateconnect.layers import BottleneckParts

BRANCH = ("bn3", "conv3", "relu", "bn2", "conv2", "relu", "bn1", "conv1")
LAYER_TYPES = {"bn": nn.BatchNorm2d, "conv": nn.Conv2d}


@dataclass
class Module:
    """One ResNeXt module found in the graph: its layers, its nodes (input excluded, output last)."""

    path: str
    nodes: list[fx.Node]
    input: fx.Node
    parts: BottleneckParts

    @property
    def has_projection(self) -> bool:
        return self.parts.projection is not None


class _Mismatch(NamedTuple):
    """Why a residual branch is not a bottleneck, and how many of its layers matched first."""

    reason: str
    depth: int


def _skip_identities(gm: fx.GraphModule, node: fx.Node, path: list[fx.Node]) -> fx.Node:
    """Step back over ``nn.Identity`` calls (disabled drop-block or anti-aliasing slots), recording them."""
    while isinstance(module_of(gm, node), nn.Identity):
        path.append(node)
        node = node.args[0]
    return node


def _walk_branch(gm: fx.GraphModule, tail: fx.Node, x: fx.Node) -> tuple[list[fx.Node], dict[str, nn.Module]] | _Mismatch:
    """From the residual branch's last node back to the module input ``x`` along
    bn3 <- conv3 <- relu <- bn2 <- conv2 <- relu <- bn1 <- conv1. Returns the nodes walked and the
    layers by name, or why the branch is not that chain."""
    path, layers, node = [], {}, tail
    for depth, step in enumerate(BRANCH):
        node = _skip_identities(gm, node, path)
        if node is x:
            return _Mismatch(f"the residual branch has {depth} layers, not a 1x1 -> grouped -> 1x1 bottleneck", depth)
        if path and len(node.users) != 1:
            return _Mismatch(f"the residual branch is shared with other computations before {step}", depth)
        found = f"{node.op} {getattr(node.target, '__name__', node.target)}"
        module = module_of(gm, node)
        if step == "relu" and not is_relu(gm, node):
            return _Mismatch(f"{found} where a bottleneck has a ReLU", depth)
        if step != "relu" and not isinstance(module, LAYER_TYPES[step[:-1]]):
            detail = " (SE, drop-path or scaling before the add cannot be split into branches)" if depth == 0 else ""
            return _Mismatch(f"{found} where a bottleneck has {step}{detail}", depth)
        if step != "relu":
            layers[step] = module
        path.append(node)
        node = node.args[0]
    if _skip_identities(gm, node, path) is not x:
        return _Mismatch("conv1 does not read the module input", len(BRANCH))
    return path, layers


def _shortcut(gm: fx.GraphModule, node: fx.Node, x: fx.Node) -> tuple[list[fx.Node], tuple | None] | None:
    """The shortcut operand: ``x`` itself, or BatchNorm(conv(x)); its nodes and projection layers."""
    path: list[fx.Node] = []
    node = _skip_identities(gm, node, path)
    if node is x:
        return path, None
    norm = node
    conv = _skip_identities(gm, norm.args[0], path) if norm.op == "call_module" and norm.args else None
    if conv is None or conv.op != "call_module" or not conv.args or conv.args[0] is not x:
        return None
    return path + [norm, conv], (module_of(gm, conv), module_of(gm, norm))


def _match(gm: fx.GraphModule, add: fx.Node, order: dict[fx.Node, int]) -> Module | Rejection | None:
    """The ResNeXt module whose shortcut add is ``add``, or why a residual add whose branch ends in
    conv + BatchNorm or holds a grouped conv is not one, or None. The branch is the longer path from the block input (the
    operands' latest common ancestor) to the add, so the shortcut may be on either side."""
    operands = add_operands(add)
    if operands is None:
        return None
    reach = [ancestors(a) for a in operands]
    common = reach[0] & reach[1]
    if not common:
        return None
    x = max(common, key=order.__getitem__)
    longer = 0 if len(reach[0]) >= len(reach[1]) else 1
    branch, other = operands[longer], operands[1 - longer]
    walked = _walk_branch(gm, branch, x)
    if isinstance(walked, _Mismatch):
        grouped = any(isinstance(module_of(gm, n), nn.Conv2d) and module_of(gm, n).groups > 1
                      for n in reach[longer] if order[n] > order[x])
        candidate = walked.depth >= 2 or grouped  # ends in conv + BN, or has branches
        return Rejection(TECHNIQUE, block_name([add]), walked.reason) if candidate else None
    path, layers = walked
    shortcut = _shortcut(gm, other, x)
    users = list(add.users)
    parts = BottleneckParts(**layers, projection=shortcut[1] if shortcut else None)
    nodes = [n for n in gm.graph.nodes if n in {*path, *(shortcut[0] if shortcut else ()), add, *users[:1]}]
    if shortcut is None:
        problem = "the shortcut is neither the module input nor a conv + BatchNorm projection of it"
    elif len(users) != 1 or not is_relu(gm, users[0]):
        problem = "no ReLU right after the shortcut add"
    elif any(u not in set(nodes) for n in nodes[:-1] for u in n.users):
        problem = "a value inside the module is used outside it"
    else:
        problem = parts.problem()
    if problem is not None:
        return Rejection(TECHNIQUE, block_name(nodes), problem)
    return Module(block_name(nodes), nodes, x, parts)


def find_modules(gm: fx.GraphModule) -> tuple[list[Module], list[Rejection]]:
    """Every ResNeXt module, recognised by the shape of its graph (not by attribute names), and the
    bottleneck-like residual adds that are not one, with the reason."""
    modules, rejected = [], []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        found = _match(gm, node, order)
        if isinstance(found, Module):
            modules.append(found)
        elif isinstance(found, Rejection):
            rejected.append(found)
    return modules, rejected


def find_chains(modules: list[Module]) -> list[list[Module]]:
    """Runs of two or more modules, each reading the previous one's output; a module with a
    projection shortcut starts a run of its own."""
    by_input = {m.input: m for m in modules}
    outputs = {m.nodes[-1] for m in modules}
    chains = []
    for module in modules:
        if module.input in outputs and not module.has_projection:
            continue  # not a chain start
        chain = [module]
        while chain[-1].nodes[-1] in by_input and not by_input[chain[-1].nodes[-1]].has_projection:
            chain.append(by_input[chain[-1].nodes[-1]])
        if len(chain) >= 2:
            chains.append(chain)
    return chains
