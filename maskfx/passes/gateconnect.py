"""GateConnect pass: chains of ResNeXt modules get learned branch connectivity; collapse fixes
the gates and (``"prune"``) removes the branches no gate reads, so the grouped convs shrink.

A chain is a run of torchvision-style ResNeXt bottlenecks, each reading the previous one's
output. It starts at a module with a projection shortcut (that module reads the summed input:
a per-branch projection would cost C times its multiply-adds) or at the first module; after its
last module the branches are summed and rectified as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from maskfx.config import MaskConnectConfig
from maskfx.nn import BranchedBottleneck, BranchGates, BranchSum
from maskfx.nn.gateconnect import is_resnext_bottleneck
from maskfx.passes.graph import finish, fresh_name, module_of, nodes_calling
from maskfx.passes.graph import ADD_FUNCTIONS, ADD_METHODS
from maskfx.marks import RESNEXT
from maskfx.state import Site

TECHNIQUE = "gateconnect"
SEQUENCE = ["conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"]


@dataclass
class Module:
    path: str
    nodes: list[fx.Node]
    input: fx.Node
    has_projection: bool


def _owner(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """The innermost ResNeXt bottleneck (by module path) whose forward created ``node``."""
    for path, _ in reversed(list((node.meta.get("nn_module_stack") or {}).values())):
        try:
            if is_resnext_bottleneck(gm.get_submodule(path)):
                return path
        except AttributeError:
            continue
    return None


def _matches_bottleneck(module: Module) -> bool:
    """The calls are exactly torchvision's Bottleneck.forward, so the rewrite keeps its function."""
    calls = [str(n.target)[len(module.path) + 1:] for n in module.nodes if n.op == "call_module"]
    adds = [n for n in module.nodes if (n.op == "call_function" and n.target in ADD_FUNCTIONS)
            or (n.op == "call_method" and n.target in ADD_METHODS)]
    projection = ["downsample.0", "downsample.1"] if module.has_projection else []
    return (len(adds) == 1 and len(module.nodes) == len(calls) + 1 and calls == SEQUENCE + projection + ["relu"]
            and module.nodes[-1].args[0] is adds[0])


def find_modules(gm: fx.GraphModule) -> list[Module]:
    groups: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        path = _owner(node, gm)
        if path is not None:
            groups.setdefault(path, []).append(node)
    modules = []
    for path, nodes in groups.items():
        inside = set(nodes)
        inputs = {i for n in nodes for i in n.all_input_nodes if i not in inside}
        escaping = [n for n in nodes[:-1] if any(u not in inside for u in n.users)]
        if len(inputs) != 1 or escaping:
            continue
        module = Module(path, nodes, inputs.pop(), hasattr(gm.get_submodule(path), "downsample"))
        if _matches_bottleneck(module):
            modules.append(module)
    return modules


def find_chains(gm: fx.GraphModule) -> list[list[Module]]:
    modules = find_modules(gm)
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


def rewrite(gm: fx.GraphModule, config: MaskConnectConfig) -> list[Site]:
    sites = []
    for module in find_modules(gm):  # ResNeXt modules get branch connectivity or none, never block connectivity
        for node in module.nodes:
            node.meta[RESNEXT] = True
    for chain in find_chains(gm):
        # Read the input from the graph now: rewriting the chain before may have replaced it.
        inside = set(chain[0].nodes)
        previous = next(i for n in chain[0].nodes for i in n.all_input_nodes if i not in inside)
        sources = 0
        for i, module in enumerate(chain):
            block = gm.get_submodule(module.path)
            branched = BranchedBottleneck(block, shared_input=i == 0)
            c = branched.branches
            with gm.graph.inserting_after(module.nodes[-1]):
                if i > 0:
                    gates = BranchGates(c, sources, config.fan_in)
                    gates_name = fresh_name(gm, f"gateconnect_gates_{module.path.replace('.', '_')}")
                    gm.add_submodule(gates_name, gates.to(block.conv1.weight.device))
                    previous = gm.graph.call_module(gates_name, (previous,))
                    sites.append(Site(TECHNIQUE, gates_name, module.path,
                                      f"each of {c} branches reads K={gates.fan_in} of the {sources} branches of {chain[i - 1].path}"))
            with gm.graph.inserting_after(previous):
                name = fresh_name(gm, f"gateconnect_{module.path.replace('.', '_')}")
                gm.add_submodule(name, branched)
                previous = gm.graph.call_module(name, (previous,))
            sources = c
        with gm.graph.inserting_after(previous):
            summed = gm.graph.call_method("sum", (previous, 1))
        with gm.graph.inserting_after(summed):
            output = gm.graph.call_function(torch.relu, (summed,))
        chain[-1].nodes[-1].replace_all_uses_with(output)
        for module in reversed(chain):
            for node in reversed(module.nodes):
                gm.graph.erase_node(node)
    finish(gm)
    return sites


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


def collapse(gm: fx.GraphModule, mode: str) -> list[str]:
    """Gates become fixed gathers (``BranchSum``); ``"prune"`` also drops the branches nobody reads."""
    notes = []
    for chain in _gate_chains(gm):
        gates = [gm.get_submodule(g.target).active() if g is not None else None for g, _ in chain]
        modules = [gm.get_submodule(b.target) for _, b in chain]
        used = [list(range(m.branches)) for m in modules]
        if mode == "prune":  # from the last module back: a branch is used if a used branch reads it
            for i in range(len(chain) - 2, -1, -1):
                readers = gates[i + 1][used[i + 1]]
                used[i] = torch.nonzero(readers.sum(0)).flatten().tolist()
        counts = [f"{b.target}: {len(u)}/{m.branches}" for (_, b), m, u in zip(chain, modules, used)]
        for i, ((gate_node, _), module) in enumerate(zip(chain, modules)):
            if len(used[i]) < module.branches:
                module.keep_branches(used[i])
            if gate_node is None:
                continue
            g = gates[i][used[i]][:, used[i - 1]]  # rows: kept branches; columns: kept sources
            sources = torch.stack([torch.nonzero(row).flatten() for row in g])
            name = fresh_name(gm, f"{gate_node.target}_sum")
            gm.add_submodule(name, BranchSum(sources))
            with gm.graph.inserting_before(gate_node):
                fixed = gm.graph.call_module(name, gate_node.args)
            gate_node.replace_all_uses_with(fixed)
            gm.graph.erase_node(gate_node)
        notes.append(f"gateconnect collapse ({mode}): active branches {', '.join(counts)}")
    finish(gm)
    return notes
