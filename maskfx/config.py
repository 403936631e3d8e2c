"""What technique configs share. Each config validates itself on construction, so a bad value
raises ``UserError`` naming the field before ``transform`` touches anything."""
from __future__ import annotations

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
