"""Which channels can go, and which must go together: one pass over the traced graph.

Every tensor with channels gets a layout: the channel spaces it holds, in order (a concat holds
several), and the dim they are on. A convolution or linear layer starts a new space; elementwise
ops, pooling, BatchNorm and flattening a 1x1 map keep their input's; an add or product of two
tensors joins their spaces (a closed channel must be closed in both, or the sum would not be zero
there); depthwise and grouped convolutions map a space to itself, in units of one group. A space
is *fixed* (never gated) when something reads it that pruning could not follow or that would not
keep a closed channel at zero: a model output or input, an op this pass does not know, a
BatchNorm after a merge, a layer called twice. A space may close *entirely* when every layer
reading it ends a residual branch (``branch_ends``): a block's inside, whose closing removes it.

This is the project's own analysis rather than Torch-Pruning's ``DependencyGraph``: that one
couples a grouped convolution's input channels and not its groups (ResNeXt's branches would be
cut across), does not follow an fx-traced ``LayerNorm2d``, and says nothing about whether a gate
placed after the producers keeps the function exact, which is what collapse promises.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from maskfx.graph.surgery import ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ELEMENTWISE_MODULES, module_of, shape_of
from maskfx.techniques.channels.cost import Term
from maskfx.techniques.channels.layers import BranchEnd

PASS_MODULES = ELEMENTWISE_MODULES + (nn.Dropout, nn.Dropout2d, nn.Hardsigmoid, nn.MaxPool2d, nn.AvgPool2d,
                                      nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, StochasticDepth)
PASS_FUNCTIONS = ELEMENTWISE_FUNCTIONS | {F.hardtanh, F.hardsigmoid, F.dropout, F.max_pool2d, F.avg_pool2d,
                                          F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
PASS_METHODS = ELEMENTWISE_METHODS | {"contiguous", "clone"}
# Non-zero at zero: harmless only when their output multiplies a tensor of the same channels.
NONZERO_AT_ZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
NONZERO_AT_ZERO_FUNCTIONS = {torch.sigmoid, F.hardsigmoid}
JOIN_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul}
JOIN_METHODS = {"add", "add_", "mul", "mul_"}
PRODUCT = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
FLATTENS = {torch.flatten, "flatten", "view", "reshape", "squeeze", torch.squeeze, torch.reshape}
REDUCTIONS = {"mean", "sum", "amax", torch.mean, torch.sum, torch.amax}
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Segment:
    space: int
    size: int


@dataclass
class Layout:
    """The channel spaces a tensor holds along ``dim``; ``nonzero``: a closed channel is not zero
    in it (after a sigmoid) until a product with the space's own tensor makes it zero again."""

    segments: list[Segment]
    dim: int
    nonzero: bool = False

    @property
    def channels(self) -> int:
        return sum(s.size for s in self.segments)


def _weights_and_biases(layer: nn.Module) -> tuple[int, int]:
    bias = getattr(layer, "bias", None)
    return layer.weight.numel(), 0 if bias is None else bias.numel()


def _pairs(layout: Layout) -> list[tuple[int, int]]:
    """A layout's segments as a cost term's inputs: (space, width)."""
    return [(segment.space, segment.size) for segment in layout.segments]


@dataclass
class Space:
    channels: int
    unit: int = 1
    fixed: str | None = None
    producers: list[tuple[fx.Node, int]] = field(default_factory=list)  # (node, channel dim)
    grouped: list[str] = field(default_factory=list)
    readers: list[tuple[str, int]] = field(default_factory=list)  # (module, offset)


