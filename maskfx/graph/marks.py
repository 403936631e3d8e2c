"""Node ownership and site naming: every ``node.meta`` key maskfx writes, in one place.

Passes mark the nodes they take over so later passes leave them alone, and name each site the
same way whichever graph (train or eval) they rewrite: a model whose forward depends on
``self.training`` is rewritten twice, and the two rewrites share a module only when they give
it the same name.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

import torch.fx as fx

OWNER = "maskfx_owner"  # the technique a node belongs to; other passes skip it
BLOCK = "maskfx_block"  # (chain index, block index) of the nodes of a residual block (MaskConnect)
RESNEXT = "maskfx_resnext"  # part of a ResNeXt module: block connectivity leaves it to GateConnect


def claim(nodes: Iterable[fx.Node], technique: str) -> None:
    """Mark ``nodes`` as ``technique``'s: the passes that run after it leave them alone."""
    for node in nodes:
        node.meta[OWNER] = technique


def owner(node: fx.Node) -> str | None:
    return node.meta.get(OWNER)


def scope_of(node: fx.Node) -> str:
    """Qualified name of the module whose forward created ``node`` ("" at the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if node.op == "call_module":
        return str(node.target)
    return next(reversed(stack.values()))[0] if stack else ""


def call_site_locations(nodes: Iterable[fx.Node]) -> dict[fx.Node, str]:
    """A location in the original model for each call site, stable across the train and eval
    graphs of one model.

    A module call is named by the module's path (a module called twice gives two sites of one
    location). A function or method call is named by its enclosing module, the function's name
    and its index among the calls of that function inside that module (``"layer1.0.relu"``,
    ``"layer1.0.relu_1"``, skipping names a module call site has), never by fx's graph-wide node
    counter, which a training-only branch elsewhere in the model would shift.
    """
    nodes = list(nodes)
    taken = {str(n.target) for n in nodes if n.op == "call_module"}
    seen: Counter[tuple[str, str]] = Counter()
    locations = {}
    for node in nodes:
        if node.op == "call_module":
            locations[node] = str(node.target)
            continue
        scope, function = scope_of(node), getattr(node.target, "__name__", str(node.target))
        while True:  # the next index of this function in this scope whose name no module has
            index = seen[scope, function]
            seen[scope, function] += 1
            name = function if index == 0 else f"{function}_{index}"
            location = f"{scope}.{name}" if scope else name
            if location not in taken:
                break
        locations[node] = location
    return locations


def attribute_base(technique: str, location: str) -> str:
    """The attribute name a pass gives the module it puts at ``location`` (before de-duplication)."""
    return re.sub(r"\W", "_", f"{technique}_{location}")


def block_name(nodes: Iterable[fx.Node]) -> str:
    """A group of nodes (a residual block) named by the longest module path all of them lie in."""
    nodes = list(nodes)
    scopes = [scope_of(n).split(".") for n in nodes if scope_of(n)]
    prefix = []
    for parts in zip(*scopes):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix) or nodes[-1].name
