"""The channels pass: a gate after every layer writing a prunable channel space; freeze picks the
channels to keep (under the budget when there is one); collapse folds the gates into the layers
and, in "prune" mode, removes every closed channel from each layer it touches."""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
from torch import nn

from maskfx.errors import UserError
from maskfx.graph.surgery import fresh_name, nodes_calling, propagate_shapes
from maskfx.state import Rejection, Rewrite, Site, get_state
from maskfx.techniques.channels.analysis import Analysis
from maskfx.techniques.channels.config import ChannelConfig
from maskfx.techniques.channels.cost import Term, cost
from maskfx.techniques.channels.layers import BranchEnd, ChannelGate, ChannelSpace, Producer, Reader

TECHNIQUE = "channels"
CONFIG = ChannelConfig
LAYERS = (ChannelGate,)
CONTAINER = "channel_gates"


def rewrite(gm: fx.GraphModule, config: ChannelConfig, example_inputs: tuple | None) -> Rewrite:
    if example_inputs is None:
        raise UserError("example_inputs: channels needs example inputs, e.g. example_inputs=(x,), to see the "
                        "shapes (and MACs) of every layer")
    propagate_shapes(gm, example_inputs)
    analysis = Analysis(gm)
    roots = analysis.prunable()
    ends = analysis.branch_ends(roots)
    gate_of = {root: f"s{i}" for i, root in enumerate(roots)}
    terms = [replace(t, inputs=[(gate_of.get(analysis.root(space)), width) for space, width in t.inputs],
                     output=None if t.output is None else gate_of.get(analysis.root(t.output)))
             for t in analysis.terms]
    container = nn.Module()  # holds the gates; the terms are the rewrite's record
    gm.add_submodule(CONTAINER, container)
    sites = []
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for root in roots:
        space = analysis.spaces[root]
        space.producers.sort(key=lambda pair: order[pair[0]])
        producers = [Producer(node.target, getattr(analysis.norm_of.get(node), "target", None), dim)
                     for node, dim in space.producers]
        record = ChannelSpace(f"channels of {producers[0].module}", space.channels, space.unit, producers,
                              list(space.grouped), [Reader(m, o) for m, o in space.readers], ends.get(root, []))
        gate = ChannelGate(record, config.init_keep, config.temperature, config.estimator).to(_device(gm))
        name = gate_of[root]
        container.add_module(name, gate)
        for node, dim in space.producers:
            after = analysis.norm_of.get(node, node)
            with gm.graph.inserting_after(after):
                call = gm.graph.call_module(f"{CONTAINER}.{name}", (after, dim))
            after.replace_all_uses_with(call, delete_user_cb=lambda user: user is not call)
        unit = f", unit {space.unit}" if space.unit > 1 else ""
        closable = ", may close entirely (a residual branch)" if record.closable else ""
        sites.append(Site(TECHNIQUE, f"{CONTAINER}.{name}", record.name,
                          f"{space.channels} channels{unit}, {len(producers)} writer(s), "
                          f"{len(record.readers)} reader(s){closable}"))
    rejected = [Rejection(TECHNIQUE, f"channels of {analysis.spaces[i].producers[0][0].target}", reason)
                for i, reason in analysis.fixed()]
    if not sites:
        message = ("channels not applied: no channel space could be gated; maskfx.summary(net) lists each "
                   "candidate and why it was rejected")
        warnings.warn(message, stacklevel=3)
        return Rewrite([], [message], rejected)
    return Rewrite(sites, [f"channels: {len(sites)} channel space(s) gated, "
                           f"{sum(analysis.spaces[r].channels for r in roots)} channels"], rejected, terms)


def _device(gm: fx.GraphModule) -> torch.device:
    for p in gm.parameters():
        return p.device
    return torch.device("cpu")


def gates_of(gm: fx.GraphModule) -> dict[str, ChannelGate]:
    """The net's gates by name (none: the technique found nothing, or collapse removed them)."""
    container = getattr(gm, CONTAINER, None)
    return dict(container.named_children()) if isinstance(container, nn.Module) else {}


def terms_of(gm: fx.GraphModule) -> list[Term]:
    return get_state(gm).records.get(TECHNIQUE, [])


