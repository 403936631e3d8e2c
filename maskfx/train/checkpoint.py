"""Checkpoints as data: how to rebuild the network (a recipe of names and configs) plus its
``state_dict``, loaded with ``torch.load(weights_only=True)``, written atomically and checked
against a SHA-256 digest of its contents at load.

A checkpoint never pickles code or modules. The recipe names the model (``torchvision:resnet18``
or ``module:fn``), the class count, the input shape and each technique's config as plain values;
loading rebuilds the model, re-runs the same ``maskfx.transform`` and loads the state (frozen
structure included). A collapsed network is stored as the trainable one plus the collapse mode,
because ``collapse`` is a deterministic function of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskfx import techniques
from maskfx.config import Budget
from maskfx.errors import UserError, first_line
from maskfx.state import META_KEY
from maskfx.transform import collapse, transform
from maskfx.train.models import build_model

FORMAT = "maskfx-checkpoint/1"
DIGEST_KEY = "sha256"  # of every value in the payload, tensors by their bytes: torch.load checks no CRC


def _config_types() -> dict[str, type]:
    return {t.TECHNIQUE: t.CONFIG for t in techniques.PIPELINE}


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, not maskfx's, or does not fit its recipe."""


@dataclass(frozen=True)
class Recipe:
    """What rebuilds the network: model name, class count, input shape ``(C, H, W)`` and the
    ``transform`` configs as plain dicts (empty: the untouched model)."""

    model: str
    num_classes: int
    input_shape: tuple[int, ...]
    transform: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, float | None] | None = None  # the maskfx.Budget's fields

    @staticmethod
    def of(net: nn.Module, model: str, num_classes: int, input_shape: tuple[int, ...]) -> "Recipe":
        """The recipe of ``net``: its transform configs are read from the net itself."""
        state = getattr(net, "meta", {}).get(META_KEY)
        configs = {} if state is None else {k: dataclasses.asdict(v) for k, v in state.configs.items()}
        budget = None if state is None or state.budget is None else dataclasses.asdict(state.budget)
        return Recipe(model, num_classes, tuple(input_shape), configs, budget)

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor]:
        return (torch.zeros(batch, *self.input_shape),)

    def build(self, base: nn.Module | None = None) -> nn.Module:
        """The network this recipe describes, freshly initialised (or transformed from ``base``)."""
        model = base if base is not None else build_model(self.model, self.num_classes)
        if not self.transform:
            return model
        config_types = _config_types()
        unknown = set(self.transform) - set(config_types)
        if unknown:
            raise CheckpointError(f"unknown technique(s) {sorted(unknown)}; this maskfx knows {sorted(config_types)}")
        configs = {name: config_types[name](**values) for name, values in self.transform.items()}
        budget = Budget(**self.budget) if self.budget is not None else None
        return transform(model, example_inputs=self.example_inputs(), budget=budget, **configs)


@dataclass
class Checkpoint:
    """A network's recipe and state, plus training progress when saved during training."""

    recipe: Recipe
    state_dict: dict[str, torch.Tensor]
    collapse: str | None = None  # None, or the collapse mode applied after loading
    optimizer: dict | None = None
    scheduler: dict | None = None
    progress: dict[str, Any] = field(default_factory=dict)  # {"phase": i, "epoch": e} done so far, "plan": the phases
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)  # tensors are kept as they are (deep-copied)
        payload["recipe"]["input_shape"] = list(self.recipe.input_shape)
        payload = {"format": FORMAT, **payload}
        return {**payload, DIGEST_KEY: payload_digest(payload)}

    def network(self) -> nn.Module:
        """Rebuild the network and load the state; collapsed again if it was saved collapsed."""
        net = self.recipe.build()
        try:
            net.load_state_dict(self.state_dict)
        except RuntimeError as error:
            raise CheckpointError(f"the checkpoint's weights do not fit its recipe "
                                  f"({self.recipe.model}): {first_line(error)}") from None
        return collapse(net, self.collapse) if self.collapse else net


def payload_digest(value: Any) -> str:
    """SHA-256 over a checkpoint payload: keys, plain values, and each tensor's dtype, shape and
    bytes. A flipped byte inside tensor data, which ``torch.load`` reads without complaint, changes it."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor{data.dtype}{tuple(value.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}".encode())
        for key, item in value.items():
            digest.update(repr(key).encode())
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def _temporaries(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a temporary file in the same folder, flushed
    to disk, then renamed over ``path``; an interrupted save leaves the old file untouched. A
    temporary left by a save that was killed outright (nothing could remove it) goes at the next."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = _temporaries(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(checkpoint.to_dict(), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; any problem is one ``CheckpointError`` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, ...: all mean "not loadable"
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a torch file: {first_line(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a maskfx checkpoint ({FORMAT}); "
                              f"for a plain state_dict use --weights")
    recorded = payload.pop(DIGEST_KEY, None)
    if recorded != payload_digest(payload):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its contents do not match the SHA-256 "
                              f"digest written with them" if recorded else
                              f"checkpoint {str(path)!r} has no SHA-256 digest of its contents, so it cannot be "
                              f"checked: it was not written by save_checkpoint")
    try:
        recipe = payload["recipe"]
        return Checkpoint(
            recipe=Recipe(recipe["model"], int(recipe["num_classes"]), tuple(recipe["input_shape"]),
                          dict(recipe["transform"]), recipe.get("budget")),
            state_dict=payload["state_dict"], collapse=payload["collapse"], optimizer=payload["optimizer"],
            scheduler=payload["scheduler"], progress=dict(payload["progress"]), history=list(payload["history"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: missing or bad {error}") from None
