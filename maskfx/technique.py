"""What a technique is: the one protocol every folder under ``maskfx/techniques`` fits.

A technique's package module is its registry object: it names the technique, its config and its
layers, rewrites, freezes and collapses graphs, and says what the rest of maskfx needs to know of
it without naming it: its learned structure (``maskfx.structure``), the optimizer group of its
structure parameters (``param_groups``), the layers whose random draws data-parallel ranks share,
and its command-line flags. ``maskfx.techniques.PIPELINE`` lists them; the lifecycle, the
trainer and the CLI iterate that list.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
import torch.fx as fx
from torch import nn

from maskfx.state import Rewrite


@dataclass(frozen=True)
class LearnedSite:
    """One site's learned structure.

    ``values``: Blockout, the cluster probabilities ``P`` of one layer's nodes, ``(nodes, k)``;
    MaskConnect, the real mask over the block's candidate inputs, ``(candidates,)``; GateConnect,
    the gates of each branch over the previous module's branches, ``(branches, sources)``.
    ``keep``: the boolean structure that ``freeze`` fixes and ``collapse("prune")`` keeps (hard
    clusters; the K active inputs of each row). ``sources`` names MaskConnect's candidates.
    """

    technique: str
    location: str
    values: torch.Tensor
    keep: torch.Tensor
    frozen: bool
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParamGroup:
    """The ``param_groups`` group that the structure parameters of ``layers`` (each layer's
    ``structure_parameters()``) join. ``mask_momentum``: the group trains with ``param_groups``'
    ``mask_momentum`` (the paper updates them without the weights' momentum), else with the
    optimizer's own. Techniques naming one group share it."""

    name: str
    layers: tuple[type[nn.Module], ...]
    mask_momentum: bool


def positive_int(text: str) -> int:
    """An option value that counts something (clusters, inputs, pixels): an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    """A command-line option that sets the config field ``field`` (``--field-name``). Techniques
    declaring the same field share one option, which configures any of them."""

    field: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Flags:
    """A technique's command-line flags: ``--<name>`` (``help``) turns it on; ``options`` set
    fields of its config, which keeps its defaults for the rest."""

    help: str
    options: tuple[Option, ...] = ()


class Lowered(Protocol):
    """What one technique's collapse did, as fields: the technique's own frozen dataclass, which
    the ``CollapseReport`` carries (``Lowering.facts``); ``notes`` renders it for people, so
    nothing is known only as prose."""

    def notes(self) -> list[str]:
        """One line per fact worth reading in a summary (none is fine)."""


@runtime_checkable
class Technique(Protocol):
    """What a technique's package provides."""

    TECHNIQUE: str  # its name, also the keyword argument of maskfx.transform and the CLI flag
    CONFIG: type  # its config dataclass
    LAYERS: tuple[type[nn.Module], ...]  # the layers rewrite adds; collapse leaves none of them
    LEARNED: tuple[type[nn.Module], ...]  # layers whose eval forward reads learned structure: export refuses them
    DRAWS: tuple[type[nn.Module], ...]  # layers whose training forward draws structure: data-parallel ranks share it
    PARAM_GROUP: ParamGroup | None  # where its structure parameters train; None: it learns none
    FLAGS: Flags

    def rewrite(self, gm: fx.GraphModule, config: Any, example_inputs: tuple | None) -> Rewrite:
        """Find the sites in ``gm``'s graph and rewrite them in place."""

    def freeze(self, gm: fx.GraphModule) -> None:
        """Fix this technique's learned structure for fine-tuning (``maskfx.freeze``)."""

    def collapse(self, gm: fx.GraphModule, mode: str, config: Any) -> Lowered:
        """Lower this technique's layers to plain ones (``mode``: "expected" or "prune") and say
        what that did."""

    def structure(self, gm: fx.GraphModule) -> list[LearnedSite]:
        """The learned structure of its sites in the eval graph ``gm``, in graph order."""


def structure_parameters(net: nn.Module, layers: type | tuple[type, ...] = nn.Module) -> list[nn.Parameter]:
    """Learnable structure (cluster logits, connection masks) of the ``layers`` in ``net`` (every
    maskfx layer by default), once each.

    A maskfx layer declares its own through a ``structure_parameters()`` method; ``net`` may be
    such a layer itself.
    """
    found, seen = [], set()
    for module in net.modules():
        if not (isinstance(module, layers) and callable(getattr(module, "structure_parameters", None))):
            continue
        for p in module.structure_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def no_structure(gm: fx.GraphModule) -> list[LearnedSite]:
    """The structure view of a technique that learns none."""
    return []
