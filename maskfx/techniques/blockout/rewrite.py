"""Blockout pass: the classifier head's Linear layers become Blockout layers sharing cluster draws.

The head is the chain that ends the model: Linear layers with the elementwise activations and
Dropouts between them, back to the first node that is none of those (a flatten, a pooling, a
norm). Collapse ``"expected"`` gives one ``nn.Linear`` per layer (eq. 5); ``"prune"`` thresholds
the probabilities into hard clusters, drops hidden nodes in no cluster and unused input features,
and computes a layer block by block where that needs fewer multiply-adds.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from maskfx.graph.marks import claim
from maskfx.graph.surgery import bypass, fresh_name, insert_module_after, is_dropout, is_elementwise, \
    module_of, replace_with_module
from maskfx.state import Rejection, Rewrite, Site, get_state
from maskfx.techniques.blockout.config import BlockoutConfig
from maskfx.techniques.blockout.layers import MASK_SCALE, BlockoutClusters, BlockoutLinear, BlockSparseLinear, \
    cluster_mask

TECHNIQUE = "blockout"
CONFIG = BlockoutConfig
LAYERS = (BlockoutClusters, BlockoutLinear)


def _is_linear(gm: fx.GraphModule, node: fx.Node) -> bool:
    return type(module_of(gm, node)) is nn.Linear


def _describe(gm: fx.GraphModule, node) -> str:
    if not isinstance(node, fx.Node):
        return f"a {type(node).__name__} of outputs"
    module = module_of(gm, node)
    if module is not None:
        return f"'{node.target}' ({type(module).__name__})"
    return f"{getattr(node.target, '__name__', node.target)} ({node.op})"


def find_head(gm: fx.GraphModule) -> list[fx.Node] | str:
    """The head chain in graph order, or why there is none."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    node, chain = output.args[0], []
    # (logits, aux, ...) in train mode, as a tuple or a namedtuple call: the main output comes first
    if isinstance(node, fx.Node) and node.op == "call_function" and isinstance(node.target, type) \
            and issubclass(node.target, tuple) and node.args:
        node = node.args[0]
    elif isinstance(node, (tuple, list)) and node:
        node = node[0]
    while (isinstance(node, fx.Node) and len(node.users) == 1
           and (_is_linear(gm, node) or is_elementwise(gm, node) or is_dropout(gm, node))):
        chain.append(node)
        node = node.args[0]
    chain.reverse()
    while chain and is_elementwise(gm, chain[0]):  # activations before the first Linear are the backbone's
        chain.pop(0)
    if not any(_is_linear(gm, n) for n in chain):
        return f"no Linear classifier head: the model ends in {_describe(gm, node)}"
    return chain


def _linear_macs(linear: nn.Linear) -> int:
    return linear.in_features * linear.out_features


def _add_hidden_layers(gm: fx.GraphModule, first: fx.Node, hidden: tuple[int, ...]) -> None:
    """Insert ReLU hidden layers before the first head Linear, which is re-made to fit them."""
    old = gm.get_submodule(first.target)
    sizes = (old.in_features, *hidden)
    like = dict(device=old.weight.device, dtype=old.weight.dtype)
    x = first.args[0]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        x = insert_module_after(gm, x, fresh_name(gm, f"blockout_hidden{i}"), nn.Linear(a, b, **like))
        x = insert_module_after(gm, x, fresh_name(gm, f"blockout_hidden{i}_relu"), nn.ReLU())
    classifier = nn.Linear(hidden[-1], old.out_features, bias=old.bias is not None, **like)
    replace_with_module(gm, first, fresh_name(gm, "blockout_classifier"), classifier, (x,))


def rewrite(gm: fx.GraphModule, config: BlockoutConfig, example_inputs: tuple | None) -> Rewrite:
    chain = find_head(gm)
    if isinstance(chain, str):
        message = f"blockout not applied: {chain}"
        warnings.warn(message, stacklevel=3)
        return Rewrite([], [message], [Rejection(TECHNIQUE, "classifier head", chain)])
    linears = [n for n in chain if _is_linear(gm, n)]
    originals = [gm.get_submodule(n.target) for n in linears]
    note = (f"blockout head: {len(linears)} Linear layers, {sum(p.numel() for m in originals for p in m.parameters()):,} "
            f"parameters, {sum(map(_linear_macs, originals)):,} MACs/sample before transform")
    if not config.keep_dropout:
        for node in [n for n in chain if is_dropout(gm, n)]:
            bypass(gm, node)
            chain.remove(node)
    if config.hidden:
        _add_hidden_layers(gm, linears[0], config.hidden)
    chain = find_head(gm)  # now with the hidden layers and without the Dropouts
    claim(chain, TECHNIQUE)  # other passes leave the head to Blockout
    linears = [n for n in chain if _is_linear(gm, n)]
    modules = [gm.get_submodule(n.target) for n in linears]
    sizes = [modules[0].in_features] + [m.out_features for m in modules]
    clusters = BlockoutClusters(sizes, config.clusters, config.variant, config.prune_threshold, config.min_clusters,
                                config.init_spread, config.seed, config.estimator).to(modules[0].weight.device)
    p = [q.detach() for q in clusters.probabilities()]
    clusters_name = fresh_name(gm, "blockout_clusters")
    gm.add_submodule(clusters_name, clusters)
    with gm.graph.inserting_before(linears[0]):
        draws = gm.graph.call_module(clusters_name, ())
        c = [gm.graph.call_function(operator.getitem, (draws, j)) for j in range(len(sizes))]
    sites = []
    for j, (node, linear) in enumerate(zip(linears, modules)):
        layer = BlockoutLinear.from_linear(linear, config.clusters, p[j], p[j + 1])
        name, location = fresh_name(gm, f"blockout_{node.name}"), str(node.target)
        replace_with_module(gm, node, name, layer, (node.args[0], c[j], c[j + 1]))
        sites.append(Site(TECHNIQUE, name, location, f"{linear.in_features}->{linear.out_features}, k={config.clusters}"))
    head = HeadRecord(clusters_name, tuple(site.module for site in sites), tuple(site.location for site in sites))
    return Rewrite(sites, [note], record=(head,))


