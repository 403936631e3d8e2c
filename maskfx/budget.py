"""A budget: the user states a fraction of the original's MACs, of its parameters, or both; the
learning knows it from the start, and ``freeze`` meets it.

The learning minimises the task loss plus ``multiplier * max(0, expected ratio - target)``, where
the expected ratio is the MACs the net would have if each gate stayed open with its current
probability (differentiable: each technique that can remove MACs gives its expected cost), and the
target anneals linearly from 1 to the budget over the first ``warmup`` of the structure-learning
steps (CoFi's schedule). Over the target the penalty closes gates, each in proportion to its share
of the MACs; under it, it is silent, and the task loss alone reopens the gates it needs. The
multiplier adapts multiplicatively (``GROWTH`` per step over the target, ``GROWTH ** -SHRINK``
under it): the penalty's gradient per gate is orders of magnitude below the task loss's and
depends on the network, and a multiplicative update finds that scale in a few dozen steps, where
CoFi's additive Lagrange multipliers would need a learning rate per network.

Measured while choosing (one seed each): on the planted test (``tests/test_channels.py``: half of
a space's channels carry nothing) the one-sided penalty closes exactly that half (their
probability of being open 0.10, every live one 1.00); a two-sided ``|ratio - target|`` left both
around 0.5, as it reopens the channels the task does not resist fastest. On the digits (resnet18,
66 learning steps, budget 0.5) a linear penalty that never goes silent kept closing gates to an
expected ratio of 0.23.

How the learning meets the target depends more on the gates' momentum than on the multiplier's
scale. While the learning is over the target the multiplier grows alike whatever the budget, so the
path does not depend on it until the target is reached. With Adam's usual momentum (0.9) on the
gates, the budget suite's 40 structure steps (resnet18, 16-epoch start, seeds 0 / 1 / 2) ended at
the same expected ratio at every budget of 0.5 and under: 0.59 / 0.57 / 0.60 at budget 0.303
(Torch-Pruning's MACs at 0.35), where freeze then made half the cut by near-tied probabilities,
shipping -1.11 / -1.37 / -1.99 points against the untouched model. A larger starting multiplier
only moved the lag into an overshoot: started at 3 it reached budget 0.5 and went on to 0.35 (at 10
and 30, budget 0.303: 0.13 and 0.07 at freeze), the gates still closing for about 1 / (1 - beta1)
steps after the penalty went silent; a multiplier that stopped growing on the expected ratio's
projected course still left 0.48 at budget 0.5. With momentum 0.5 (``maskfx.train.fit.GATE_BETAS``)
the expected ratio holds at the target once it reaches it (0.30 / 0.30 / 0.30 at freeze at budget
0.303; 0.46 / 0.47 / 0.45 at 0.5; 0.70 / 0.70 / 0.72 at 0.75), and the shipped models (side runs,
same seeds, points against the untouched model) moved: at 0.303 from -1.49 to -0.75 on the mean
(Torch-Pruning's L2 arm at those MACs: -0.72); at 0.5 from -0.47 to -0.55 (-0.57 / -0.86 / -0.22);
at 0.75 from -0.58 to -0.48. At momentum 0.5 the multiplier, growing from 1, still needs most of
the steps to reach the task's scale: the expected ratio reaches the budget in about the last 10 of
the 40 steps (0.60-0.62 at step 31 at budget 0.303), and one structure epoch (20 steps) ends at
0.87-0.88 at budgets 0.303 and 0.5 alike (shipping -0.91 on the mean at 0.303, against -0.75 for
two epochs). A faster multiplier does not rescue one epoch: grown x1.3 a step, or started at 10 or
30, it stood at 0.59-0.62, 0.31-0.35 and 0.23-0.24 at freeze at budget 0.303 and shipped -1.00,
-1.19 and -1.52 on the mean; a cut made in 20 steps costs more than the frozen structure's extra
epoch gives back. The growth itself was tried faster before (1.3, with momentum 0.9: reaching the
target sooner, the cut still made in the last steps) and shipped no better.

Why the multiplier starts at 1 (at ``DEEP_CUT`` and above) rather than at a scale calibrated to
the network: a start that balances the penalty's gradient on the gates against the task's (the
ratio of their norms at the first structure step, about 25-32 on the budget suite's resnet18 over
its 8 seeds, distilled at Torch-Pruning's MACs, BatchNorm recalibrated) reached the budget on
every seed, including seed 3 where the start at 1 stood at 0.44 when freeze selected, but shipped
worse: -0.78 [-1.12, -0.45] points at 0.404 and -0.83 [-1.27, -0.39] at 0.303, paired against the
start at 1. A tenth of that scale (about 3, like a fixed start at 3) gave -0.04 [-0.37, +0.30] and
+0.25 [-0.15, +0.64]. Cutting early costs more than leaving a short remainder to freeze; the late
cut is kept.

From the budget suite's 32-epoch start (its recorded run) the remainder is no longer short when
distilled: the 40 steps end at 0.33-0.50 of the MACs (0.43 on the mean) at every budget under that,
one path per seed, the penalty never silent on it (not distilled: 0.31-0.34 at 0.35). Side runs on
those 8 starts, distilled at Torch-Pruning's MACs, paired against the suite's arm: the multiplier
started at 3 reached the budget on every seed (0.35-0.38 at freeze at 0.404, 0.26-0.28 at 0.303)
and shipped +0.28 [-0.08, +0.64] and +0.04 [-0.37, +0.45]; grown x1.2 a step, +0.17 [-0.19, +0.53]
and +0.02 [-0.50, +0.54], overshooting to 0.30-0.36 and 0.22-0.26. Learning the whole cut does not
pay at 0.303, and at 0.404 it is not resolved; there the start at 1 and x1.1 stay until it is.

Deeper budgets are another matter. At Torch-Pruning's 0.154 and 0.094 of the MACs (budgets 0.2
and 0.1, the equal-macs-deep suite: 24 fresh seeds, results file), the start at 1 leaves the gates
at 0.47 of the MACs on the mean when freeze selects, so freeze takes them from there to the budget
(about 40% of the cut) by near-tied probabilities, and ships level with Torch-Pruning's L2 (+0.35
[-0.30, +1.01] and -0.53 [-1.38, +0.32] points). Started at 3 (``Budget(initial_multiplier=3)``)
the gates reach 0.18, and the shipped model gains +0.80 [+0.39, +1.21] and +1.21 [+0.53, +1.89]
points over the start at 1, putting it ahead of L2 at 0.154 (+1.15 [+0.54, +1.77]; +0.68 [-0.10,
+1.47] at 0.094). So a target under ``DEEP_CUT`` (0.25) starts the multiplier at 3 by default
(``Budget.start_multiplier``), between the budgets where 3 gained nothing resolved (0.303 and
up) and those where it gained (0.154 and under); ``initial_multiplier=`` overrides it.

With both targets, the penalty is the multiplier times the sum of the two excesses (one
multiplier: both are fractions of the same kind).

``freeze`` then selects the kept units deterministically, most likely open first, until the MACs
(and parameters) are at or under the budget (``channels``' ``select``), so ``collapse("prune")``
lands there.
"""
from __future__ import annotations

