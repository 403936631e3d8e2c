"""GateConnect pass: chains of ResNeXt modules get learned branch connectivity; collapse fixes
the gates, lowers each chain to plain convolutions (``deploy_chain``) and (``"prune"``) removes
the branches no gate reads.

A ResNeXt module is recognised by the shape of its graph, however its forward is written
(activation modules or functions, ``+`` or ``+=``, the shortcut on either side, ``nn.Identity``
placeholders): a residual add of 1x1 conv -> BN -> ReLU -> grouped conv -> BN -> ReLU -> 1x1 conv
-> BN and the input or a conv + BN projection of it, followed by a ReLU. A chain is a run of
such modules, each reading the previous one's output. It starts at a module with a projection shortcut (that module reads the summed input:
a per-branch projection would cost C times its multiply-adds) or at the first module; after its
last module the branches are summed and rectified as before.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.fx as fx
from torch import nn

from maskfx.graph.marks import RESNEXT, block_name
from maskfx.graph.surgery import add_operands, ancestors, freeze_modules, fresh_name, is_relu, module_of, nodes_calling
from maskfx.state import Rejection, Rewrite, Site
from maskfx.techniques.gateconnect.config import GateConnectConfig
from maskfx.techniques.gateconnect.layers import BottleneckParts, BranchedBottleneck, BranchGates, deploy_chain

TECHNIQUE = "gateconnect"
CONFIG = GateConnectConfig
LAYERS = (BranchGates,)
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


def rewrite(gm: fx.GraphModule, config: GateConnectConfig, example_inputs: tuple | None) -> Rewrite:
    sites = []
    modules, rejected = find_modules(gm)
    for module in modules:  # ResNeXt modules get branch connectivity or none, never block connectivity
        for node in module.nodes:
            node.meta[RESNEXT] = True
    chains = find_chains(modules)
    in_chains = {id(m) for chain in chains for m in chain}
    rejected += [Rejection(TECHNIQUE, m.path, "a ResNeXt module in no chain of two or more (its stage has one module "
                           "after the projection)") for m in modules if id(m) not in in_chains]
    for chain in chains:
        # Read the input from the graph now: rewriting the chain before may have replaced it.
        inside = set(chain[0].nodes)
        previous = next(i for n in chain[0].nodes for i in n.all_input_nodes if i not in inside)
        sources = 0
        for i, module in enumerate(chain):
            branched = BranchedBottleneck(module.parts, shared_input=i == 0)
            c = branched.branches
            with gm.graph.inserting_after(module.nodes[-1]):
                if i > 0:
                    gates = BranchGates(c, sources, config.fan_in)
                    gates_name = fresh_name(gm, f"gateconnect_gates_{module.path.replace('.', '_')}")
                    gm.add_submodule(gates_name, gates.to(module.parts.conv1.weight.device))
                    previous = gm.graph.call_module(gates_name, (previous,))
                    sites.append(Site(TECHNIQUE, gates_name, module.path,
                                      f"each of {c} branches reads K={gates.fan_in} of the {sources} branches of {chain[i - 1].path}"))
            with gm.graph.inserting_after(previous):
                name = fresh_name(gm, f"gateconnect_{module.path.replace('.', '_')}")
                gm.add_submodule(name, branched)
                previous = gm.graph.call_module(name, (previous,))
            sources = c
        with gm.graph.inserting_after(previous):
            averaged = gm.graph.call_method("mean", (previous, 1))
        with gm.graph.inserting_after(averaged):
            output = gm.graph.call_function(torch.relu, (averaged,))
        chain[-1].nodes[-1].replace_all_uses_with(output)
        for module in reversed(chain):
            for node in reversed(module.nodes):
                gm.graph.erase_node(node)
    notes = [f"gateconnect: {len(chains)} chain(s) of {[len(ch) for ch in chains]} ResNeXt modules"]
    if not chains:
        notes = ["gateconnect not applied: no chain of two or more ResNeXt modules; maskfx.summary(net) lists "
                 "each candidate and why it was rejected"]
        warnings.warn(notes[0], stacklevel=3)
    return Rewrite(sites, notes, rejected)


def _gate_chains(gm: fx.GraphModule) -> list[list[tuple[fx.Node | None, fx.Node]]]:
    """Per chain, ``(gates node or None, branched node)`` pairs in order."""
    chains = []
    for node, module in nodes_calling(gm, BranchedBottleneck):
        if not module.shared_input:
            continue
        chain = [(None, node)]
        while True:
            users = [u for u in chain[-1][1].users if isinstance(module_of(gm, u), BranchGates)]
            if len(users) != 1:
                break
            gates = users[0]
            chain.append((gates, next(iter(gates.users))))
        chains.append(chain)
    return chains


def _replace_chain(gm: fx.GraphModule, chain: list[tuple[fx.Node | None, fx.Node]], deployed: nn.Module) -> None:
    """Put ``deployed`` (chain input -> chain output) where the chain's gates, modules, mean and ReLU were."""
    name = fresh_name(gm, f"{chain[0][1].target}_chain")
    gm.add_submodule(name, deployed)
    with gm.graph.inserting_before(chain[0][1]):
        output = gm.graph.call_module(name, (chain[0][1].args[0],))
    end = next(iter(chain[-1][1].users))  # the chain's mean over branches, then its ReLU
    relu = next(iter(end.users))
    relu.replace_all_uses_with(output)
    for node in [relu, end] + [n for pair in reversed(chain) for n in reversed(pair) if n is not None]:
        gm.graph.erase_node(node)


def freeze(gm: fx.GraphModule) -> None:
    """Fix every connection at its current top K (``BranchGates.freeze``)."""
    freeze_modules(gm, LAYERS)


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


def collapse(gm: fx.GraphModule, mode: str, config: GateConnectConfig) -> GateConnectLowered:
    """Each chain becomes plain convolutions with its gates fixed (``deploy_chain``); ``"prune"``
    also drops the branches nobody reads. A chain whose gates are all on (K = C) becomes the
    original ResNeXt modules again."""
    lowered = []
    for chain in _gate_chains(gm):
        gates = [gm.get_submodule(g.target).active() if g is not None else None for g, _ in chain]
        modules = [gm.get_submodule(b.target) for _, b in chain]
        if all(g is None or bool(g.all()) for g in gates):
            lowered.append(ChainLowered(tuple((b.target, m.branches, m.branches) for (_, b), m in zip(chain, modules)),
                                        merged=True))
            _replace_chain(gm, chain, nn.Sequential(*(m.merged() for m in modules)))
            continue
        used = [list(range(m.branches)) for m in modules]
        if mode == "prune":  # from the last module back: a branch is used if a used branch reads it
            for i in range(len(chain) - 2, -1, -1):
                readers = gates[i + 1][used[i + 1]]
                used[i] = torch.nonzero(readers.sum(0)).flatten().tolist()
        lowered.append(ChainLowered(tuple((b.target, len(u), m.branches) for (_, b), m, u in zip(chain, modules, used)),
                                    merged=False))
        _replace_chain(gm, chain, deploy_chain(modules, gates, used))
    return GateConnectLowered(mode, tuple(lowered))
