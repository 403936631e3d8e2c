"""ONNX Runtime CPU peephole for zero-padded channels: the exported graph reads the narrow tensor itself.

When a block reads a candidate narrower than its own input (a bypassed downsampling block, say),
``collapse`` adds ``pad_channels``: zeros appended to dim 1, a plain op every backend runs. ONNX
Runtime's CPU layout (NCHWc) has no Pad, so a Pad forces layout reorders and stops the Conv + Add +
Relu fusion of its block and of every block after it (a pruned resnet50 with three pads kept 10
unfused Adds and 19 reorders). ``export_onnx`` therefore applies this rewrite, for the CPU provider
only (``maskfx.export.peepholes``), to a copy of the deployed module. A residual block uses its
input twice, and both uses are rewritten exactly:

- a convolution reading ``pad(t)`` reads ``t`` with the weight's columns for the zero channels
  dropped: ``conv(pad(t)) == conv'(t)``;
- the residual add ``f + pad(t)``, where ``f`` is a convolution (optionally followed by
  BatchNorm), becomes ``cat([f[:, :c] + t, f[:, c:]], 1)`` with the convolution and BatchNorm
  split by output channel (both act per output channel), so no Slice is needed either.

Anything else keeps its Pad: the rewrite never changes what the graph computes.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch import nn

from maskfx.graph.surgery import add_operands, fresh_name, module_of, replace_with_module, shape_of
from maskfx.layers.adapt import pad_channels

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_channel_pad(node: fx.Node) -> bool:
    """``node`` zero-pads channels (what ``absorb_channel_pads`` may rewrite)."""
    return node.op == "call_function" and node.target is pad_channels


def absorb_channel_pads(gm: fx.GraphModule) -> int:
    """Rewrite the consumers of every ``pad_channels`` node (see the module docstring); pads left
    with no user are removed. Reads the widths shape propagation recorded: a pad whose input's
    width is unknown is kept. Returns how many pads were removed."""
    removed = 0
    for pad in [n for n in gm.graph.nodes if is_channel_pad(n)]:
        narrow = pad.args[0]
        channels = _channels(narrow)
        if channels is None:
            continue
        for user in list(pad.users):
            if _is_dense_conv_call(gm, user) and user.args[0] is pad:
                _read_narrow(gm, user, narrow, channels)
            else:
                _split_residual_add(gm, user, pad, narrow, channels)
        if not pad.users:
            gm.graph.erase_node(pad)
            removed += 1
    return removed


def _channels(node: fx.Node) -> int | None:
    """Channels of ``node``, as shape propagation recorded them."""
    shape = shape_of(node)
    return int(shape[1]) if shape is not None and len(shape) >= 2 else None


def _called_once(gm: fx.GraphModule, node: fx.Node) -> bool:
    """No other node calls ``node``'s module: rewriting a copy of a shared one would add parameters."""
    return sum(n.op == "call_module" and n.target == node.target for n in gm.graph.nodes) == 1


def _parameter_like(value: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``value`` as ``original`` was held: a Parameter keeping its ``requires_grad``, or a buffer."""
    if isinstance(original, nn.Parameter):
        return nn.Parameter(value, requires_grad=original.requires_grad)
    return value


def _is_dense_conv_call(gm: fx.GraphModule, node: fx.Node) -> bool:
    """``node`` calls a dense (groups = 1) convolution on one input, and nothing else calls it."""
    conv = module_of(gm, node)
    return isinstance(conv, CONVOLUTIONS) and conv.groups == 1 and len(node.args) == 1 and not node.kwargs \
        and _called_once(gm, node)


def _read_narrow(gm: fx.GraphModule, node: fx.Node, narrow: fx.Node, channels: int) -> None:
    """Point the convolution ``node`` at ``narrow``, keeping the weight columns of its first ``channels``."""
    conv = copy.deepcopy(module_of(gm, node))
    conv.weight = _parameter_like(conv.weight.detach()[:, :channels].clone(), conv.weight)
    conv.in_channels = channels
    replace_with_module(gm, node, fresh_name(gm, f"{node.target}_narrow".replace(".", "_")), conv, (narrow,))


def _sliced(module: nn.Module, part: slice) -> nn.Module:
    """A copy of a convolution or BatchNorm keeping the output channels ``part``."""
    module = copy.deepcopy(module)
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            setattr(module, name, _parameter_like(tensor.detach()[part].clone(), tensor))
    if isinstance(module, CONVOLUTIONS):
        module.out_channels = module.weight.shape[0]
    else:
        module.num_features = (module.weight if module.affine else module.running_mean).shape[0]
    return module


def _producer_chain(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node] | None:
    """``[conv]`` or ``[conv, batch_norm]`` ending at ``node``, each used only by the next, else None."""
    chain = [node]
    norm = module_of(gm, node)
    if isinstance(norm, BATCH_NORMS) and len(node.args) == 1 and not node.kwargs:
        if not norm.affine and norm.running_mean is None:
            return None  # nothing tells its width: leave it
        chain.insert(0, node.args[0])
    if not (isinstance(chain[0], fx.Node) and _is_dense_conv_call(gm, chain[0])):
        return None
    if any(len(n.users) != 1 or not _called_once(gm, n) for n in chain):
        return None
    return chain


def _inheriting(new: fx.Node, old: fx.Node) -> fx.Node:
    """``new`` with ``old``'s marks (which block it belongs to), not its shape."""
    new.meta.update({key: value for key, value in old.meta.items() if key != "tensor_meta"})
    return new


def _split_residual_add(gm: fx.GraphModule, add: fx.Node, pad: fx.Node, narrow: fx.Node, channels: int) -> None:
    """``f + pad(t)`` -> ``cat([f_low + t, f_high], 1)`` when ``f`` is conv(+BatchNorm) (else nothing)."""
    operands = add_operands(add)
    if operands is None or pad not in operands or add.op != "call_function":
        return
    chain = _producer_chain(gm, operands[1] if operands[0] is pad else operands[0])
    if chain is None:
        return
    graph = gm.graph
    with graph.inserting_before(add):
        parts = []
        for part in (slice(0, channels), slice(channels, None)):
            value = chain[0].args[0]
            for node in chain:
                name = fresh_name(gm, f"{node.target}_{'low' if part.start == 0 else 'high'}".replace(".", "_"))
                gm.add_submodule(name, _sliced(module_of(gm, node), part))
                value = _inheriting(graph.call_module(name, (value,)), node)
            parts.append(value)
        low = _inheriting(graph.call_function(operator.add, (parts[0], narrow)), add)
        joined = graph.call_function(torch.cat, ([low, parts[1]], 1))
    joined.meta.update(add.meta)
    add.replace_all_uses_with(joined)
    graph.erase_node(add)
    for node in reversed(chain):
        graph.erase_node(node)