# -- cost -------------------------------------------------------------------------------------------
def budget_cost(gm: fx.GraphModule, kind: str, resource: str = "macs") -> torch.Tensor | float | None:
    """MACs (or parameters, ``resource="params"``) of the gated layers: ``"full"`` (nothing
    closed), ``"expected"`` (differentiable, from each unit's probability of being open),
    ``"kept"`` (the frozen or deterministic choice), or ``"min"`` (every space at its narrowest
    allowed width)."""
    gates = gates_of(gm)
    if not gates:
        return None
    if kind == "full":
        kept = {name: float(g.space.channels) for name, g in gates.items()}
    elif kind == "expected":
        kept = {name: g.keep_probability().sum() * g.space.unit for name, g in gates.items()}
    elif kind == "kept":
        kept = {name: float((g.deterministic() > 0).sum()) * g.space.unit for name, g in gates.items()}
    elif kind == "min":
        kept = {name: 0.0 if g.space.closable else float(min(_step(g, _round_to(gm)), g.space.channels))
                for name, g in gates.items()}
    else:
        raise ValueError(f"kind must be full, expected, kept or min, got {kind!r}")
    return cost(terms_of(gm), kept, resource)


def _round_to(gm: fx.GraphModule) -> int:
    return get_state(gm).configs[TECHNIQUE].round_to


def _step(gate: ChannelGate, round_to: int) -> int:
    """The width granularity of a space: whole units, a multiple of ``round_to``; but whole groups
    alone where a grouped convolution's group is wider than one channel and off the multiple (a
    ResNeXt branch of 4): ONNX Runtime blocks such a convolution at no width (its per-group
    channels are off the block), so rounding would only take away the budget's finer choices
    (one branch, not four at a time)."""
    unit = gate.space.unit
    return unit if unit > 1 and unit % round_to else math.lcm(round_to, unit)


