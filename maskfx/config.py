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


@dataclass(frozen=True)
class Budget:
    """``macs``: the fraction of the original model's MACs (at the example input) that the pruned
    model may keep, in (0, 1]. ``warmup``: the fraction of the structure-learning steps over which
    the target anneals from 1 to ``macs``; the rest learns at the target."""

    macs: float
    warmup: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.macs, bool) or not isinstance(self.macs, (int, float)) or not 0 < self.macs <= 1:
            raise UserError(f"budget macs must be a fraction in (0, 1] of the original model's MACs, got {self.macs!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup <= 1:
            raise UserError(f"budget warmup must be a fraction in [0, 1], got {self.warmup!r}")