@dataclass(frozen=True)
class HeadRecord:
    """A head as the rewrite left it, for the stages after it: its clusters module and its
    ``BlockoutLinear`` modules in order, with the layers they replaced. Modules are named, not
    held, so the record holds in every copy of the graph (the eval graph ``collapse`` lowers)."""

    clusters: str
    layers: tuple[str, ...]
    locations: tuple[str, ...]


Head = tuple[HeadRecord, fx.Node, BlockoutClusters, list[tuple[fx.Node, BlockoutLinear]]]


def heads_of(gm: fx.GraphModule) -> list[Head]:
    """Each recorded head still in ``gm``: its record, the clusters' call and module, and the
    layers' calls and modules in order (none once collapsed)."""
    calls = {node.target: node for node in gm.graph.nodes if node.op == "call_module"}
    return [(head, calls[head.clusters], gm.get_submodule(head.clusters),
             [(calls[name], gm.get_submodule(name)) for name in head.layers])
            for head in get_state(gm).records.get(TECHNIQUE, ()) if head.clusters in calls]


def _members(c: torch.Tensor) -> torch.Tensor:
    """Indices of the nodes in at least one cluster, on the clusters' device."""
    return torch.nonzero(c.sum(1)).flatten()


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm().clamp(min=1e-12)).item()


def _gather_node(gm: fx.GraphModule, x: fx.Node, index: torch.Tensor, name: str) -> fx.Node:
    """``x.index_select(-1, index)`` with ``index`` kept as a buffer of ``gm``."""
    gm.register_buffer(name, index)
    with gm.graph.inserting_after(x):
        index_node = gm.graph.get_attr(name)
    with gm.graph.inserting_after(index_node):
        return gm.graph.call_method("index_select", (x, -1, index_node))


def _pruned_layer(layer: BlockoutLinear, c_in: torch.Tensor, c_out: torch.Tensor, rows: torch.Tensor,
                  block_cols: torch.Tensor, dense_cols: torch.Tensor, config: BlockoutConfig) -> tuple[nn.Module, int]:
    """The hard-clustered layer on the kept ``rows``: block by block (``block_cols`` index its
    input) when the blocks need at most ``block_ratio`` of the dense multiply-adds and the dense
    layer is large enough (``block_min_macs``) for that to pay, else dense (``dense_cols`` index
    its input). Returns the module and its MACs per sample."""
    k, weight = layer.clusters, layer.weight[rows]
    bias = layer.bias[rows] if layer.bias is not None else None
    blocks = []
    for l in range(k):
        out_index = torch.nonzero(c_out[rows, l]).flatten()
        in_index = torch.nonzero(c_in[block_cols, l]).flatten()
        if len(out_index) and len(in_index):
            blocks.append((in_index, out_index, weight[out_index][:, block_cols[in_index]] * (MASK_SCALE / k)))
    block_macs = sum(w.numel() for *_, w in blocks)
    dense = weight[:, dense_cols] * cluster_mask(c_out[rows], c_in[dense_cols], k)
    if dense.numel() >= config.block_min_macs and block_macs <= config.block_ratio * dense.numel():
        return BlockSparseLinear(blocks, bias, len(block_cols), len(rows)), block_macs
    linear = nn.Linear(len(dense_cols), len(rows), bias=bias is not None).to(dense.device, dense.dtype)
    linear.weight.copy_(dense)
    if bias is not None:
        linear.bias.copy_(bias)
    return linear, dense.numel()


def _expected_linear(layer: BlockoutLinear, p_in: torch.Tensor, p_out: torch.Tensor) -> nn.Linear:
    """Eq. 5: one ordinary Linear with the expected weight ``(1/k) W~ (.) P_out P_in^T``."""
    weight = layer.masked_weight(p_in, p_out)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    linear = linear.to(weight.device, weight.dtype)
    linear.weight.copy_(weight)
    if layer.bias is not None:
        linear.bias.copy_(layer.bias)
    return linear


