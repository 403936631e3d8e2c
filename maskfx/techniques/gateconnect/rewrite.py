"""GateConnect's pass: every chain of ResNeXt modules (``recognise``) becomes ``BranchedBottleneck``s
with ``BranchGates`` between them; after the last module the branches are averaged and rectified,
which is the last original module's output. What it built is recorded per chain
(``ChainRecord``), for ``collapse`` and ``structure`` to read.
"""
from __future__ import annotations

import warnings

import torch
import torch.fx as fx

from maskfx.graph.marks import RESNEXT
from maskfx.graph.surgery import fresh_name
from maskfx.state import Rejection, Rewrite, Site
from maskfx.techniques.gateconnect.config import TECHNIQUE, GateConnectConfig
from maskfx.techniques.gateconnect.layers import BranchedBottleneck, BranchGates
from maskfx.techniques.gateconnect.recognise import Module, find_chains, find_modules
from maskfx.techniques.gateconnect.record import ChainRecord, ModuleRecord

CONFIG = GateConnectConfig
LAYERS = (BranchGates,)


def _call(gm: fx.GraphModule, base: str, module: torch.nn.Module, after: fx.Node, argument: fx.Node) -> fx.Node:
    """A call of ``module``, added to ``gm`` under a fresh name from ``base``, right after ``after``."""
    name = fresh_name(gm, base)
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(after):
        return gm.graph.call_module(name, (argument,))


def _rewrite_chain(gm: fx.GraphModule, chain: list[Module], fan_in: int) -> tuple[ChainRecord, list[Site]]:
    """Replace one chain's modules by branched ones with gates between them; its record and sites."""
    # Read the input from the graph now: rewriting the chain before may have replaced it.
    inside = set(chain[0].nodes)
    previous = next(i for n in chain[0].nodes for i in n.all_input_nodes if i not in inside)
    records, sites = [], []
    for i, module in enumerate(chain):
        # Read through gates (K of its C outputs), but the last module, which the chain's end averages whole.
        branches = module.parts.conv2.groups
        read_by = min(fan_in, branches) if i < len(chain) - 1 else None
        branched = BranchedBottleneck(module.parts, shared_input=i == 0, read_by=read_by)
        key = module.path.replace(".", "_")
        gates = None
        if i > 0:
            sources = records[-1]
            layer = BranchGates(branched.branches, gm.get_submodule(sources.module).branches, fan_in)
            gates = _call(gm, f"gateconnect_gates_{key}", layer.to(module.parts.conv1.weight.device),
                          module.nodes[-1], previous)
            sites.append(Site(TECHNIQUE, gates.target, module.path,
                              f"each of {branched.branches} branches reads K={layer.fan_in} of the "
                              f"{layer.mask.shape[1]} branches of {sources.path}"))
            previous = gates
        previous = _call(gm, f"gateconnect_{key}", branched, previous, previous)
        records.append(ModuleRecord(module.path, previous.target, previous.name,
                                    None if gates is None else gates.target, None if gates is None else gates.name))
    with gm.graph.inserting_after(previous):
        averaged = gm.graph.call_method("mean", (previous, 1))
    with gm.graph.inserting_after(averaged):
        output = gm.graph.call_function(torch.relu, (averaged,))
    chain[-1].nodes[-1].replace_all_uses_with(output)
    for module in reversed(chain):
        for node in reversed(module.nodes):
            gm.graph.erase_node(node)
    return ChainRecord(tuple(records), averaged.name, output.name), sites


def rewrite(gm: fx.GraphModule, config: GateConnectConfig, example_inputs: tuple | None) -> Rewrite:
    modules, rejected = find_modules(gm)
    for module in modules:  # ResNeXt modules get branch connectivity or none, never block connectivity
        for node in module.nodes:
            node.meta[RESNEXT] = True
    chains = find_chains(modules)
    in_chains = {id(m) for chain in chains for m in chain}
    rejected += [Rejection(TECHNIQUE, m.path, "a ResNeXt module in no chain of two or more (its stage has one module "
                           "after the projection)") for m in modules if id(m) not in in_chains]
    records, sites = [], []
    for chain in chains:
        record, chain_sites = _rewrite_chain(gm, chain, config.fan_in)
        records.append(record)
        sites += chain_sites
    notes = [f"gateconnect: {len(chains)} chain(s) of {[len(ch) for ch in chains]} ResNeXt modules"]
    if not chains:
        notes = ["gateconnect not applied: no chain of two or more ResNeXt modules; maskfx.summary(net) lists "
                 "each candidate and why it was rejected"]
        warnings.warn(notes[0], stacklevel=3)
    return Rewrite(sites, notes, rejected, tuple(records) or None)
