"""Jumpout pass: one Jumpout after every ReLU call site; collapse removes them all."""
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


def _dropout_detail(gm: fx.GraphModule, node: fx.Node) -> str:
    module = module_of(gm, node)
    p = module.p if module is not None else node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
    where = f" '{node.target}'" if module is not None else ""
    return f"replaced Dropout{where} (p={p})"


def rewrite(gm: fx.GraphModule, config: JumpoutConfig, example_inputs: tuple | None) -> Rewrite:
    sites = []
    # A Blockout head regularises itself (Blockout generalises dropout): its ReLUs are left alone.
    relus = [n for n in gm.graph.nodes if is_relu(gm, n)]
    for node, location in call_site_locations(relus).items():
        if owner(node) is not None or not _selected(location, config):
            continue
        name = fresh_name(gm, attribute_base(TECHNIQUE, location))
        users = list(node.users)
        if config.replace_dropout and len(users) == 1 and is_dropout(gm, users[0]):
            detail = _dropout_detail(gm, users[0])
            replace_with_module(gm, users[0], name, Jumpout(**config.layer_kwargs()), (node,))
        else:
            detail = ""
            insert_module_after(gm, node, name, Jumpout(**config.layer_kwargs()))
        sites.append(Site(TECHNIQUE, name, location, detail))
    return Rewrite(sites)


def collapse(gm: fx.GraphModule, mode: str, config: JumpoutConfig) -> list[str]:
    """Jumpout is the identity at inference: both modes simply remove it."""
    removed = [node for node, _ in nodes_calling(gm, Jumpout)]
    for node in removed:
        bypass(gm, node)
    return [f"jumpout: removed {len(removed)} layers (identity at inference)"] if removed else []