import math

import torch
import torch.fx as fx
from torch import nn

from maskfx import techniques
from maskfx.config import MULTIPLIER_RANGE, RESOURCE_NAMES, Budget
from maskfx.errors import UserError
from maskfx.state import get_state
from maskfx.technique import structure_parameters

GROWTH = 1.1  # the multiplier's factor per step over the target
SHRINK = 4  # under the target it shrinks by GROWTH ** SHRINK per step: the gates' momentum overshoots
MODULE = "maskfx_budget"


class BudgetPenalty(nn.Module):
    """The budget's training state: its multiplier and how far the target has annealed (buffers,
    so a checkpoint resumes them)."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.targets = {resource: float(value) for resource, value in budget.targets().items()}
        self.warmup = float(budget.warmup)
        self.register_buffer("multiplier", torch.tensor(budget.start_multiplier()))
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("warmup_steps", torch.tensor(0))

    def schedule(self, steps: int) -> None:
        """Anneal the target over ``warmup`` of ``steps`` structure-learning steps from now on."""
        self.step.zero_()
        self.warmup_steps.fill_(int(round(self.warmup * steps)))

    def current_target(self, resource: str) -> float:
        steps = int(self.warmup_steps)
        done = 1.0 if steps == 0 else min(1.0, int(self.step) / steps)
        return 1.0 - (1.0 - self.targets[resource]) * done


def levers() -> list:
    """The techniques a budget can use: those that say what their layers cost (``budget_cost``)."""
    return [t for t in techniques.PIPELINE if hasattr(t, "budget_cost")]


def _cost(gm: fx.GraphModule, kind: str, resource: str):
    """The MACs or parameters every budget-aware technique of ``gm`` accounts for (``kind`` as
    their ``budget_cost``)."""
    state = get_state(gm)
    values = [t.budget_cost(gm, kind, resource) for t in levers() if t.TECHNIQUE in state.configs]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def original(gm: fx.GraphModule, resource: str) -> int:
    """The original model's MACs at the example input, or its parameters."""
    state = get_state(gm)
    return state.macs_original if resource == "macs" else state.params_original


