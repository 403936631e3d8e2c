"""Jumpout pass: a Jumpout after every ReLU call site, or in place of each Dropout after a ReLU
(``JumpoutConfig.placement``); collapse removes them all."""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from maskfx.config import JumpoutConfig
from maskfx.nn import Jumpout
from maskfx.passes.graph import bypass, finish, fresh_name, insert_module_after, is_dropout, module_of, \
    nodes_calling, replace_with_module, scope_of
from maskfx.state import OWNER, Site

TECHNIQUE = "jumpout"
RELU_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_})
RELU_METHODS = frozenset({"relu", "relu_"})


def is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in RELU_METHODS
    return type(module_of(gm, node)) is nn.ReLU


def site_name(node: fx.Node) -> str:
    """A ReLU module's path, or the enclosing module's path plus the node name for functional ReLUs."""
    if node.op == "call_module":
        return str(node.target)
    scope = scope_of(node)
    return f"{scope}.{node.name}" if scope else node.name


def _selected(name: str, config: JumpoutConfig) -> bool:
    included = not config.include or any(fnmatchcase(name, p) for p in config.include)
    return included and not any(fnmatchcase(name, p) for p in config.exclude)


def _describe_dropout(gm: fx.GraphModule, node: fx.Node) -> str:
    module = module_of(gm, node)
    p = module.p if module is not None else node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
    where = f" '{node.target}'" if module is not None else ""
    return f"Dropout{where} (p={p})"


def _free_relus(gm: fx.GraphModule) -> list[fx.Node]:
    """ReLU call sites no other technique owns: a Blockout head regularises itself (Blockout
    generalises dropout), so its ReLUs are left alone."""
    return [n for n in gm.graph.nodes if is_relu(gm, n) and OWNER not in n.meta]


def _after_every_relu(gm: fx.GraphModule, config: JumpoutConfig) -> tuple[list[Site], list[str]]:
    """``placement="relu"``: a Jumpout after each ReLU; a Dropout that is its only user is replaced."""
    sites = []
    for node in _free_relus(gm):
        location = site_name(node)
        if not _selected(location, config):
            continue
        name = fresh_name(gm, f"{node.name}_jumpout")
        users = list(node.users)
        if config.replace_dropout and len(users) == 1 and is_dropout(gm, users[0]):
            detail = f"replaced {_describe_dropout(gm, users[0])}"
            replace_with_module(gm, users[0], name, Jumpout(**config.layer_kwargs()), (node,))
        else:
            detail = ""
            insert_module_after(gm, node, name, Jumpout(**config.layer_kwargs()))
        sites.append(Site(TECHNIQUE, name, location, detail))
    return sites, []


def _at_existing_dropouts(gm: fx.GraphModule, config: JumpoutConfig) -> tuple[list[Site], list[str]]:
    """``placement="dropout"``: each Dropout that reads a ReLU becomes a Jumpout on that ReLU (other
    readers of the ReLU keep the undropped value, as before). Other Dropouts stay, with a note."""
    relus = set(_free_relus(gm))
    dropouts = [n for n in gm.graph.nodes if is_dropout(gm, n) and OWNER not in n.meta]
    after_relu = [n for n in dropouts if n.args[0] in relus]
    notes = [f"jumpout: kept {_describe_dropout(gm, n)}: its input is not a ReLU"
             for n in dropouts if n not in after_relu]
    if not after_relu:
        notes.append("jumpout: placement='dropout' found no Dropout after a ReLU; nothing was inserted")
    sites = []
    for dropout in after_relu:
        relu = dropout.args[0]
        location = site_name(relu)
        if not _selected(location, config):
            continue
        name = fresh_name(gm, f"{relu.name}_jumpout")
        detail = f"replaced {_describe_dropout(gm, dropout)}"
        replace_with_module(gm, dropout, name, Jumpout(**config.layer_kwargs()), (relu,))
        sites.append(Site(TECHNIQUE, name, location, detail))
    return sites, notes


PLACE = {"relu": _after_every_relu, "dropout": _at_existing_dropouts}


def rewrite(gm: fx.GraphModule, config: JumpoutConfig, example_inputs: tuple | None) -> tuple[list[Site], list[str]]:
    sites, notes = PLACE[config.placement](gm, config)
    finish(gm)
    return sites, notes


def collapse(gm: fx.GraphModule, mode: str, config: JumpoutConfig) -> list[str]:
    """Jumpout is the identity at inference: both modes simply remove it."""
    removed = [node for node, _ in nodes_calling(gm, Jumpout)]
    for node in removed:
        bypass(gm, node)
    finish(gm)
    return [f"jumpout: removed {len(removed)} layers (identity at inference)"] if removed else []
