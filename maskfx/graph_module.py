"""The graph module maskfx returns: a ``torch.fx.GraphModule`` that pickles with its graphs and
state, and whose ``state_dict`` carries the record of how it was built (``maskfx.record``).

fx pickles a GraphModule as its generated code and traces that code again at load: node names
and the nodes' marks (which ``collapse`` and ``structure`` read) would be lost, and a
``DualGraphModule`` would come back as a plain module of its current graph. Here each graph is
pickled as data, node by node (op, name, target, arguments, meta), and rebuilt with
``Graph.create_node``: the same graphs, names and marks included, in a process that never traced
the model and without the tracer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_aggregate, map_arg

from maskfx.record import StateMismatchError, encode, mismatch, read_record, record_of
from maskfx.state import get_state


@dataclass(frozen=True)
class _NodeRef:
    """A node argument, by the node's name."""

    name: str


def _portable(value: Any) -> Any:
    """Node meta as data any process can load: each class tracing recorded (``nn_module_stack``'s
    modules, ShapeProp's value types) by its qualified name, since a model's classes need not be
    importable where it loads (nor are they for fx's own pickling); no memory format (``None``,
    unknown), which pickle's protocol 2, torch.save's, cannot write and nothing here reads."""
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, torch.memory_format):
        return None
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        items = [_portable(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


@dataclass
class SavedGraph:
    """An ``fx.Graph`` as data: per node its op, name, target, args, kwargs, type and meta."""

    nodes: list[tuple]

    @staticmethod
    def of(graph: fx.Graph) -> SavedGraph:
        def by_name(node: fx.Node) -> _NodeRef:
            return _NodeRef(node.name)

        return SavedGraph([(n.op, n.name, n.target, map_arg(n.args, by_name), map_arg(n.kwargs, by_name), n.type,
                            _portable(n.meta)) for n in graph.nodes])

    def graph(self) -> fx.Graph:
        graph, env = fx.Graph(), {}

        def resolve(arg: Any) -> Any:
            return env[arg.name] if isinstance(arg, _NodeRef) else arg

        for op, name, target, args, kwargs, type_expr, meta in self.nodes:
            node = graph.create_node(op, target, map_aggregate(args, resolve), map_aggregate(kwargs, resolve), name,
                                     type_expr)
            node.meta = meta
            env[name] = node
        return graph


def _defining_class(gm: fx.GraphModule) -> type:
    """The class ``gm`` was made as: fx gives each instance its own local subclass, which pickle
    cannot name."""
    return next(c for c in type(gm).__mro__ if "<locals>" not in c.__qualname__)


def _restore(cls: type, class_name: str, body: dict[str, Any], graphs: dict[str, SavedGraph]) -> MaskfxGraphModule:
    """Unpickle a ``MaskfxGraphModule``: its attributes as they were, then its graphs."""
    gm = cls.__new__(cls)
    gm.__class__.__name__ = class_name
    gm.__dict__.update(body)
    gm._adopt_graphs({name: saved.graph() for name, saved in graphs.items()})
    return gm


class MaskfxGraphModule(fx.GraphModule):
    """What ``transform``, ``freeze`` and ``collapse`` return; its state lives in
    ``meta["maskfx"]``.

    Pickling keeps the graph (see the module's docstring). ``state_dict`` holds the record of the
    transform that built the net under ``_extra_state``; ``load_state_dict`` refuses a state whose
    record differs (``StateMismatchError``, naming the difference). A state without a record
    (saved by an older maskfx, or another model's) is what torch makes of any missing key: a
    strict load refuses it (``Missing key(s) in state_dict: "_extra_state"``), since nothing says
    it fits this net; ``load_state_dict(state, strict=False)`` loads it unchecked, as before, and
    lists the key in ``missing_keys``.
    """

    def _saved_graphs(self) -> dict[str, fx.Graph]:
        """The graphs pickling keeps, by attribute name."""
        return {"_graph": self.graph}

    def _adopt_graphs(self, graphs: dict[str, fx.Graph]) -> None:
        """Take back the graphs of ``_saved_graphs`` after unpickling."""
        self.graph = graphs["_graph"]

    def __reduce__(self) -> tuple:
        graphs = self._saved_graphs()
        body = {k: v for k, v in self.__dict__.items() if k not in graphs and k != "_graph"}
        return _restore, (_defining_class(self), type(self).__name__, body,
                          {name: SavedGraph.of(graph) for name, graph in graphs.items()})

    def get_extra_state(self) -> torch.Tensor:
        return encode(record_of(get_state(self)))

    def set_extra_state(self, state: Any) -> None:
        own = get_state(self)
        problem = mismatch(read_record(state), record_of(own), own.configs)
        if problem:
            raise StateMismatchError(problem)
