"""Symbolic tracing that knows maskfx's leaf modules and explains its failures."""
from __future__ import annotations

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


def trace(model: nn.Module, leaf_modules: Iterable[LeafSpec] = ()) -> fx.GraphModule:
    """Trace ``model`` in eval mode into a GraphModule that shares its submodules.

    The caller passes a copy when the original must stay untouched; the model's train/eval
    mode is restored on the result either way.
    """
    names, types = _split_leaves(model, leaf_modules)
    tracer = _LeafAwareTracer(names, DEFAULT_LEAF_TYPES + types)
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        path, kind = getattr(error, "_maskfx_failed_module", ("", type(model).__name__))
        where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind} itself"
        remedy = (f"mark it as a leaf so it is kept whole: maskfx.transform(model, ..., leaf_modules=['{path}']) "
                  f"or leaf_modules=[{kind}]" if path else
                  "leaf_modules cannot help here: make the model's own forward free of data-dependent "
                  "Python control flow, or wrap it so the untraceable part is a submodule")
        raise TraceError(f"torch.fx could not trace {where}: {type(error).__name__}: {error}. "
                         f"Remedy: {remedy}.", module=path or None) from None
    finally:
        model.train(was_training)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.train(was_training)
    return gm
