"""The record a maskfx graph module puts in its ``state_dict``: how the net was built, so that a
state loads only into a net built the same way.

A state_dict holds values, not wiring: a frozen MaskConnect state of K = 1 has the same keys as
one of K = 2, and loaded into a K = 2 net it would run K = 1 while the summary says K = 2. The
record names each technique's config (as plain values), whether and how the net was collapsed,
and a digest of its sites (technique, module, location), and ``load_state_dict`` compares it
with the net's own (``MaskfxGraphModule.set_extra_state``).

It is stored under ``_extra_state`` as JSON in a uint8 tensor: every tool that reads
a state_dict expects tensors (``torch.equal`` over two state_dicts, a replica digest, safetensors),
and ``torch.load(weights_only=True)`` reads it; ``read_record`` decodes it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch

from maskfx.errors import UserError
from maskfx.state import MaskfxState

FORMAT = "maskfx-record/1"
RECORD_KEY = "_extra_state"  # torch's key for a module's extra state; the record is the root's
RECORD_FIELDS = {"format", "configs", "collapsed", "sites"}


class StateMismatchError(UserError):
    """A state_dict saved from a net that another ``transform`` (or ``collapse``) call built."""


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), so saved and current records compare."""
    return json.loads(json.dumps(value))


def sites_digest(state: MaskfxState) -> str:
    """A hash of where maskfx put what: each site's technique, module, location and mode."""
    sites = [[s.technique, s.module, s.location, s.train_only] for s in state.sites]
    return hashlib.sha256(json.dumps(sites).encode()).hexdigest()


def record_of(state: MaskfxState) -> dict[str, Any]:
    """The record of a net with this maskfx state, as plain values."""
    configs = {name: {"config": type(config).__name__, "fields": dataclasses.asdict(config)}
               for name, config in state.configs.items()}
    return _plain({"format": FORMAT, "configs": configs, "collapsed": state.collapsed,
                   "sites": sites_digest(state)})


def encode(record: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(record).encode()), dtype=torch.uint8)


def read_record(value: Any) -> dict[str, Any]:
    """The record stored under ``_extra_state`` (a state_dict's value, as saved or loaded)."""
    try:
        record = json.loads(bytes(value.tolist()).decode())
    except (AttributeError, TypeError, ValueError):
        raise StateMismatchError("this state_dict's _extra_state is not a maskfx record") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not RECORD_FIELDS <= record.keys():
        raise StateMismatchError(f"this state_dict's record is not a {FORMAT} record")
    return record


def _render(entry: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={_literal(v)!r}" for k, v in entry["fields"].items())
    return f"{entry['config']}({fields})"


def _literal(value: Any) -> Any:
    """A config value as it was written (configs hold tuples, which JSON made lists)."""
    return tuple(value) if isinstance(value, list) else value


def _config_differences(saved: dict[str, Any], current: dict[str, Any], configs: dict[str, Any]) -> list[str]:
    differences = []
    for name in dict.fromkeys([*saved, *current]):
        if name not in current:
            differences.append(f"{name}={_render(saved[name])}, this net has no {name}")
        elif name not in saved:
            differences.append(f"no {name}, this net has {name}={_render(current[name])}")
        else:
            ignored = getattr(type(configs[name]), "LOWERING_FIELDS", frozenset())  # free to differ at load
            changed = [f"{k}={_literal(v)!r}" for k, v in current[name]["fields"].items()
                       if k not in ignored and saved[name]["fields"].get(k) != v]
            if changed:
                differences.append(f"{name}={_render(saved[name])}, this net has {', '.join(changed)}")
    return differences


def _collapsed(mode: str | None) -> str:
    return f"collapsed with mode={mode!r}" if mode else "not collapsed"


def mismatch(saved: dict[str, Any], current: dict[str, Any], configs: dict[str, Any]) -> str | None:
    """Why a state with record ``saved`` must not load into a net with record ``current`` (and
    technique ``configs``), as one line, or ``None`` when it may."""
    differences = _config_differences(saved["configs"], current["configs"], configs)
    if differences:
        return (f"this state_dict was saved from a net transformed with {'; and with '.join(differences)}: "
                f"rebuild it with the same transform call")
    if saved["collapsed"] != current["collapsed"]:
        return (f"this state_dict was saved from a net {_collapsed(saved['collapsed'])}, this net is "
                f"{_collapsed(current['collapsed'])}: rebuild it with the same transform call and collapse mode")
    if saved["sites"] != current["sites"]:
        return ("this state_dict was saved from a net with other maskfx sites (the same configs on another model, "
                "or other leaf_modules): rebuild it from the same model with the same transform call")
    return None
