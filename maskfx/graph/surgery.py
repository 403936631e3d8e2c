"""Small torch.fx helpers that every pass shares."""
from __future__ import annotations

import operator
from typing import Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

ADD_FUNCTIONS = frozenset({operator.add, operator.iadd, torch.add})
ADD_METHODS = frozenset({"add", "add_"})
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.Hardtanh,
                       nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity)
ELEMENTWISE_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, F.gelu, F.silu, torch.tanh,
                                   torch.sigmoid, F.hardswish, F.relu6, F.leaky_relu, F.elu, F.mish})
ELEMENTWISE_METHODS = frozenset({"relu", "relu_", "tanh", "sigmoid"})
RELU_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_})
RELU_METHODS = frozenset({"relu", "relu_"})


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else ``None``."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def shape_of(node) -> torch.Size | None:
    """The output shape shape propagation recorded for ``node`` (``None`` if it has none)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return getattr(meta, "shape", None)


def nodes_calling(gm: fx.GraphModule, types: type | tuple[type, ...]) -> Iterator[tuple[fx.Node, nn.Module]]:
    """``(node, module)`` for every call of a module of the given types, in graph order."""
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        if isinstance(module, types):
            yield node, module


def freeze_modules(gm: fx.GraphModule, types: type | tuple[type, ...]) -> None:
    """Call ``freeze()`` on every submodule of the given types."""
    for module in gm.modules():
        if isinstance(module, types):
            module.freeze()


def is_elementwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An activation applied value by value (a node that pruning may see through)."""
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in ELEMENTWISE_METHODS
    return isinstance(module_of(gm, node), ELEMENTWISE_MODULES)


def is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A ReLU call in any spelling: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, in place or not."""
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in RELU_METHODS
    return type(module_of(gm, node)) is nn.ReLU


def add_operands(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """The two tensor operands of an add (``+``, ``+=``, ``torch.add``, ``Tensor.add(_)``), else None."""
    is_add = (node.op == "call_function" and node.target in ADD_FUNCTIONS) or \
             (node.op == "call_method" and node.target in ADD_METHODS)
    if not is_add or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
        return None
    a, b = node.args
    return (a, b) if isinstance(a, fx.Node) and isinstance(b, fx.Node) and a is not b else None


def ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it depends on."""
    seen, stack = {node}, [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def is_dropout(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An ordinary dropout (nn.Dropout or F.dropout): what Jumpout and Blockout both replace."""
    if node.op == "call_function":
        return node.target is F.dropout
    return type(module_of(gm, node)) is nn.Dropout


def model_device(module: nn.Module) -> torch.device:
    """Where the module's tensors live (the CPU for a module without any): the layers a pass adds,
    and the inputs a measurement feeds, go there too."""
    return next((t.device for t in [*module.parameters(), *module.buffers()]), torch.device("cpu"))


def fresh_name(gm: fx.GraphModule, base: str) -> str:
    """An attribute name on ``gm`` that nothing uses yet."""
    name, k = base, 1
    while hasattr(gm, name):
        name, k = f"{base}_{k}", k + 1
    return name


def insert_module_after(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> fx.Node:
    """Call ``module`` on ``node``'s output and route every other user of ``node`` through it."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return new


def replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module,
                        args: tuple) -> fx.Node:
    """Put a call of ``module`` on ``args`` where ``node`` was, and erase ``node``."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def bypass(gm: fx.GraphModule, node: fx.Node) -> None:
    """Remove a one-input pass-through node, wiring its users to its input."""
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop modules nothing calls any more, check the graph and regenerate ``forward``."""
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    """Record every node's output shape in ``node.meta["tensor_meta"]`` (eval mode, no grad)."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        gm.train(was_training)
