"""MaskConnect pass: residual chains become learned K-of-N connections; collapse fixes them and
removes the blocks that no later block reads.

A residual block is found by its merge: an add of two same-shaped tensors (no broadcasting) that
both descend from one node ``x``, the block input (the latest common ancestor), optionally
followed by an elementwise activation, whose output ``y`` is the block output. Blocks where each
input is the previous block's output form a chain; block ``j`` of a chain then reads the masked
sum of the chain input and every earlier block output.
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass

import torch
import torch.fx as fx

from maskfx.errors import UserError
from maskfx.graph.marks import BLOCK, RESNEXT, block_name
from maskfx.graph.surgery import add_operands, freeze_modules, fresh_name, is_elementwise, model_device, module_of, \
    nodes_calling, propagate_shapes, shape_of
from maskfx.layers.adapt import adapt, pad_channels, subsample
from maskfx.state import Rejection, Rewrite, Site
from maskfx.techniques.maskconnect.config import MaskConnectConfig
from maskfx.techniques.maskconnect.layers import MaskedConnection

TECHNIQUE = "maskconnect"
CONFIG = MaskConnectConfig
LAYERS = (MaskedConnection,)


@dataclass
class Block:
    input: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    name: str


def find_residual_blocks(gm: fx.GraphModule) -> tuple[list[Block], list[Rejection]]:
    """Every residual block, and the adds of two tensors that are not one, with the reason."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    ancestors: dict[fx.Node, set[fx.Node]] = {}
    for node in gm.graph.nodes:
        ancestors[node] = {node}.union(*(ancestors[i] for i in node.all_input_nodes))
    blocks, rejected = [], []
    for node in gm.graph.nodes:
        operands = add_operands(node)
        if operands is None or RESNEXT in node.meta:
            continue
        shapes = [shape_of(a) for a in operands]
        common = ancestors[operands[0]] & ancestors[operands[1]]
        reason = ("operand shapes unknown" if None in shapes else
                  f"broadcasting add of shapes {tuple(shapes[0])} and {tuple(shapes[1])}" if shapes[0] != shapes[1] else
                  "the operands share no input (not a block input and its transform)" if not common else None)
        if reason is not None:
            rejected.append(Rejection(TECHNIQUE, block_name([node]) + f" ({node.name})", reason))
            continue
        x = max(common, key=order.__getitem__)
        users = list(node.users)
        y = users[0] if len(users) == 1 and is_elementwise(gm, users[0]) else node
        body = [n for n in gm.graph.nodes if order[x] < order[n] <= order[y] and x in ancestors[n]
                and n in ancestors[y]]
        blocks.append(Block(x, y, body, block_name(body)))
    return blocks, rejected


def find_chains(blocks: list[Block]) -> tuple[list[list[Block]], list[Rejection]]:
    """Maximal sequences of residual blocks, each reading the previous one's output; >= 2 blocks.
    Blocks in no such sequence are rejected."""
    by_input = {b.input: b for b in blocks}
    starts = [b for b in blocks if b.input not in {c.output for c in blocks}]
    chains, rejected = [], []
    for block in starts:
        chain = [block]
        while chain[-1].output in by_input:
            chain.append(by_input[chain[-1].output])
        if len(chain) >= 2:
            chains.append(chain)
        else:
            rejected.append(Rejection(TECHNIQUE, block.name, "a residual block in no chain of two or more "
                                      "(no next block reads its output)"))
    return chains, rejected


def _adapter(source: torch.Size, target: torch.Size) -> tuple[int, tuple[int, ...]] | None:
    """``(channels, strides)`` that turn a ``source``-shaped tensor into ``target``'s shape, or None."""
    if len(source) != len(target) or len(source) < 2 or source[1] > target[1]:
        return None
    strides = []
    for s, t in zip(source[2:], target[2:]):
        stride = math.ceil(s / t) if t else 0
        if t == 0 or stride < 1 or len(range(0, s, stride)) != t:
            return None
        strides.append(stride)
    return int(target[1]), tuple(strides)


def rewrite(gm: fx.GraphModule, config: MaskConnectConfig, example_inputs: tuple | None) -> Rewrite:
    if example_inputs is None:
        raise UserError("example_inputs: maskconnect needs example inputs, e.g. example_inputs=(x,), "
                        "to see the shapes of block outputs")
    propagate_shapes(gm, example_inputs)
    blocks, rejected_adds = find_residual_blocks(gm)
    chains, rejected_blocks = find_chains(blocks)
    rejected = rejected_adds + rejected_blocks
    sites = []
    if not chains:
        message = ("maskconnect not applied: no chain of two or more residual blocks (same-shaped add of a "
                   "block input and its transform); maskfx.summary(net) lists each candidate and why it was rejected")
        warnings.warn(message, stacklevel=3)
        return Rewrite([], [message], rejected)
    for c, chain in enumerate(chains):
        outputs = [chain[0].input] + [b.output for b in chain]  # candidate k = output of block k (0: chain input)
        names = [f"input of {chain[0].name}"] + [b.name for b in chain]
        for j, block in enumerate(chain):
            for node in block.nodes:
                node.meta[BLOCK] = (c, j)
            if j == 0:
                continue  # one candidate: nothing to learn
            target = shape_of(block.input)
            usable = [(k, _adapter(shape_of(outputs[k]), target)) for k in range(j + 1)]
            usable = [(k, a) for k, a in usable if a is not None]
            layer = MaskedConnection([a for _, a in usable], config.fan_in, config.init, config.sampling).to(model_device(gm))
            name = fresh_name(gm, f"maskconnect_{block.name.replace('.', '_')}")
            gm.add_submodule(name, layer)
            with gm.graph.inserting_after(block.input):
                connection = gm.graph.call_module(name, tuple(outputs[k] for k, _ in usable))
            connection.meta[BLOCK] = (c, j)
            connection.meta["tensor_meta"] = block.input.meta.get("tensor_meta")
            block.input.replace_all_uses_with(connection, delete_user_cb=lambda user: user is not connection
                                              and user.meta.get(BLOCK) == (c, j))
            sites.append(Site(TECHNIQUE, name, block.name,
                              f"K={layer.fan_in} of [{', '.join(names[k] for k, _ in usable)}]"))
    return Rewrite(sites, [f"maskconnect: {len(chains)} residual chain(s) of {[len(ch) for ch in chains]} blocks"],
                   rejected)


