"""Jumpout pass: a Jumpout after every rectifier call site (ReLU, ReLU6), or in place of each
Dropout after one (``JumpoutConfig.placement``); collapse removes them all.

Jumpout's rate normalisation (modification II) divides by ``q+``, the share of positive units,
which assumes the zeros of a rectifier mark the inactive units. ReLU6 (and any Hardtanh clipped
at 0 below) keeps that; SiLU, GELU, Hardswish, Sigmoid, Tanh, LeakyReLU and the like do not, so
their call sites get no Jumpout and are listed, with the reason, in the summary's rejected list.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from maskfx.graph.marks import attribute_base, call_site_locations, owner
from maskfx.graph.surgery import bypass, fresh_name, insert_module_after, is_dropout, is_relu, \
    module_of, nodes_calling, replace_with_module
from maskfx.state import Rejection, Rewrite, Site
from maskfx.techniques.jumpout.config import JumpoutConfig
from maskfx.techniques.jumpout.layers import Jumpout

TECHNIQUE = "jumpout"
CONFIG = JumpoutConfig
LAYERS = (Jumpout,)
HARDTANH_FUNCTIONS = frozenset({F.hardtanh, F.hardtanh_})
NOT_RECTIFIERS = {  # activations left alone: their spellings (module type, functions, methods)
    "SiLU": (nn.SiLU, F.silu), "GELU": (nn.GELU, F.gelu), "Hardswish": (nn.Hardswish, F.hardswish),
    "Hardsigmoid": (nn.Hardsigmoid, F.hardsigmoid), "Mish": (nn.Mish, F.mish),
    "Sigmoid": (nn.Sigmoid, torch.sigmoid, torch.sigmoid_, "sigmoid", "sigmoid_"),
    "Tanh": (nn.Tanh, torch.tanh, torch.tanh_, "tanh", "tanh_"),
    "LeakyReLU": (nn.LeakyReLU, F.leaky_relu, F.leaky_relu_), "PReLU": (nn.PReLU, F.prelu),
    "RReLU": (nn.RReLU, F.rrelu, F.rrelu_), "ELU": (nn.ELU, F.elu, F.elu_), "CELU": (nn.CELU, F.celu, F.celu_),
    "SELU": (nn.SELU, F.selu, torch.selu, torch.selu_), "Softplus": (nn.Softplus, F.softplus),
    "Softsign": (nn.Softsign, F.softsign), "LogSigmoid": (nn.LogSigmoid, F.logsigmoid),
    "Hardtanh": (nn.Hardtanh, *HARDTANH_FUNCTIONS),  # unless clipped at 0 below: then a rectifier
}
KIND = {spelling: kind for kind, spellings in NOT_RECTIFIERS.items() for spelling in spellings}
NOT_A_RECTIFIER = "is not a rectifier: Jumpout's rate normalisation counts the positive units of a ReLU-like output"
EXAMPLES = 3  # locations a rejection names before counting the rest


def _hardtanh_bounds(gm: fx.GraphModule, node: fx.Node) -> tuple | None:
    """``(min_val, max_val)`` of a Hardtanh call (``nn.ReLU6`` is one), else None."""
    module = module_of(gm, node)
    if isinstance(module, nn.Hardtanh):
        return module.min_val, module.max_val
    if node.op != "call_function" or node.target not in HARDTANH_FUNCTIONS:
        return None
    defaults = {"min_val": -1.0, "max_val": 1.0}  # F.hardtanh's
    given = dict(zip(defaults, node.args[1:3]))
    return tuple(node.kwargs.get(name, given.get(name, default)) for name, default in defaults.items())


def is_rectifier(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A ReLU in any spelling, ``nn.ReLU6``, ``F.relu6``, or a Hardtanh clipped at 0 below
    (``F.hardtanh(x, 0, 6)``): outputs whose zeros are the inactive units."""
    if is_relu(gm, node) or (node.op == "call_function" and node.target is F.relu6):
        return True
    bounds = _hardtanh_bounds(gm, node)
    return bounds is not None and all(isinstance(b, (int, float)) for b in bounds) and bounds[0] == 0 < bounds[1]