def _count(modules: list[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@torch.no_grad()
def freeze(gm: fx.GraphModule) -> None:
    """Fix every head's clusters at their hard assignment (``BlockoutClusters.freeze``), first
    folding the expected mask into the weights that stay: a kept weight is scaled by its soft /
    hard mask ratio, so the eval function changes only by the connections the hard clusters drop
    (without it, clusters that have not separated from 0.5 would also rescale every kept weight
    by their random count of shared clusters; measured on a trained resnet18's head on the digits:
    accuracy right after freeze 75% with the fold, 56% without)."""
    for _, _, clusters, layers in heads_of(gm):
        if clusters.is_frozen:
            continue
        p, c = [q.detach() for q in clusters.probabilities()], clusters.hard()
        for j, (_, layer) in enumerate(layers):
            ratio = cluster_mask(p[j + 1], p[j], layer.clusters)
            ratio.div_(cluster_mask(c[j + 1], c[j], layer.clusters)).nan_to_num_(nan=1.0, posinf=1.0)
            layer.weight.mul_(ratio.to(layer.weight.dtype))  # where nothing is kept: unchanged, masked for good
        clusters.freeze()


@dataclass(frozen=True)
class HeadLowered:
    """One Blockout head as collapse left it. ``weight_changes``: per layer, how far pruning's hard
    clusters moved the weights from the eval function's expected ones (relative Frobenius norm;
    empty under "expected", all zero once frozen)."""

    mode: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    weight_changes: tuple[float, ...] = ()

    @property
    def exact(self) -> bool:
        """The collapsed head computes the eval function (the clusters were hard, or "expected")."""
        return max(self.weight_changes, default=0.0) <= 1e-6


@dataclass(frozen=True)
class BlockoutLowered:
    """Every head collapse lowered, and the cluster thresholds pruning used."""

    heads: tuple[HeadLowered, ...]
    prune_threshold: float
    min_clusters: int

    def notes(self) -> list[str]:
        notes = []
        for head in self.heads:
            note = (f"blockout collapse ({head.mode}): head {head.params_before:,} -> {head.params_after:,} "
                    f"parameters, {head.macs_before:,} -> {head.macs_after:,} MACs/sample")
            if head.mode == "prune" and not head.exact:
                note += (f"; not the eval function: hard clusters (P > {self.prune_threshold}, at least "
                         f"{self.min_clusters} per node) change the weights by "
                         f"{', '.join(f'{x:.1%}' for x in head.weight_changes)} (relative Frobenius norm, "
                         f"per layer); freeze and fine-tune first to prune exactly")
            elif head.mode == "prune":
                note += "; exact: the clusters are hard (frozen), so this is the eval function"
            notes.append(note)
        return notes


@torch.no_grad()
def collapse(gm: fx.GraphModule, mode: str, config: BlockoutConfig) -> BlockoutLowered:
    heads = []
    for _, draws, clusters, layers in heads_of(gm):
        p = [q.detach() for q in clusters.probabilities()]
        c = clusters.hard()
        new_modules, macs_after, changes, kept = [], 0, [], None
        for j, (node, layer) in enumerate(layers):
            x = node.args[0]
            if mode == "expected":
                module, macs = _expected_linear(layer, p[j], p[j + 1]), layer.in_features * layer.out_features
            else:
                # Hidden nodes in no cluster go; unused input features are skipped; every output stays.
                # Every index lives on the model's device, as the clusters do (they are indexed together).
                device, last = layer.weight.device, j == len(layers) - 1
                rows = torch.arange(layer.out_features, device=device) if last else _members(c[j + 1])
                if kept is None:
                    block_cols, dense_cols = torch.arange(layer.in_features, device=device), _members(c[j])
                else:
                    block_cols = dense_cols = kept
                module, macs = _pruned_layer(layer, c[j], c[j + 1], rows, block_cols, dense_cols, config)
                if kept is None and isinstance(module, nn.Linear) and len(dense_cols) < layer.in_features:
                    x = _gather_node(gm, x, dense_cols, fresh_name(gm, f"{node.name}_inputs"))
                kept = rows  # original indices of the nodes the next layer reads, in order
                changes.append(_relative_change(layer.masked_weight(p[j], p[j + 1]),
                                                layer.masked_weight(c[j], c[j + 1])))
            replace_with_module(gm, node, fresh_name(gm, node.name), module, (x,))
            new_modules.append(module)
            macs_after += macs
        macs_before = sum(m.in_features * m.out_features for _, m in layers)
        heads.append(HeadLowered(mode, _count([m for _, m in layers]), _count(new_modules), macs_before, macs_after,
                                 tuple(changes)))
        for item in list(draws.users):
            gm.graph.erase_node(item)
        gm.graph.erase_node(draws)
    return BlockoutLowered(tuple(heads), config.prune_threshold, config.min_clusters)
