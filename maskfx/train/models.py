"""Models named on the command line or in a checkpoint: ``torchvision:<name>`` or ``module:fn``.

A checkpoint stores the name, never pickled code, so the same name rebuilds the same model.
"""
from __future__ import annotations

import importlib
import inspect
import os
import urllib.error

import torch
import torchvision
from torch import nn

from maskfx.errors import UserError, first_line

DEFAULT_WEIGHTS = "DEFAULT"


class ModelSpecError(UserError):
    """A model name, factory or weights file that cannot give a model."""


def build_model(spec: str, num_classes: int) -> nn.Module:
    """A freshly initialised model from ``torchvision:<name>`` or ``package.module:factory``.

    A factory that takes ``num_classes`` is given it; otherwise it is called without arguments.
    """
    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise ModelSpecError(f"model {spec!r}: expected 'torchvision:<name>' or 'module:function'")
    if kind == "torchvision":
        if name not in torchvision.models.list_models():
            raise ModelSpecError(f"model {spec!r}: torchvision has no model {name!r} "
                                 f"(see torchvision.models.list_models())")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    try:
        factory = getattr(importlib.import_module(kind), name)
    except (ImportError, AttributeError) as error:
        raise ModelSpecError(f"model {spec!r}: cannot import {name!r} from {kind!r} ({error})") from None
    takes_classes = "num_classes" in inspect.signature(factory).parameters
    try:
        model = factory(num_classes=num_classes) if takes_classes else factory()
    except Exception as error:  # the user's own code failed: say where, in one line
        raise ModelSpecError(f"model {spec!r}: the factory raised {type(error).__name__}: {first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model {spec!r}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model: nn.Module, spec: str, weights: str, num_classes: int) -> tuple[nn.Module, str]:
    """Load ``weights`` into ``model``: a local state_dict file (``weights_only``: data, never
    code), or ``DEFAULT`` for torchvision's pretrained weights. Either way, a classifier made for
    another class count (fine-tuning a pretrained model on other classes) is replaced by a fresh
    one with ``num_classes`` outputs. Returns the model and a line saying what was loaded."""
    if weights == DEFAULT_WEIGHTS:
        return _torchvision_default(spec, num_classes)
    if not os.path.isfile(weights):
        raise ModelSpecError(f"weights {weights!r}: no such file")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is the same user error: say which file
        raise ModelSpecError(f"weights {weights!r}: not a readable state_dict ({first_line(error)})") from None
    if not isinstance(state, dict):
        raise ModelSpecError(f"weights {weights!r}: expected a state_dict, got {type(state).__name__}")
    head = _head_of_other_classes(model, state)
    if head:  # the model's own head, made for num_classes, stays
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    misfit = _misfit(model, state, keep=head)
    if misfit:
        raise ModelSpecError(f"weights {weights!r} do not fit {spec}: {misfit}")
    try:
        model.load_state_dict(state, strict=not head)
    except RuntimeError as error:
        raise ModelSpecError(f"weights {weights!r} do not fit {spec}: {first_line(error)}") from None
    if not head:
        return model, f"loaded {weights}"
    return model, f"loaded {weights}; its classifier '{head}' is for other classes: a fresh one with {num_classes} replaces it"


def _misfit(model: nn.Module, state: dict[str, torch.Tensor], keep: str = "") -> str:
    """What keeps ``state`` from loading into ``model`` (whose submodule ``keep`` keeps its own
    values), or ``""``."""
    own = {k: v for k, v in model.state_dict().items() if not keep or not k.startswith(keep + ".")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    resized = [f"{k} is {tuple(state[k].shape)} in the file and {tuple(own[k].shape)} in the model"
               for k in own if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    problems = [f"{len(missing)} missing key(s) ({', '.join(missing[:3])})" if missing else "",
                f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])})" if unexpected else "",
                "; ".join(resized[:3])]
    return "; ".join(p for p in problems if p)


def _head_of_other_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """The last ``nn.Linear``'s name when ``state`` holds it with another output count, else ``""``."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return ""
    name, linear = linears[-1]
    weight = state.get(f"{name}.weight")
    other = (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] != linear.out_features
             and weight.shape[1] == linear.in_features)
    return name if other else ""


def _torchvision_default(spec: str, num_classes: int) -> tuple[nn.Module, str]:
    kind, _, name = spec.partition(":")
    if kind != "torchvision":
        raise ModelSpecError(f"--weights DEFAULT needs a torchvision model, got {spec!r}")
    try:
        model = torchvision.models.get_model(name, weights=DEFAULT_WEIGHTS)
    except (urllib.error.URLError, OSError) as error:
        raise ModelSpecError(f"could not download torchvision's DEFAULT weights for {name} (offline?): "
                             f"{first_line(error)}; pass a local state_dict with --weights PATH") from None
    return replace_classifier(model, num_classes), f"loaded torchvision's DEFAULT weights for {name}"


def replace_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Give ``model`` a fresh last ``nn.Linear`` with ``num_classes`` outputs (fine-tuning a
    pretrained model on other classes), unless it already has that many."""
    last = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ModelSpecError("the model has no nn.Linear classifier to fit to the data's classes")
    name, linear = last[-1]
    if linear.out_features != num_classes:
        model.set_submodule(name, nn.Linear(linear.in_features, num_classes))
    return model
