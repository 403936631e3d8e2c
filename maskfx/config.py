"""What technique configs share, and the budget's config. Each config validates itself on
construction, so a bad value raises ``UserError`` naming the field before ``transform`` touches
anything."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from maskfx.errors import UserError


def check_patterns(name: str, value: Any) -> tuple[str, ...]:
    """``value`` (one glob pattern, or a list or tuple of them) as a tuple of patterns."""
    if isinstance(value, str):
        value = (value,)
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise UserError(f"{name} must be a glob pattern or a list or tuple of them (str), got {value!r}")
    return tuple(value)


Config = TypeVar("Config")


def resolve(argument: str, value: Any, config_type: type[Config]) -> Config | None:
    """Map a technique argument (``None``/``False``, ``True``, or a config) to a config or ``None``."""
    if value is None or value is False:
        return None
    if value is True:
        return config_type()
    if isinstance(value, config_type):
        return value
    raise UserError(f"{argument} must be None, False, True or a {config_type.__name__}, got {value!r}")


RESOURCE_NAMES = {"macs": "MACs", "params": "parameters"}
MULTIPLIER_RANGE = (1e-3, 1e7)  # where the budget penalty's multiplier may start and move
DEEP_CUT = 0.25  # a budget under this fraction is a deep cut: its multiplier starts at DEEP_CUT_MULTIPLIER
DEEP_CUT_MULTIPLIER = 3.0
DEFAULT_MULTIPLIER = 1.0  # the start at DEEP_CUT and above


@dataclass(frozen=True)
class Budget:
    """``macs``: the fraction of the original model's MACs (at the example input) that the pruned
    model may keep, in (0, 1]; ``params``: the same for its parameters; one or both. ``warmup``:
    the fraction of the structure-learning steps over which each target anneals from 1 to its
    fraction; the rest learns at the targets. ``initial_multiplier``: the penalty's multiplier at
    the first structure-learning step (it then adapts, ``maskfx.budget``); a larger start makes the
    gates learn more of a deep cut before ``freeze`` selects the rest. ``None`` (the default) picks
    it from the cut's depth (``start_multiplier``; ``maskfx.budget``'s docstring has the
    measurements)."""

    macs: float | None = None
    warmup: float = 0.5
    params: float | None = None
    initial_multiplier: float | None = None

    def __post_init__(self) -> None:
        if self.macs is None and self.params is None:
            raise UserError("a budget needs macs= or params= (or both): fractions in (0, 1] of the original's")
        for name, value in self.targets().items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise UserError(f"budget {name} must be a fraction in (0, 1] of the original model's "
                                f"{RESOURCE_NAMES[name]}, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup <= 1:
            raise UserError(f"budget warmup must be a fraction in [0, 1], got {self.warmup!r}")
        low, high, start = *MULTIPLIER_RANGE, self.initial_multiplier
        if start is not None and (isinstance(start, bool) or not isinstance(start, (int, float))
                                  or not low <= start <= high):
            raise UserError(f"budget initial_multiplier must be None or a number in [{low:g}, {high:g}], got {start!r}")

    def targets(self) -> dict[str, float]:
        """Each resource the budget bounds, with its fraction of the original's."""
        return {name: value for name, value in (("macs", self.macs), ("params", self.params)) if value is not None}

    def start_multiplier(self) -> float:
        """The penalty's multiplier at the first structure step: ``initial_multiplier`` when given;
        otherwise ``DEFAULT_MULTIPLIER``, or ``DEEP_CUT_MULTIPLIER`` when a target is under
        ``DEEP_CUT``. Started at 1, a deep cut's gates stop far above it and ``freeze`` makes the rest
        of the cut by near-tied probabilities; started at 3 they learn most of it, which measured
        better at 0.154 of the MACs and under and no better, resolved, at 0.303 and above
        (``maskfx.budget``; between the two is not measured)."""
        if self.initial_multiplier is not None:
            return float(self.initial_multiplier)
        return DEEP_CUT_MULTIPLIER if min(self.targets().values()) < DEEP_CUT else DEFAULT_MULTIPLIER