# -- freeze -----------------------------------------------------------------------------------------
def select(gm: fx.GraphModule, allowed: dict[str, float] | None, round_to: int) -> dict[str, torch.Tensor]:
    """The units each gate keeps. Units close in order of their probability of being open, in
    chunks that keep every width a multiple of ``round_to`` (and never below one chunk, unless the
    space may close entirely: the inside of a residual branch), until the gated layers' MACs (and
    parameters) are at or under ``allowed``'s; then the most likely open chunks that still fit
    reopen, so the last, perhaps large, chunk closed does not leave budget unspent. Without a
    budget, the units eval closes go (rounded up to the step). Ties go to the space that keeps the largest share of its width, so
    an untrained net shrinks every width alike (a uniform width multiplier) and still lands under
    its budget deterministically. (Ties by MACs saved per channel, tried first, cut the
    high-resolution layers of an untrained resnet50 to 8 channels and left layer4 whole.)"""
    gates, terms = gates_of(gm), terms_of(gm)
    order, kept_units, score = {}, {}, {}
    for name, gate in gates.items():
        p = gate.keep_probability().detach().float()
        order[name] = torch.argsort(p, stable=True).tolist()  # the least likely to be open first
        score[name] = p.double()  # the mean of equal float32 values is then exact: ties stay ties
        units = len(order[name])
        if allowed is None:
            open_units = int((gate.deterministic() > 0).sum())
            step = _step(gate, round_to) // gate.space.unit
            least = 0 if gate.space.closable else step
            kept_units[name] = min(units, max(least, math.ceil(open_units / step) * step))
        else:
            kept_units[name] = units

    def most_likely(name: str, count: int) -> list[int]:
        """The ``count`` units of gate ``name`` most likely to be open: the ones a count keeps."""
        return order[name][len(order[name]) - count:] if count else []

    def kept_channels(counts: dict[str, int]) -> dict[str, float]:
        return {n: float(c * gates[n].space.unit) for n, c in counts.items()}

    def step_of(name: str) -> int:
        return _step(gates[name], round_to) // gates[name].space.unit

    def lower_count(name: str) -> int | None:
        step, count = step_of(name), kept_units[name]
        lower = ((count - 1) // step) * step
        return lower if lower >= step or (count > 0 and gates[name].space.closable) else None

    def upper_count(name: str) -> int | None:
        """The next larger count; none for a branch closed whole (one chunk would bring back two
        layers' latency for a sliver of their MACs)."""
        step, count, units = step_of(name), kept_units[name], len(order[name])
        return min(units, (count // step + 1) * step) if 0 < count < units else None

    def over(counts: dict[str, int]) -> bool:
        kept = kept_channels(counts)
        return any(cost(terms, kept, resource) > limit for resource, limit in allowed.items())

    def chunk_score(name: str, fewer: int, more: int) -> float:
        """The mean keep probability of the units ``more`` keeps and ``fewer`` does not."""
        return float(score[name][most_likely(name, more)[:more - fewer]].mean())

    if allowed is not None:
        # Close the least likely open chunk until under the budget ...
        while over(kept_units):
            closing = [((chunk_score(n, lower, kept_units[n]), -kept_units[n] / len(order[n])), n, lower)
                       for n in gates if (lower := lower_count(n)) is not None]
            if not closing:
                break
            _, name, lower = min(closing)
            kept_units[name] = lower
        # ... then reopen, most likely open first, the chunks that still fit: the last chunk closed
        # may have been a large one, and a budget left unspent is accuracy thrown away.
        refused: set[str] = set()
        while True:
            opening = sorted(((-chunk_score(n, kept_units[n], upper), n, upper) for n in gates
                              if n not in refused and (upper := upper_count(n)) is not None))
            if not opening:
                break
            _, name, upper = opening[0]
            fewer = kept_units[name]
            kept_units[name] = upper
            if over(kept_units):
                kept_units[name] = fewer
                refused.add(name)
        # A branch whose every kept unit eval already closes goes whole: the eval function has only
        # its constant, and what is left of it would cost two layers' latency for nothing.
        for name, gate in gates.items():
            kept = most_likely(name, kept_units[name])
            if gate.space.closable and kept and not (gate.deterministic().detach()[kept] > 0).any():
                kept_units[name] = 0
    masks = {}
    for name in gates:
        keep = torch.zeros(len(order[name]), dtype=torch.bool)
        keep[most_likely(name, kept_units[name])] = True
        masks[name] = keep
    return masks


def freeze(gm: fx.GraphModule) -> None:
    """Fix every gate at the channels ``select`` keeps: under the net's budget, if it has one."""
    gates = gates_of(gm)
    if not gates or all(g.is_frozen for g in gates.values()):
        return
    masks = select(gm, get_state(gm).allowed, _round_to(gm))
    for name, gate in gates.items():
        gate.freeze(masks[name].to(gate.frozen_mask.device))


# -- collapse ---------------------------------------------------------------------------------------
def _fold(module: nn.Module, values: torch.Tensor, dim: int = 0) -> None:
    """Scale ``module``'s outputs channel by channel: its weight along ``dim`` and its bias."""
    shape = [1] * module.weight.dim()
    shape[dim] = -1
    module.weight.mul_(values.view(shape).to(module.weight.dtype))
    if getattr(module, "bias", None) is not None:
        module.bias.mul_(values.to(module.bias.dtype))


def _slice_out(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` of a convolution, linear layer or BatchNorm."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            value = tensor.data[keep].clone()
            if isinstance(tensor, nn.Parameter):
                setattr(module, name, nn.Parameter(value, requires_grad=tensor.requires_grad))
            else:
                setattr(module, name, value)
    count = int(keep.numel())
    for attribute in ("out_channels", "out_features", "num_features"):
        if hasattr(module, attribute):
            setattr(module, attribute, count)


def _slice_in(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep input channels ``keep`` of a convolution (groups 1) or linear layer."""
    module.weight = nn.Parameter(module.weight.data[:, keep].clone(), requires_grad=module.weight.requires_grad)
    for attribute in ("in_channels", "in_features"):
        if hasattr(module, attribute):
            setattr(module, attribute, int(keep.numel()))


@dataclass(frozen=True)
class ChannelsLowered:
    """How many gates collapse folded, and the gated channels there were and are left."""

    mode: str
    gates: int
    channels_before: int
    channels_after: int

    def notes(self) -> list[str]:
        if not self.gates:
            return []
        if self.mode != "prune":
            return [f"channels collapse: {self.gates} gate(s) folded into the layers writing them; "
                    f"{self.channels_before} gated channels kept"]
        return [f"channels collapse: {self.gates} gate(s) folded; {self.channels_before - self.channels_after} of "
                f"{self.channels_before} gated channels removed from the layers writing and reading them"]


@torch.no_grad()
def collapse(gm: fx.GraphModule, mode: str, config: ChannelConfig) -> ChannelsLowered:
    """Both modes fold each gate's eval value into the layers writing its channels (into their
    BatchNorm when one follows), which keeps the function exactly and the parameter count;
    "prune" then removes the closed channels from every layer writing or reading them."""
    gates = gates_of(gm)
    if not gates:
        return ChannelsLowered(mode, 0, 0, 0)
    values = {name: gate.deterministic().repeat_interleave(gate.space.unit) for name, gate in gates.items()}
    for name, gate in gates.items():
        for producer in gate.space.producers:
            if producer.norm is not None:
                _fold(gm.get_submodule(producer.norm), values[name])
            else:
                _fold(gm.get_submodule(producer.module), values[name])
    for node, _ in list(nodes_calling(gm, ChannelGate)):
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    delattr(gm, CONTAINER)
    before = sum(gate.space.channels for gate in gates.values())
    if mode != "prune":
        return ChannelsLowered(mode, len(gates), before, before)
    removed_in: dict[str, list[int]] = {}
    kept_total, closed_branches = 0, []
    for name, gate in gates.items():
        keep = (values[name] > 0).nonzero().flatten()
        kept_total += keep.numel()
        if keep.numel() == gate.space.channels:
            continue
        if keep.numel() == 0:  # a closable space: its branch ends become constants, the rest is dead
            closed_branches += gate.space.ends
            continue
        closed = (values[name] == 0).nonzero().flatten().tolist()
        for producer in gate.space.producers:
            module = gm.get_submodule(producer.module)
            if producer.module in gate.space.grouped:
                per_group = module.in_channels // module.groups
                _slice_out(module, keep)
                module.in_channels = int(keep.numel())
                module.groups = int(keep.numel()) // per_group
            else:
                _slice_out(module, keep)
            if producer.norm is not None:
                _slice_out(gm.get_submodule(producer.norm), keep)
        for reader in gate.space.readers:
            removed_in.setdefault(reader.module, []).extend(reader.offset + c for c in closed)
    for module_name, closed in removed_in.items():
        module = gm.get_submodule(module_name)
        width = module.weight.shape[1]
        gone = set(closed)
        _slice_in(module, torch.tensor([c for c in range(width) if c not in gone], dtype=torch.long))
    calls = {node.target: node for node in gm.graph.nodes if node.op == "call_module"}
    for end in closed_branches:
        _add_a_constant(gm, end, calls)
    gm.graph.eliminate_dead_code()  # the closed branches' insides: nothing reads them now
    return ChannelsLowered(mode, len(gates), before, kept_total)


def _add_a_constant(gm: fx.GraphModule, end: BranchEnd, calls: dict[str, fx.Node]) -> None:
    """A branch end whose input space closed: its output is its bias (zero without one) through
    its BatchNorm, the same at every position, so the add reads that constant instead."""
    layer = gm.get_submodule(end.module)
    value = layer.bias.detach() if getattr(layer, "bias", None) is not None else layer.weight.new_zeros(
        layer.weight.shape[0])
    tail = calls[end.module]
    if end.norm is not None:
        norm = gm.get_submodule(end.norm)
        value = nn.functional.batch_norm(value[None], norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                         False, 0.0, norm.eps)[0]
        tail = calls[end.norm]
    shape = [1] * end.rank
    shape[end.dim] = -1
    name = fresh_name(gm, f"{end.module.replace('.', '_')}_constant")
    gm.register_buffer(name, value.reshape(shape).clone())
    with gm.graph.inserting_before(tail):
        constant = gm.graph.get_attr(name)
    tail.replace_all_uses_with(constant)
    (add,) = constant.users  # out of place: an in-place add into the constant would write the buffer
    add.target = {operator.iadd: operator.add, "add_": "add"}.get(add.target, add.target)
