"""Symbolic tracing in both train and eval mode, aware of leaf modules, explaining its failures."""
from __future__ import annotations

import copy
import re
from typing import Iterable

import torch.fx as fx
from torch import nn
from torchvision.ops import StochasticDepth

from maskfx.nn import Jumpout

# Modules kept whole: they read ``self.training`` in ``forward``, which tracing would freeze.
DEFAULT_LEAF_TYPES: tuple[type[nn.Module], ...] = (StochasticDepth, Jumpout)

LeafSpec = str | type[nn.Module]


class TraceError(RuntimeError):
    """torch.fx could not trace the model; ``module`` names the submodule that failed."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class _LeafAwareTracer(fx.Tracer):
    def __init__(self, leaf_names: frozenset[str], leaf_types: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.leaf_names, self.leaf_types = leaf_names, leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types)
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            # The innermost module sees the error first; outer frames keep its name.
            if not hasattr(error, "_maskfx_failed_module"):
                error._maskfx_failed_module = (self.path_of_module(m), type(m).__name__)
            raise


def _split_leaves(model: nn.Module, leaf_modules: Iterable[LeafSpec]) -> tuple[frozenset[str], tuple[type, ...]]:
    names, types = set(), []
    known = {name for name, _ in model.named_modules()}
    for leaf in leaf_modules:
        if isinstance(leaf, str):
            if leaf not in known:
                raise ValueError(f"leaf_modules: {leaf!r} is not a submodule of {type(model).__name__}")
            names.add(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types.append(leaf)
        else:
            raise ValueError(f"leaf_modules entries must be qualified names or nn.Module subclasses, got {leaf!r}")
    return frozenset(names), tuple(types)


def _graph_in_mode(tracer: fx.Tracer, model: nn.Module, training: bool) -> fx.Graph:
    model.train(training)
    try:
        return tracer.trace(model)
    except Exception as error:
        path, kind = getattr(error, "_maskfx_failed_module", ("", type(model).__name__))
        where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind} itself"
        remedy = (f"mark it as a leaf so it is kept whole: maskfx.transform(model, ..., leaf_modules=['{path}']) "
                  f"or leaf_modules=[{kind}]" if path else
                  "leaf_modules cannot help here: make the model's own forward free of data-dependent "
                  "Python control flow, or wrap it so the untraceable part is a submodule")
        mode = "train" if training else "eval"
        raise TraceError(f"torch.fx could not trace {where} in {mode} mode: {type(error).__name__}: {error}. "
                         f"Remedy: {remedy}.", module=path or None) from None


def _code(graph: fx.Graph) -> str:
    """The graph's code with tracer-numbered tensor constants unnumbered: each trace numbers its own."""
    return re.sub(r"_tensor_constant\d+", "_tensor_constant", graph.python_code("self").src)


def trace(model: nn.Module, leaf_modules: Iterable[LeafSpec] = ()) -> tuple[fx.GraphModule, fx.GraphModule | None]:
    """Trace ``model`` in eval mode and in train mode.

    Returns the eval-mode GraphModule, which shares ``model``'s submodules, and, only when the
    forward depends on ``self.training`` (the two traces differ), a train-mode GraphModule over a
    copy of ``model``, so each can be rewritten on its own before ``maskfx.dual.join``. The caller
    passes a copy when the original must stay untouched; its train/eval mode is restored.
    """
    names, types = _split_leaves(model, leaf_modules)
    was_training = model.training
    try:
        eval_graph = _graph_in_mode(_LeafAwareTracer(names, DEFAULT_LEAF_TYPES + types), model, False)
        train_graph = _graph_in_mode(_LeafAwareTracer(names, DEFAULT_LEAF_TYPES + types), model, True)
    finally:
        model.train(was_training)
    train_gm = None
    if _code(train_graph) != _code(eval_graph):
        train_gm = fx.GraphModule(copy.deepcopy(model), train_graph, type(model).__name__)
        train_gm.train(was_training)
    eval_gm = fx.GraphModule(model, eval_graph, type(model).__name__)
    eval_gm.train(was_training)
    return eval_gm, train_gm
