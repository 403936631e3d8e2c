"""What maskfx records on a graph module, in ``gm.meta["maskfx"]`` (never in globals)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch.fx as fx

from maskfx.config import Budget
from maskfx.errors import UserError

if TYPE_CHECKING:
    from maskfx.collapse_report import CollapseReport

META_KEY = "maskfx"


@dataclass
class Site:
    """One rewrite: which maskfx module now stands where in the original model."""

    technique: str
    module: str  # attribute name of the maskfx module in the graph module ("" once collapsed away)
    location: str  # qualified name of the site in the original model
    detail: str = ""
    train_only: bool = False  # in a graph only train mode runs (e.g. an auxiliary head)


@dataclass
class Rejection:
    """A place that looked like a site of ``technique`` and is not one, and why."""

    technique: str
    location: str
    reason: str


@dataclass
class Rewrite:
    """What a pass did to one graph: its sites, notes for the summary, and the rejected candidates."""

    sites: list[Site]
    notes: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    record: Any = None  # what later stages (freeze, collapse, the budget) read of this rewrite


@dataclass
class MaskfxState:
    configs: dict[str, Any]  # technique name -> its config dataclass
    sites: list[Site]
    params_original: int
    collapsed: str | None = None  # None, "expected" or "prune"
    notes: list[str] = field(default_factory=list)  # what collapse changed beyond removing layers
    rejected: list[Rejection] = field(default_factory=list)
    collapse_report: CollapseReport | None = None  # set by collapse: what it lowered and what that changed
    records: dict[str, Any] = field(default_factory=dict)  # technique name -> what its pass recorded for later stages
    budget: Budget | None = None  # the MACs budget transform was given
    macs_original: int | None = None  # the original model's MACs at the example input (with a budget)
    allowed: dict[str, float] | None = None  # per resource, what the budget leaves to the gated layers (freeze meets it)


def get_state(gm: fx.GraphModule) -> MaskfxState:
    state = getattr(gm, "meta", {}).get(META_KEY)
    if not isinstance(state, MaskfxState):
        raise UserError("not a maskfx graph module: pass the result of maskfx.transform()")
    return state
