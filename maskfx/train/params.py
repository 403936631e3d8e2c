"""Optimizer parameter groups that keep structure parameters apart from weights."""
from __future__ import annotations

from torch import nn

from maskfx.errors import UserError


def structure_parameters(net: nn.Module, optimizer_momentum: bool | None = None) -> list[nn.Parameter]:
    """Learnable structure (cluster logits, connection masks) of every maskfx layer in ``net``.

    A maskfx layer declares its own through a ``structure_parameters()`` method; ``net`` may be
    such a layer itself. ``optimizer_momentum`` selects by the layer's ``optimizer_momentum``
    attribute (absent: ``False``), which says whether its paper updates them with the weights'
    momentum; ``None`` returns all.
    """
    found, seen = [], set()
    for module in net.modules():
        if not callable(getattr(module, "structure_parameters", None)):
            continue
        if optimizer_momentum is not None and getattr(module, "optimizer_momentum", False) != optimizer_momentum:
            continue
        for p in module.structure_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def param_groups(net: nn.Module, lr: float, mask_lr: float | None = None, weight_decay: float = 0.0,
                 mask_momentum: float | None = 0.0) -> list[dict]:
    """Groups for any ``torch.optim`` optimizer: weights (``lr``, ``weight_decay``), then the
    structure parameters (``mask_lr``, default ``lr``, never weight decay: decay would pull
    masks and cluster probabilities towards an arbitrary point).

    ``"structure"`` holds connection masks and gates with ``momentum=mask_momentum``: 0, the
    default, is MaskConnect's and GateConnect's update ``m <- clip(m - lr * dL/dm)`` (their
    Alg. 1; the momentum 0.9 of their recipes is the weights'), whatever momentum the optimizer
    gives the weights; ``None`` leaves it to the optimizer. ``"clusters"`` holds Blockout's cluster
    logits, which that paper trains with the network's optimizer, momentum included. Optimizers
    without a momentum (Adam) ignore the entry.
    """
    for name, value in (("lr", lr), ("mask_lr", lr if mask_lr is None else mask_lr),
                        ("weight_decay", weight_decay), ("mask_momentum", mask_momentum or 0.0)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise UserError(f"{name} must be a number >= 0, got {value!r}")
    masks, clusters = structure_parameters(net, False), structure_parameters(net, True)
    ids = {id(p) for p in masks + clusters}
    weights = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    shared = {"lr": lr if mask_lr is None else mask_lr, "weight_decay": 0.0}
    if masks:
        groups.append({"params": masks, **shared, "name": "structure",
                       **({} if mask_momentum is None else {"momentum": mask_momentum})})
    if clusters:
        groups.append({"params": clusters, **shared, "name": "clusters"})
    return groups
