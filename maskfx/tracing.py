"""Symbolic tracing in both train and eval mode, aware of leaf modules, explaining its failures."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from itertools import islice
from typing import Iterable

import torch.fx as fx
from torch import nn
from torchvision.ops import StochasticDepth

from maskfx.errors import UserError

# Modules kept whole: they read ``self.training`` in ``forward``, which tracing would freeze.
DEFAULT_LEAF_TYPES: tuple[type[nn.Module], ...] = (StochasticDepth,)

LeafSpec = str | type[nn.Module]


class TraceError(RuntimeError):
    """torch.fx could not trace the model; ``module`` names the submodule that failed."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class _LeafAwareTracer(fx.Tracer):
    """Keeps leaves whole, names the submodule a failure came from, and records what each module
    call put in the graph (its signature), so the two modes' traces can be compared per module."""

    def __init__(self, leaf_names: frozenset[str], leaf_types: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.leaf_names, self.leaf_types = leaf_names, leaf_types
        self.signatures: dict[str, list[tuple]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types)
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m, forward, args, kwargs):
        before = len(self.graph.nodes)
        try:
            out = super().call_module(m, forward, args, kwargs)
            created = reversed(list(islice(reversed(self.graph.nodes), len(self.graph.nodes) - before)))
            self.signatures.setdefault(self.path_of_module(m), []).append(
                tuple((n.op, str(n.target)) for n in created))
            return out
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
                raise UserError(f"leaf_modules: {leaf!r} is not a submodule of {type(model).__name__}")
            names.add(leaf)
        elif isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types.append(leaf)
        else:
            raise UserError(f"leaf_modules entries must be qualified names or nn.Module subclasses, got {leaf!r}")
    return frozenset(names), tuple(types)


def _graph_in_mode(tracer: fx.Tracer, model: nn.Module, training: bool) -> fx.Graph:
    model.train(training)
    try:
        graph = tracer.trace(model)
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
    # fx rebuilds a graph from its code (GraphModule pickling, torch.package) with a tracer of the
    # recorded class made without arguments, which maskfx's cannot be; that tracer keeps every
    # module whole, so it needs no leaf rules: record none, and fx uses its own.
    graph._tracer_cls = None
    return graph


def _traced_or_error(tracer: fx.Tracer, model: nn.Module, training: bool) -> fx.Graph | TraceError:
    try:
        return _graph_in_mode(tracer, model, training)
    except TraceError as error:
        return error


def _code(graph: fx.Graph) -> str:
    """The graph's code with tracer-numbered tensor constants unnumbered: each trace numbers its own."""
    return re.sub(r"_tensor_constant\d+", "_tensor_constant", graph.python_code("self").src)


@dataclass
class Traced:
    """The eval-mode graph module (over the given model), the train-mode one (over a copy of it)
    where the two differ, and the modules kept whole because only their mode made their traces
    differ (or fail)."""

    eval: fx.GraphModule
    train: fx.GraphModule | None
    kept_whole: list[str]


def _parameter_free(model: nn.Module, path: str | None) -> bool:
    return bool(path) and next(iter(model.get_submodule(path).parameters()), None) is None


def _mode_dependent_leaves(model: nn.Module, eval_tracer: _LeafAwareTracer, train_tracer: _LeafAwareTracer) -> list[str]:
    """Parameter-free modules (drop-path, custom dropout) whose own trace differs between the modes.

    Kept whole, they run as themselves and read ``self.training`` at run time, as ``nn.Dropout``
    does; modules with parameters stay open to the passes and get two graphs instead.
    """
    differing = [path for path, calls in eval_tracer.signatures.items()
                 if path and path in train_tracer.signatures and calls != train_tracer.signatures[path]]
    return [path for path in differing if _parameter_free(model, path)]


def _mode_dependent_failure(model: nn.Module, outcomes: list[fx.Graph | TraceError]) -> list[str]:
    """The module to keep whole when the trace failed in one mode only, inside a parameter-free
    module: its forward depends on the mode (a drop-path with data-dependent control flow in
    training), and kept whole it runs as itself, as one whose trace differs does. Otherwise the
    error stands."""
    errors = [o for o in outcomes if isinstance(o, TraceError)]
    if len(errors) == 1 and _parameter_free(model, errors[0].module):
        return [errors[0].module]
    raise errors[0]


def trace(model: nn.Module, leaf_modules: Iterable[LeafSpec] = (), leaf_types: tuple[type[nn.Module], ...] = ()) -> Traced:
    """Trace ``model`` in eval mode and in train mode.

    Returns the eval-mode GraphModule, which shares ``model``'s submodules, and, only when the
    forward depends on ``self.training`` (the two traces differ), a train-mode GraphModule over a
    copy of ``model``, so each can be rewritten on its own before ``maskfx.dual.join``. A
    parameter-free submodule whose trace differs between the modes, or fails in one of them, is
    kept whole and the model traced again. ``leaf_types`` are kept whole besides the user's
    ``leaf_modules`` (maskfx's own layers). The caller passes a copy when the original must stay
    untouched; its train/eval mode is restored.
    """
    names, types = _split_leaves(model, leaf_modules)
    was_training = model.training
    kept_whole: list[str] = []
    try:
        while True:
            tracers = [_LeafAwareTracer(names, DEFAULT_LEAF_TYPES + leaf_types + types) for _ in range(2)]
            outcomes = [_traced_or_error(t, model, training) for t, training in zip(tracers, (False, True))]
            if any(isinstance(o, TraceError) for o in outcomes):
                more = _mode_dependent_failure(model, outcomes)
            else:
                eval_graph, train_graph = outcomes
                same = _code(train_graph) == _code(eval_graph)
                more = [] if same else _mode_dependent_leaves(model, *tracers)
                if not more:
                    break
            kept_whole += more
            names = names | frozenset(more)
    finally:
        model.train(was_training)
    train_gm = None
    if not same:
        train_gm = fx.GraphModule(copy.deepcopy(model), train_graph, type(model).__name__)
        train_gm.train(was_training)
    eval_gm = fx.GraphModule(model, eval_graph, type(model).__name__)
    eval_gm.train(was_training)
    return Traced(eval_gm, train_gm, kept_whole)