class Analysis:
    """The channel spaces of a shape-propagated graph and the MACs that depend on them."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.parent: list[int] = []
        self.spaces: list[Space] = []
        self.layouts: dict[fx.Node, Layout] = {}
        self.terms: list[Term] = []  # keyed by space index; the rewrite keys them by gate
        self.norm_of: dict[fx.Node, fx.Node] = {}  # producer node -> the BatchNorm right after it
        calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        self.calls = calls
        for node in gm.graph.nodes:
            self._visit(node)

    # -- spaces --------------------------------------------------------------------------------
    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def space(self, index: int) -> Space:
        return self.spaces[self.root(index)]

    def _new(self, channels: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.spaces))
        self.spaces.append(Space(channels, fixed=fixed))
        return len(self.spaces) - 1

    def _fix(self, layout: Layout | None, reason: str) -> None:
        for segment in layout.segments if layout else ():
            space = self.space(segment.space)
            space.fixed = space.fixed or reason

    def _join(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        first, second = self.spaces[a], self.spaces[b]
        self.parent[b] = a
        first.unit = math.lcm(first.unit, second.unit)
        first.fixed = first.fixed or second.fixed
        first.producers += second.producers
        first.grouped += second.grouped
        first.readers += second.readers

    # -- layouts -------------------------------------------------------------------------------
    def _layout(self, value) -> Layout | None:
        return self.layouts.get(value) if isinstance(value, fx.Node) else None

    def _fresh(self, node: fx.Node, dim: int, fixed: str | None = None) -> Layout | None:
        shape = shape_of(node)
        if shape is None or len(shape) <= dim:
            return None
        return Layout([Segment(self._new(int(shape[dim]), fixed), int(shape[dim]))], dim)

    def _unknown(self, node: fx.Node, reason: str) -> None:
        """An op pruning cannot follow: whatever it reads is fixed, and so is what it makes."""
        for value in node.all_input_nodes:
            self._fix(self._layout(value), reason)
        shape = shape_of(node)
        if shape is not None and len(shape) >= 2:
            self.layouts[node] = self._fresh(node, 1, reason)

    def _read(self, node: fx.Node, layout: Layout | None, module: str) -> None:
        """``module`` reads ``layout``'s channels (a convolution's or linear layer's input)."""
        if layout is None:
            return
        if layout.nonzero:
            self._fix(layout, f"{node.name} reads a sigmoid of them, which is not zero where they are closed")
        if self.calls.get(module, 0) > 1:
            self._fix(layout, f"{module} is called more than once")
        offset = 0
        for segment in layout.segments:
            self.space(segment.space).readers.append((module, offset))
            offset += segment.size

    # -- the visit -----------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.layouts[node] = self._fresh(node, 1, "the model's input")
        elif node.op == "output":
            for value in node.all_input_nodes:
                self._fix(self._layout(value), "a model output")
        elif node.op == "call_module":
            self._module(node, module_of(self.gm, node))
        elif node.op in ("call_function", "call_method"):
            self._function(node)

    def _module(self, node: fx.Node, module: nn.Module) -> None:
        source = self._layout(node.args[0]) if node.args else None
        if isinstance(module, nn.Conv2d):
            self._conv(node, module, self._channels_on(source, 1, node))
        elif isinstance(module, nn.Linear):
            self._linear(node, module, self._channels_on(source, len(shape_of(node)) - 1, node))
        elif isinstance(module, NORMS) and source is not None:
            affine = sum(p.numel() for p in module.parameters(recurse=False))  # scales with its channels
            self.terms.append(Term(node.target, 0, _pairs(source), None, True, source.channels, source.channels,
                                   affine))
            producer = node.args[0]
            if not module.affine:
                self._fix(source, f"{node.target} has no affine parameters to fold a gate into")
            elif self.layouts.get(producer) is not None and self._is_producer(producer) and len(producer.users) == 1:
                self.norm_of[producer] = node
            else:
                self._fix(source, f"{node.target} normalises them after they merge")
            self.layouts[node] = source
        elif isinstance(module, PASS_MODULES) and source is not None:
            self.layouts[node] = Layout(source.segments, source.dim,
                                        isinstance(module, NONZERO_AT_ZERO_MODULES) or source.nonzero)
        elif isinstance(module, nn.Flatten) and source is not None:
            self._flatten(node, source)
        else:
            self._unknown(node, f"{node.target} ({type(module).__name__}) is not a layer channel pruning follows")

    def _channels_on(self, source: Layout | None, dim: int, node: fx.Node) -> Layout:
        """``source`` if a layer reading channels on ``dim`` can follow it; else it is fixed, and the
        layer's input counts as one fixed space (the layer's own output can still be gated)."""
        if source is not None and source.dim == dim:
            return source
        self._fix(source, f"{node.target} reads them on another dim")
        width = int(shape_of(node.args[0])[dim])
        return Layout([Segment(self._new(width, f"{node.target} reads them on another dim"), width)], dim)

    def _is_producer(self, node: fx.Node) -> bool:
        return any(n is node for n, _ in self.space(self.layouts[node].segments[0].space).producers)

    def _conv(self, node: fx.Node, conv: nn.Conv2d, source: Layout) -> None:
        name, shape = node.target, shape_of(node)
        macs = int(math.prod(shape[1:])) * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)
        if conv.groups > 1 and conv.in_channels == conv.out_channels and len(source.segments) == 1 \
                and not source.nonzero and self.calls[name] == 1:
            space = self.space(source.segments[0].space)
            space.unit = math.lcm(space.unit, conv.in_channels // conv.groups)
            space.grouped.append(name)
            space.producers.append((node, 1))
            self.layouts[node] = Layout(source.segments, 1)
            self.terms.append(Term(name, macs, _pairs(source), None, True, conv.in_channels, conv.out_channels,
                                   *_weights_and_biases(conv)))
            return
        if conv.groups > 1:
            self._fix(source, f"{name} is a grouped convolution whose groups pruning cannot keep whole")
        self._read(node, source, name)
        fixed = f"{name} is called more than once" if self.calls[name] > 1 else None
        self.layouts[node] = self._fresh(node, 1, fixed)
        self.space(self.layouts[node].segments[0].space).producers.append((node, 1))
        self.terms.append(Term(name, macs, _pairs(source), self.layouts[node].segments[0].space, False,
                               conv.in_channels, conv.out_channels, *_weights_and_biases(conv)))

    def _linear(self, node: fx.Node, linear: nn.Linear, source: Layout) -> None:
        name, shape = node.target, shape_of(node)
        macs = int(math.prod(shape[1:])) * linear.in_features
        self._read(node, source, name)
        dim = len(shape) - 1
        fixed = f"{name} is called more than once" if self.calls[name] > 1 else None
        self.layouts[node] = self._fresh(node, dim, fixed)
        self.space(self.layouts[node].segments[0].space).producers.append((node, dim))
        self.terms.append(Term(name, macs, _pairs(source), self.layouts[node].segments[0].space, False,
                               linear.in_features, linear.out_features, *_weights_and_biases(linear)))

    def _flatten(self, node: fx.Node, source: Layout) -> None:
        before, after = shape_of(node.args[0]), shape_of(node)
        if source.dim == 1 and before is not None and after is not None and len(after) == 2 \
                and math.prod(before[2:]) == 1 and after[1] == before[1]:
            self.layouts[node] = source
        else:
            self._unknown(node, f"{node.name} reshapes them")

    def _function(self, node: fx.Node) -> None:
        target = node.target
        tensors = [v for v in node.all_input_nodes if v in self.layouts and self.layouts[v] is not None]
        if not tensors:
            if shape_of(node) is not None and len(shape_of(node)) >= 2:
                self.layouts[node] = self._fresh(node, 1, f"{node.name} makes a new tensor")
            return
        if shape_of(node) is None:  # no tensor out (a size, a shape): reads no values
            return
        source = self.layouts[tensors[0]]
        if target in PASS_FUNCTIONS or target in PASS_METHODS:
            nonzero = target in NONZERO_AT_ZERO_FUNCTIONS or target == "sigmoid" or source.nonzero
            self.layouts[node] = Layout(source.segments, source.dim, nonzero)
        elif target in JOIN_FUNCTIONS or target in JOIN_METHODS:
            self._join_operands(node, tensors, target in PRODUCT)
        elif target in FLATTENS:
            self._flatten(node, source)
        elif target in REDUCTIONS:
            self._reduce(node, source)
        elif target in (torch.cat, torch.concat):
            self._cat(node)
        else:
            self._unknown(node, f"{node.name} ({getattr(target, '__name__', target)}) is not an op channel "
                                f"pruning follows")

    def _join_operands(self, node: fx.Node, tensors: list[fx.Node], product: bool) -> None:
        layouts = [self.layouts[t] for t in tensors]
        scalars = [a for a in node.args if not isinstance(a, fx.Node)]
        if len(tensors) == 1:
            if product or all(s == 0 for s in scalars):
                self.layouts[node] = layouts[0]
            else:
                self._unknown(node, f"{node.name} adds a constant, so a closed channel would not stay zero")
            return
        a, b = layouts
        if a.dim != b.dim or [s.size for s in a.segments] != [s.size for s in b.segments]:
            self._unknown(node, f"{node.name} joins tensors whose channels do not line up")
            return
        for x, y in zip(a.segments, b.segments):
            self._join(x.space, y.space)
        nonzero = (a.nonzero and b.nonzero) if product else (a.nonzero or b.nonzero)
        self.layouts[node] = Layout(a.segments, a.dim, nonzero)

    def _reduce(self, node: fx.Node, source: Layout) -> None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        rank = len(shape_of(node.args[0]))
        if dims is not None and all((d % rank) > source.dim for d in dims) and not source.nonzero:
            self.layouts[node] = source
        else:
            self._unknown(node, f"{node.name} reduces across them")

    def _cat(self, node: fx.Node) -> None:
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        layouts = [self._layout(p) for p in parts]
        rank = len(shape_of(node))
        if any(layout is None for layout in layouts) or any(layout.dim != dim % rank for layout in layouts):
            self._unknown(node, f"{node.name} concatenates along another dim")
            return
        self.layouts[node] = Layout([s for layout in layouts for s in layout.segments], dim % rank,
                                    any(layout.nonzero for layout in layouts))

    # -- results -------------------------------------------------------------------------------
    def prunable(self) -> list[int]:
        """The root of every space that can be gated: not fixed, written by a layer, whole units."""
        roots = []
        for index in range(len(self.spaces)):
            if self.root(index) != index:
                continue
            space = self.spaces[index]
            if space.fixed is None and space.producers and space.channels % space.unit == 0:
                roots.append(index)
        return roots

    def branch_ends(self, roots: list[int]) -> dict[int, list[BranchEnd]]:
        """The spaces among ``roots`` that may close entirely, with their readers as branch ends.

        A branch end reads only its space, is called once, and its output, through at most its
        BatchNorm, is only added to another tensor of the same shape. Two branch ends added to
        each other would leave a constant without the batch's shape, so their spaces stay open.
        """
        nodes = {n.target: n for n in self.gm.graph.nodes if n.op == "call_module"}
        candidates: dict[int, list[tuple[BranchEnd, fx.Node, fx.Node]]] = {}
        for root in roots:
            ends = [self._branch_end(nodes[module], offset) for module, offset in self.spaces[root].readers]
            if ends and all(end is not None for end in ends):
                candidates[root] = ends
        tails = {tail: root for root, ends in candidates.items() for _, tail, _ in ends}
        return {root: [end for end, _, _ in ends] for root, ends in candidates.items()
                if not any(other in tails for _, tail, add in ends for other in add.all_input_nodes
                           if other is not tail)}

    def _branch_end(self, node: fx.Node, offset: int) -> tuple[BranchEnd, fx.Node, fx.Node] | None:
        """``node`` as a branch end, with its tail (it or its BatchNorm) and the add reading that."""
        layout = self._layout(node.args[0])
        if offset != 0 or layout is None or len(layout.segments) != 1 or self.calls[node.target] != 1:
            return None
        tail, norm = node, None
        if len(node.users) == 1 and isinstance(module_of(self.gm, next(iter(node.users))), NORMS):
            tail = next(iter(node.users))
            norm = tail.target
        add = next(iter(tail.users)) if len(tail.users) == 1 else None
        if add is None or add.target not in ADDS or len(add.all_input_nodes) != 2 \
                or any(shape_of(v) != shape_of(add) for v in add.all_input_nodes):
            return None
        return BranchEnd(node.target, norm, len(shape_of(tail)), layout.dim), tail, add

    def fixed(self) -> list[tuple[int, str]]:
        """Each fixed space written by a layer, with the reason (the summary lists them)."""
        return [(i, s.fixed) for i, s in enumerate(self.spaces)
                if self.root(i) == i and s.fixed is not None and s.producers]
