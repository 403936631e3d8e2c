"""Torch-Pruning (the peer) pruning a copy of a model to a MACs target, one way for the demo and
every benchmark that compares against it.

The settings are Torch-Pruning's defaults for structured channel pruning, as the benchmarks have
documented them: ``BasePruner`` with ``MagnitudeImportance(p=2)`` (each channel group ranked by
the L2 norm of its weights; ``importance="taylor"``: ``TaylorImportance``, |weight x gradient|
with the gradient of the cross-entropy on a training batch before each step), local pruning
(one ratio for every layer, not a global ranking), the classifier head kept (the last
``nn.Linear``: its outputs are the classes), and ``round_to`` optional (the callers pass maskfx's
default multiple, the channel block of the kernels that run the model). The MACs target is met
in one of two ways:

- ``pruned_iteratively``: one pruner walks down in ``steps`` equal steps of the ratio up to
  ``max_ratio`` and each target takes the first step at or under it (the budget benchmark, the
  demo: never over the target);
- ``pruned_by_bisection``: the ratio found by bisection whose MACs come closest to the target
  from above (the width-latency and peer benchmarks).

``torch-pruning`` is a pinned dependency of maskfx (the demo runs it); without it these raise
``UserError`` saying how to install it.
"""
from __future__ import annotations

import copy
import importlib.metadata
import itertools
from types import ModuleType
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import torch
from torch import nn

from maskfx.errors import UserError
from maskfx.measure import count_macs

if TYPE_CHECKING:
    from torch_pruning.pruner import BasePruner

DISTRIBUTION = "torch-pruning"
PINNED = "1.6.1"  # pyproject.toml pins the same
MAX_RATIO = 0.9  # the iterative walk's ratio after its last step
STEPS = 90  # the iterative walk's steps up to MAX_RATIO: 0.01 of the ratio a step
BISECTION_RANGE = (0.0, 0.95)  # the ratios bisection searches
IMPORTANCES = ("l2", "taylor")  # MagnitudeImportance(p=2), TaylorImportance


class Pruned(NamedTuple):
    """A pruned copy, its MACs for one input, and how it got there: the pruning ratio (local, per
    layer) and, for the iterative walk, the steps taken (1 for bisection, 0 when unpruned)."""

    model: nn.Module
    macs: int
    ratio: float
    steps: int


def require() -> ModuleType:
    """The ``torch_pruning`` module, or ``UserError`` saying how to install it."""
    try:
        import torch_pruning
    except ImportError:
        raise UserError(f"torch-pruning is not installed, but maskfx compares against it: "
                        f"pip install {DISTRIBUTION}=={PINNED} (a dependency of maskfx; reinstalling maskfx "
                        f"installs it)") from None
    return torch_pruning


def version() -> str:
    """The installed Torch-Pruning's version (its package metadata: ``torch_pruning.__version__``
    of 1.6.1 still says 1.6.0)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return getattr(require(), "__version__", "?")


def head(model: nn.Module) -> nn.Module:
    """The classifier head the peer keeps: ``model``'s last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no nn.Linear: Torch-Pruning here keeps the classifier head, "
                        f"the last nn.Linear, and found none")
    return linears[-1]


def _pruner(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None,
            steps: int = 1, importance: str = "l2") -> BasePruner:
    """Torch-Pruning's ``BasePruner`` on ``model`` (pruned in place by ``step()``) with the peer's
    settings: ``importance`` (``IMPORTANCES``), local, the head kept, ``round_to``."""
    tp = require()
    ranking = tp.importance.MagnitudeImportance(p=2) if importance == "l2" else tp.importance.TaylorImportance()
    return tp.pruner.BasePruner(model, example[:1], importance=ranking,
                                pruning_ratio=ratio, iterative_steps=steps, round_to=round_to,
                                ignored_layers=[head(model)])


def _gradients(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The cross-entropy's gradient on one training batch, into ``model``'s ``.grad`` (what
    ``TaylorImportance`` reads), the model in eval mode (its BatchNorm statistics untouched)."""
    inputs, labels = batch
    model.zero_grad()
    nn.functional.cross_entropy(model(inputs.cpu()), labels.cpu()).backward()


def pruned_iteratively(model: nn.Module, example: torch.Tensor, targets: Sequence[int], *,
                       round_to: int | None = None, steps: int = STEPS, max_ratio: float = MAX_RATIO,
                       importance: str = "l2",
                       batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[Pruned]:
    """For each MACs target (in ``targets``' order), a copy of ``model`` (on the CPU, eval mode)
    pruned by one pruner walking down in ``steps`` steps up to ``max_ratio``, taken at the first
    step at or under the target. The walk visits the targets largest first; ``model`` is left as
    it was. ``RuntimeError`` when ``max_ratio`` still leaves a target's MACs above it.
    ``importance="taylor"`` ranks by |weight x gradient|, each step's gradient from the next of
    ``batches`` (training batches, cycled; required for it)."""
    if importance not in IMPORTANCES:
        raise UserError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    if importance == "taylor" and batches is None:
        raise UserError("importance='taylor' needs batches: the training batches its gradients come from")
    cycled = itertools.cycle(batches) if batches is not None else None
    pruning = copy.deepcopy(model).cpu().eval()
    example = example.cpu()
    pruner = _pruner(pruning, example, max_ratio, round_to, steps, importance)
    taken: dict[int, Pruned] = {}
    step, macs = 0, count_macs(pruning, example)
    for target in sorted(set(targets), reverse=True):
        while macs > target:
            if step == steps:
                raise RuntimeError(f"Torch-Pruning reached ratio {max_ratio} above {target:,} MACs")
            if importance == "taylor":
                _gradients(pruning, next(cycled))
            pruner.step()
            pruning.zero_grad(set_to_none=True)  # no copy carries the gradients
            step += 1
            macs = count_macs(pruning, example)
        taken[target] = Pruned(copy.deepcopy(pruning), macs, max_ratio * step / steps, step)
    return [taken[target] for target in targets]


def pruned_by_bisection(model: nn.Module, example: torch.Tensor, target: int, *, round_to: int | None = None,
                        steps: int = 10) -> Pruned:
    """A copy of ``model`` pruned at the ratio, found by ``steps`` bisection steps in
    ``BISECTION_RANGE``, whose MACs come closest to ``target`` from above. When no ratio keeps the
    target, an unpruned copy (never ``model`` itself)."""
    low, high = BISECTION_RANGE
    best = Pruned(copy.deepcopy(model), count_macs(model, example), 0.0, 0)
    for _ in range(steps):
        middle = (low + high) / 2
        candidate = copy.deepcopy(model).eval()
        _pruner(candidate, example, middle, round_to).step()
        macs = count_macs(candidate, example)
        if macs >= target:
            low, best = middle, Pruned(candidate, macs, middle, 1)
        else:
            high = middle
    return best
