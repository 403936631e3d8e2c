"""Optimizer parameter groups that keep structure parameters apart from weights, and the mask
clipping that completes an optimizer's step on them."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from maskfx import techniques
from maskfx.errors import UserError
from maskfx.layers.kofn import clip_masks
from maskfx.technique import structure_parameters


def param_groups(net: nn.Module, lr: float, mask_lr: float | None = None, weight_decay: float = 0.0,
                 mask_momentum: float | None = 0.0) -> list[dict]:
    """Groups for any ``torch.optim`` optimizer: weights (``lr``, ``weight_decay``), then the
    structure parameters (``mask_lr``, default ``lr``, never weight decay: decay would pull
    masks and cluster probabilities towards an arbitrary point), in the group each technique
    names (``ParamGroup``).

    A group whose technique's paper updates its parameters without the weights' momentum gets
    ``momentum=mask_momentum``: 0, the default, is MaskConnect's and GateConnect's update
    ``m <- clip(m - lr * dL/dm)`` (their Alg. 1; the momentum 0.9 of their recipes is the
    weights'); ``None`` leaves it to the optimizer. Blockout's ``"clusters"`` train with the
    network's optimizer, momentum included. Optimizers without a momentum (Adam) ignore the entry.
    """
    for name, value in (("lr", lr), ("mask_lr", lr if mask_lr is None else mask_lr),
                        ("weight_decay", weight_decay), ("mask_momentum", mask_momentum or 0.0)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise UserError(f"{name} must be a number >= 0, got {value!r}")
    shared = {"lr": lr if mask_lr is None else mask_lr, "weight_decay": 0.0}
    structure: dict[str, dict] = {}
    taken: set[int] = set()
    for rule in (t.PARAM_GROUP for t in techniques.PIPELINE if t.PARAM_GROUP is not None):
        found = [p for p in structure_parameters(net, rule.layers) if id(p) not in taken]
        taken.update(id(p) for p in found)
        group = structure.setdefault(rule.name, {"params": [], **shared, "name": rule.name})
        group["params"] += found
        if rule.mask_momentum and mask_momentum is not None:
            group["momentum"] = mask_momentum
    weights = [p for p in net.parameters() if p.requires_grad and id(p) not in taken]
    return [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
            *(g for g in structure.values() if g["params"])]


def clip_masks_after_steps(optimizer: torch.optim.Optimizer, net: nn.Module) -> RemovableHandle:
    """Clip ``net``'s K-of-N masks (``maskfx.clip_masks``) after every step of ``optimizer``, the
    one that updates them: the papers' ``m <- clip(m - lr * dL/dm)`` with any optimizer. The hook
    is this optimizer's alone (``register_step_post_hook``), so other optimizers and other models
    in the process are left as they are. Returns the handle that removes it.
    """
    def clip(_optimizer: torch.optim.Optimizer, _args: tuple, _kwargs: dict) -> None:
        clip_masks(net)

    return optimizer.register_step_post_hook(clip)