def attach(gm: fx.GraphModule, budget: Budget) -> None:
    """Check that ``budget`` can be met on the freshly transformed ``gm`` and give it the penalty's
    state; a ``UserError`` (before any training) if no technique can remove MACs or a target is
    below what removing everything removable reaches."""
    allowed = {}
    for resource, target in budget.targets().items():
        full, whole = _cost(gm, "full", resource), original(gm, resource)
        if full is None or full == 0:
            names = ", ".join(t.TECHNIQUE for t in levers())
            raise UserError(f"a budget needs a technique that can remove {RESOURCE_NAMES[resource]} ({names}=True), "
                            f"and none of the requested techniques found anything to remove")
        smallest = (whole - full + _cost(gm, "min", resource)) / whole
        if target < smallest:
            raise UserError(f"budget {resource}={target} is unreachable: removing everything removable leaves "
                            f"{smallest:.3g} of the original {RESOURCE_NAMES[resource]}; ask for at least "
                            f"{math.ceil(smallest * 1000) / 1000}")
        allowed[resource] = target * whole - (whole - full)
    get_state(gm).allowed = allowed
    gm.add_module(MODULE, BudgetPenalty(budget).to(next(iter(gm.buffers()), torch.empty(0)).device))


def penalty_state(gm: nn.Module) -> BudgetPenalty | None:
    return getattr(gm, MODULE, None) if isinstance(getattr(gm, MODULE, None), BudgetPenalty) else None


def expected_ratio(gm: fx.GraphModule, resource: str = "macs") -> torch.Tensor:
    """The MACs (or parameters) ``gm`` would keep, as a fraction of the original's, if every gate
    stayed open with its current probability (differentiable)."""
    whole = original(gm, resource)
    return (whole - _cost(gm, "full", resource) + _cost(gm, "expected", resource)) / whole


SHORTFALL = 0.1  # of the cut a budget asks for: more left to freeze's selection is reported


def expected_against_target(net: nn.Module) -> dict[str, tuple[float, float]]:
    """Per budgeted resource, the expected ratio the gates give now and the budget's target
    (empty without a budget). What the learning reached before ``freeze`` selects: the closer, the
    more of the cut the learned probabilities decide rather than freeze's near-tied ordering."""
    penalty = penalty_state(net)
    if penalty is None:
        return {}
    with torch.no_grad():
        return {resource: (float(expected_ratio(net, resource)), target)
                for resource, target in penalty.targets.items()}


def shortfall_warning(net: nn.Module) -> str | None:
    """A sentence when the learning left more than ``SHORTFALL`` of the budget's cut to ``freeze``."""
    short = {resource: (expected, target) for resource, (expected, target) in expected_against_target(net).items()
             if expected - target > SHORTFALL * (1 - target)}
    if not short:
        return None
    reached = "; ".join(f"expected {RESOURCE_NAMES[r]} {e:.3f} of the original against the budget's {t:.4g}"
                        for r, (e, t) in short.items())
    return (f"the structure learning ended short of the budget ({reached}): freeze makes the rest of the cut by "
            "the gates' probabilities, which barely differ there; learn the structure for more steps, or start "
            "the budget's multiplier higher (Budget(initial_multiplier=))")


def budget_penalty(net: nn.Module) -> torch.Tensor:
    """The budget's term of the training loss: add it to the loss once per training step
    (``maskfx.train.fit`` does). It also adapts the multiplier (in training mode). A net without a
    budget, or frozen, gives 0."""
    module = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
    penalty = penalty_state(module)
    if penalty is None or not _gate_parameters(module):
        return torch.zeros(())
    excess = sum((expected_ratio(module, resource) - penalty.current_target(resource)).clamp(min=0)
                 for resource in penalty.targets)
    if module.training:
        with torch.no_grad():
            over = bool(excess.detach() > 0)
            penalty.multiplier.mul_(GROWTH if over else GROWTH ** -SHRINK).clamp_(*MULTIPLIER_RANGE)
            penalty.step.add_(1)
    return penalty.multiplier * excess


def _gate_parameters(module: nn.Module) -> list[nn.Parameter]:
    layers = tuple(layer for t in levers() for layer in t.LEARNED)
    return structure_parameters(module, layers)
