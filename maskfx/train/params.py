"""Optimizer parameter groups that keep structure parameters apart from weights."""
from __future__ import annotations

from torch import nn


def structure_parameters(net: nn.Module) -> list[nn.Parameter]:
    """Learnable structure (cluster logits, connection masks) of every maskfx layer in ``net``.

    A maskfx layer declares its own through a ``structure_parameters()`` method; ``net`` may be
    such a layer itself.
    """
    found, seen = [], set()
    for module in net.modules():
        if callable(getattr(module, "structure_parameters", None)):
            for p in module.structure_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
    return found


def param_groups(net: nn.Module, lr: float, mask_lr: float | None = None,
                 weight_decay: float = 0.0) -> list[dict]:
    """Two groups for any ``torch.optim`` optimizer: weights (``lr``, ``weight_decay``) and the
    structure parameters (``mask_lr``, default ``lr``, never weight decay: decay would pull
    masks and cluster probabilities towards an arbitrary point)."""
    for name, value in (("lr", lr), ("mask_lr", lr if mask_lr is None else mask_lr),
                        ("weight_decay", weight_decay)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    structure = structure_parameters(net)
    ids = {id(p) for p in structure}
    weights = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    if structure:
        groups.append({"params": structure, "lr": lr if mask_lr is None else mask_lr,
                       "weight_decay": 0.0, "name": "structure"})
    return groups