def _other_activation(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The kind (``"SiLU"``, ...) of an activation that is not a rectifier, else None."""
    if node.op == "call_module":
        kind = KIND.get(type(module_of(gm, node)))
    else:
        kind = KIND.get(node.target) if node.op in ("call_function", "call_method") else None
    return kind if kind is not None and not is_rectifier(gm, node) else None


def _selected(name: str, config: JumpoutConfig) -> bool:
    included = not config.include or any(fnmatchcase(name, p) for p in config.include)
    return included and not any(fnmatchcase(name, p) for p in config.exclude)


def _describe_dropout(gm: fx.GraphModule, node: fx.Node) -> str:
    module = module_of(gm, node)
    p = module.p if module is not None else node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
    where = f" '{node.target}'" if module is not None else ""
    return f"Dropout{where} (p={p})"


def _free_activations(gm: fx.GraphModule) -> dict[fx.Node, str]:
    """Activation call sites (rectifiers and others) no other technique owns, with their locations,
    counted together so that a site and a rejected call never share a name. A Blockout head
    regularises itself (Blockout generalises dropout), so its ReLUs are left alone."""
    nodes = [n for n in gm.graph.nodes if is_rectifier(gm, n) or _other_activation(gm, n)]
    return {n: location for n, location in call_site_locations(nodes).items() if owner(n) is None}


def _free_rectifiers(gm: fx.GraphModule) -> dict[fx.Node, str]:
    return {n: location for n, location in _free_activations(gm).items() if is_rectifier(gm, n)}


def _rejected_activations(gm: fx.GraphModule, activations: dict[fx.Node, str],
                          config: JumpoutConfig) -> list[Rejection]:
    """One rejection per kind of activation left alone, with its count and first locations: the
    reason is the same at every site, and a model has dozens of them (efficientnet_b0: 49 SiLU,
    16 Sigmoid), so a line per site would bury the summary."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for node, location in activations.items():
        kind = _other_activation(gm, node)
        if kind and _selected(location, config):
            by_kind[kind].append(location)
    return [Rejection(TECHNIQUE, _sites_of(kind, locations), f"{kind} {NOT_A_RECTIFIER}")
            for kind, locations in by_kind.items()]


def _sites_of(kind: str, locations: list[str]) -> str:
    """``"49 SiLU call sites (features.0.2, features.1.0.block.0.2, features.1.0.block.1.activation and 46 more)"``."""
    more = len(locations) - EXAMPLES
    named = ", ".join(locations[:EXAMPLES]) + (f" and {more} more" if more > 0 else "")
    return f"{len(locations)} {kind} call site{'s' * (len(locations) > 1)} ({named})"


def _after_every_rectifier(gm: fx.GraphModule, config: JumpoutConfig) -> Rewrite:
    """``placement="relu"``: a Jumpout after each rectifier (ReLU, ReLU6); a Dropout that is its
    only user is replaced. Other activations are rejected by kind."""
    activations = _free_activations(gm)
    sites = []
    for node, location in activations.items():
        if not is_rectifier(gm, node) or not _selected(location, config):
            continue
        name = fresh_name(gm, attribute_base(TECHNIQUE, location))
        users = list(node.users)
        if config.replace_dropout and len(users) == 1 and is_dropout(gm, users[0]):
            detail = f"replaced {_describe_dropout(gm, users[0])}"
            replace_with_module(gm, users[0], name, Jumpout(**config.layer_kwargs()), (node,))
        else:
            detail = ""
            insert_module_after(gm, node, name, Jumpout(**config.layer_kwargs()))
        sites.append(Site(TECHNIQUE, name, location, detail))
    notes = [] if sites else ["jumpout: no ReLU or ReLU6 call site to put a Jumpout after; nothing was inserted"]
    return Rewrite(sites, notes, _rejected_activations(gm, activations, config))


def _at_existing_dropouts(gm: fx.GraphModule, config: JumpoutConfig) -> Rewrite:
    """``placement="dropout"``: each Dropout that reads a rectifier becomes a Jumpout on it (other
    readers of the rectifier keep the undropped value, as before). Other Dropouts stay, with a note."""
    rectifiers = _free_rectifiers(gm)
    dropouts = [n for n in gm.graph.nodes if is_dropout(gm, n) and owner(n) is None]
    after_rectifier = [n for n in dropouts if n.args[0] in rectifiers]
    notes = [f"jumpout: kept {_describe_dropout(gm, n)}: its input is not a ReLU or ReLU6"
             for n in dropouts if n not in after_rectifier]
    if not after_rectifier:
        notes.append("jumpout: placement='dropout' found no Dropout after a ReLU or ReLU6; nothing was inserted")
    sites = []
    for dropout in after_rectifier:
        rectifier = dropout.args[0]
        location = rectifiers[rectifier]
        if not _selected(location, config):
            continue
        name = fresh_name(gm, attribute_base(TECHNIQUE, location))
        detail = f"replaced {_describe_dropout(gm, dropout)}"
        replace_with_module(gm, dropout, name, Jumpout(**config.layer_kwargs()), (rectifier,))
        sites.append(Site(TECHNIQUE, name, location, detail))
    return Rewrite(sites, notes)


PLACE = {"relu": _after_every_rectifier, "dropout": _at_existing_dropouts}


def rewrite(gm: fx.GraphModule, config: JumpoutConfig, example_inputs: tuple | None) -> Rewrite:
    return PLACE[config.placement](gm, config)


def freeze(gm: fx.GraphModule) -> None:
    """Jumpout learns no structure: nothing to fix."""


@dataclass(frozen=True)
class JumpoutLowered:
    """How many Jumpout layers collapse removed."""

    removed: int

    def notes(self) -> list[str]:
        return [f"jumpout: removed {self.removed} layers (identity at inference)"] if self.removed else []


def collapse(gm: fx.GraphModule, mode: str, config: JumpoutConfig) -> JumpoutLowered:
    """Jumpout is the identity at inference: both modes simply remove it."""
    removed = [node for node, _ in nodes_calling(gm, Jumpout)]
    for node in removed:
        bypass(gm, node)
    return JumpoutLowered(len(removed))
