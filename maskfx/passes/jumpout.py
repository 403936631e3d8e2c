"""Jumpout pass: a Jumpout after every ReLU call site, or in place of each Dropout after a ReLU
(``JumpoutConfig.placement``); collapse removes them all."""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch.fx as fx

from maskfx.config import JumpoutConfig
from maskfx.marks import attribute_base, call_site_locations, owner
from maskfx.nn import Jumpout
from maskfx.passes.graph import bypass, fresh_name, insert_module_after, is_dropout, is_relu, \
    module_of, nodes_calling, replace_with_module
from maskfx.state import Rewrite, Site

TECHNIQUE = "jumpout"
CONFIG = JumpoutConfig
LAYERS = (Jumpout,)
def _selected(name: str, config: JumpoutConfig) -> bool:
    included = not config.include or any(fnmatchcase(name, p) for p in config.include)
    return included and not any(fnmatchcase(name, p) for p in config.exclude)


def _describe_dropout(gm: fx.GraphModule, node: fx.Node) -> str:
    module = module_of(gm, node)
    p = module.p if module is not None else node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
    where = f" '{node.target}'" if module is not None else ""
    return f"Dropout{where} (p={p})"


def _free_relus(gm: fx.GraphModule) -> dict[fx.Node, str]:
    """ReLU call sites no other technique owns, with their locations: a Blockout head regularises
    itself (Blockout generalises dropout), so its ReLUs are left alone."""
    relus = [n for n in gm.graph.nodes if is_relu(gm, n)]
    return {n: location for n, location in call_site_locations(relus).items() if owner(n) is None}


def _after_every_relu(gm: fx.GraphModule, config: JumpoutConfig) -> Rewrite:
    """``placement="relu"``: a Jumpout after each ReLU; a Dropout that is its only user is replaced."""
    sites = []
    for node, location in _free_relus(gm).items():
        if not _selected(location, config):
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
    return Rewrite(sites)


def _at_existing_dropouts(gm: fx.GraphModule, config: JumpoutConfig) -> Rewrite:
    """``placement="dropout"``: each Dropout that reads a ReLU becomes a Jumpout on that ReLU (other
    readers of the ReLU keep the undropped value, as before). Other Dropouts stay, with a note."""
    relus = _free_relus(gm)
    dropouts = [n for n in gm.graph.nodes if is_dropout(gm, n) and owner(n) is None]
    after_relu = [n for n in dropouts if n.args[0] in relus]
    notes = [f"jumpout: kept {_describe_dropout(gm, n)}: its input is not a ReLU"
             for n in dropouts if n not in after_relu]
    if not after_relu:
        notes.append("jumpout: placement='dropout' found no Dropout after a ReLU; nothing was inserted")
    sites = []
    for dropout in after_relu:
        relu = dropout.args[0]
        location = relus[relu]
        if not _selected(location, config):
            continue
        name = fresh_name(gm, attribute_base(TECHNIQUE, location))
        detail = f"replaced {_describe_dropout(gm, dropout)}"
        replace_with_module(gm, dropout, name, Jumpout(**config.layer_kwargs()), (relu,))
        sites.append(Site(TECHNIQUE, name, location, detail))
    return Rewrite(sites, notes)


PLACE = {"relu": _after_every_relu, "dropout": _at_existing_dropouts}


def rewrite(gm: fx.GraphModule, config: JumpoutConfig, example_inputs: tuple | None) -> Rewrite:
    return PLACE[config.placement](gm, config)


def freeze(gm: fx.GraphModule) -> None:
    """Jumpout learns no structure: nothing to fix."""


def collapse(gm: fx.GraphModule, mode: str, config: JumpoutConfig) -> list[str]:
    """Jumpout is the identity at inference: both modes simply remove it."""
    removed = [node for node, _ in nodes_calling(gm, Jumpout)]
    for node in removed:
        bypass(gm, node)
    return [f"jumpout: removed {len(removed)} layers (identity at inference)"] if removed else []
