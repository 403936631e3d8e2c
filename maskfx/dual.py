"""One model, two graphs: what a model computes in train mode and in eval mode, over one set of
modules.

torch.fx records ``self.training`` as a constant, so a single trace freezes every branch on it:
``F.dropout(x, p, training=self.training)``, a drop-path that returns early in eval, a
training-only auxiliary head. maskfx traces such a model in both modes, rewrites both graphs with
the same passes, and joins them here; ``train()``/``eval()`` switch the graph, as torchvision's
``DualGraphModule`` does. Both graphs call the same module objects, so a step taken in train mode
is what eval mode (and ``collapse``) sees.
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
from torch.fx.graph_module import _assign_attr

from maskfx.graph_module import MaskfxGraphModule


def attribute_targets(graph: fx.Graph) -> list[str]:
    """Qualified names of the modules and tensors a graph reads, in graph order, once each."""
    return list(dict.fromkeys(str(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")))


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
    return type(a) is type(b)


class DualGraphModule(MaskfxGraphModule):
    """A GraphModule with a train graph and an eval graph; ``train(mode)`` selects one.

    ``attributes`` maps every qualified name either graph reads to its module or tensor. It
    pickles with both graphs and comes back in the mode it was saved in.
    """

    def __init__(self, attributes: dict[str, Any], train_graph: fx.Graph, eval_graph: fx.Graph,
                 class_name: str = "GraphModule") -> None:
        super().__init__({t: attributes[t] for t in attribute_targets(eval_graph)}, eval_graph, class_name)
        for target in sorted(set(attribute_targets(train_graph)) - set(attribute_targets(eval_graph)),
                             key=lambda t: t.count(".")):
            _assign_attr(attributes[target], self, target)
        self.train_graph, self.eval_graph = train_graph, eval_graph
        self.train(self.training)

    def _saved_graphs(self) -> dict[str, fx.Graph]:
        return {"train_graph": self.train_graph, "eval_graph": self.eval_graph}

    def _adopt_graphs(self, graphs: dict[str, fx.Graph]) -> None:
        self.train_graph, self.eval_graph = graphs["train_graph"], graphs["eval_graph"]
        self.graph = self.train_graph if self.training else self.eval_graph

    def train(self, mode: bool = True) -> "DualGraphModule":
        graph = self.train_graph if mode else self.eval_graph
        if self._graph is not graph:
            self.graph = graph  # the setter recompiles forward
        return super().train(mode)

    def attributes(self) -> dict[str, Any]:
        """Every module and tensor either graph reads, by qualified name."""
        targets = attribute_targets(self.eval_graph) + attribute_targets(self.train_graph)
        return {t: operator.attrgetter(t)(self) for t in dict.fromkeys(targets)}

    def eval_module(self) -> MaskfxGraphModule:
        """A one-graph module of the eval graph over the same modules and state (what ``collapse``
        lowers)."""
        module = MaskfxGraphModule({t: operator.attrgetter(t)(self) for t in attribute_targets(self.eval_graph)},
                                   copy.deepcopy(self.eval_graph), type(self).__name__)
        module.meta = dict(self.meta)
        return module

    def __deepcopy__(self, memo: dict[int, Any]) -> "DualGraphModule":
        attributes, train_graph, eval_graph, meta = copy.deepcopy(
            (self.attributes(), self.train_graph, self.eval_graph, self.meta), memo)
        copied = DualGraphModule(attributes, train_graph, eval_graph, type(self).__name__)
        copied.meta = meta
        return copied.train(self.training)


def join(eval_gm: fx.GraphModule, train_gm: fx.GraphModule, replaced: set[str]) -> DualGraphModule:
    """The two rewritten graphs over one set of modules.

    A name both graphs read is the eval graph's object: the rewrites name each site the same way
    in both graphs (``maskfx.graph.marks``), so the train graph trains what eval mode runs. What only
    the train graph reads (an auxiliary head, a site inside it) comes from its own copy.
    ``replaced`` names the modules the eval rewrite took out of the model: the train graph must
    not read them, or it would train a module eval mode no longer runs.
    """
    attributes = {t: operator.attrgetter(t)(eval_gm) for t in attribute_targets(eval_gm.graph)}
    for target in attribute_targets(train_gm.graph):
        value = operator.attrgetter(target)(train_gm)
        if target in replaced:
            raise RuntimeError(f"the train-mode graph still reads '{target}', which the eval-mode rewrite "
                               "replaced: the passes found different sites in the two graphs, because the "
                               "module around it computes something else in train mode. Keep that module "
                               "whole with transform(..., leaf_modules=[...]) or leave the technique off")
        if target not in attributes:
            attributes[target] = value
        elif not _same_kind(attributes[target], value):
            raise RuntimeError(f"'{target}' is a {type(value).__name__} in the train-mode graph and a "
                               f"{type(attributes[target]).__name__} in the eval-mode graph")
    return DualGraphModule(attributes, train_gm.graph, eval_gm.graph, type(eval_gm).__name__)


def eval_module(net: fx.GraphModule) -> fx.GraphModule:
    """``net`` itself when it has one graph, else a GraphModule of its eval graph."""
    return net.eval_module() if isinstance(net, DualGraphModule) else net