def _static_sum(gm: fx.GraphModule, node: fx.Node, layer: MaskedConnection) -> fx.Node:
    """The active candidates of ``node``, adapted and added, as graph nodes inserted before ``node``.

    Narrowest first: candidates of one width are plain adds, and each partial sum is zero-padded
    once to the next width present, so a deployed graph pads per distinct width rather than every
    narrow candidate to the full width; a subsampled candidate is one pooling node. A candidate
    whose shape is unknown is adapted by ``adapt`` and taken as full width."""
    channels = layer.adapters[0][0]
    by_width: dict[int, list[fx.Node]] = {}
    with gm.graph.inserting_before(node):
        for k in torch.nonzero(layer.active()).flatten().tolist():
            term, (_, strides) = node.args[k], layer.adapters[k]
            shape = shape_of(term)
            if shape is None:
                term, width = gm.graph.call_function(adapt, (term, channels, strides)), channels
            else:
                width = shape[1]
                if any(s != 1 for s in strides):
                    term = gm.graph.call_function(subsample, (term, strides))
            by_width.setdefault(width, []).append(term)
        total = None
        for width in sorted(by_width):
            if total is not None:
                total = gm.graph.call_function(pad_channels, (total, width))
            for term in by_width[width]:
                total = term if total is None else gm.graph.call_function(operator.add, (total, term))
        if max(by_width) < channels:
            total = gm.graph.call_function(pad_channels, (total, channels))
    return total


def block_names(gm: fx.GraphModule) -> dict[tuple[int, int], str]:
    """Each residual block's name, by its ``BLOCK`` mark."""
    members: dict[tuple[int, int], list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if BLOCK in node.meta and not isinstance(module_of(gm, node), MaskedConnection):
            members.setdefault(node.meta[BLOCK], []).append(node)
    return {key: block_name(nodes) for key, nodes in members.items()}


def freeze(gm: fx.GraphModule) -> None:
    """Fix every connection at what eval reads now (``MaskedConnection.freeze``: the top K, or
    with ``"top-k"`` sampling the selected K after the switch margin)."""
    freeze_modules(gm, LAYERS)


@dataclass(frozen=True)
class MaskConnectLowered:
    """The connectivity collapse fixed (each block with the inputs it reads, in graph order) and the
    blocks it removed because nothing read them."""

    connections: tuple[tuple[str, tuple[str, ...]], ...]
    removed_blocks: tuple[str, ...]

    def notes(self) -> list[str]:
        if not self.connections:
            return []
        wiring = "; ".join(f"{block} <- {', '.join(sources)}" for block, sources in self.connections)
        return [f"maskconnect collapse: connections {wiring}; removed {len(self.removed_blocks)} unused blocks: "
                f"{', '.join(self.removed_blocks) or 'none'}"]


def collapse(gm: fx.GraphModule, mode: str, config: MaskConnectConfig) -> MaskConnectLowered:
    """Both modes fix the top-K (or frozen) connectivity; blocks nobody reads are removed. A
    narrower candidate is read through a plain ``pad_channels``, exact on every backend; the
    rewrite that suits ONNX Runtime's CPU provider is applied by ``export_onnx``."""
    names = block_names(gm)
    connections = []
    for node, layer in list(nodes_calling(gm, MaskedConnection)):
        sources = tuple(names.get(a.meta.get(BLOCK), "chain input")
                        for a, on in zip(node.args, layer.active().tolist()) if on)
        connections.append((names[node.meta[BLOCK]], sources))
        summed = _static_sum(gm, node, layer)
        node.replace_all_uses_with(summed)
        gm.graph.erase_node(node)
    # Remove dead blocks: repeat, since a removed block's input sum frees earlier blocks.
    removed = True
    while removed:
        removed = False
        for node in reversed(list(gm.graph.nodes)):
            if BLOCK in node.meta and not node.users and node.op != "output":
                gm.graph.erase_node(node)
                removed = True
    kept = {n.meta[BLOCK] for n in gm.graph.nodes if BLOCK in n.meta}
    gone = tuple(name for key, name in names.items() if key not in kept)
    return MaskConnectLowered(tuple(connections), gone)
