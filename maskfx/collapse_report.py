"""What ``maskfx.collapse`` did, as data: parameters and MACs before and after, per technique what
was lowered, and whether the deployed graph computes the eval function exactly or by how much it
moved. ``collapse`` stores it on the module it returns; ``maskfx.summary(deploy).collapse`` reads it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from maskfx.config import Budget
from maskfx.graph.surgery import model_device
from maskfx.measure import count_macs, count_parameters

EXACT_TOLERANCE = 1e-5  # the contract's fp32 tolerance, relative to max(1, max |eval output|)


@dataclass(frozen=True)
class Cost:
    """One model's size: parameters, and MACs per input where example inputs were given."""

    parameters: int
    macs: int | None = None

    def __str__(self) -> str:
        return f"{self.parameters:,} parameters" + (f", {self.macs:,} MACs" if self.macs is not None else "")


@dataclass(frozen=True)
class Shift:
    """How far the eval outputs moved: the largest absolute difference on the example inputs, and
    the largest absolute output it is judged against."""

    max_abs_diff: float
    output_scale: float

    @property
    def exact(self) -> bool:
        """Within fp32 rounding: ``max_abs_diff <= 1e-5 * max(1, output_scale)``; never for NaN or inf."""
        return self.max_abs_diff <= EXACT_TOLERANCE * max(1.0, self.output_scale) < math.inf

    def __str__(self) -> str:
        verdict = "exact" if self.exact else "NOT the eval function"
        return f"{verdict}: max |diff| {self.max_abs_diff:.2e} (outputs up to {self.output_scale:.2e})"


@dataclass(frozen=True)
class Lowering:
    """One technique's collapse step: how many of its layers were lowered, the whole model's cost
    before and after this step, the step's own output shift (``None`` without example inputs),
    what the technique itself says it did (``facts``: its own dataclass, e.g. MaskConnect's
    removed blocks) and those facts rendered for people (``notes``)."""

    technique: str
    layers: int
    before: Cost
    after: Cost
    shift: Shift | None
    facts: Any = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CollapseReport:
    """``collapse(net, mode)`` as data. ``shift`` compares the deployed graph with the transformed
    net in eval mode on the example inputs; ``None`` when ``collapse`` was given none."""

    mode: str
    before: Cost
    after: Cost
    shift: Shift | None
    techniques: tuple[Lowering, ...] = field(default_factory=tuple)
    budget: float | None = None  # the MACs budget, a fraction of the original's (``maskfx.Budget``)
    macs_original: int | None = None  # the original model's MACs at transform's example input
    params_budget: float | None = None  # the parameters budget, a fraction of the original's
    params_original: int | None = None  # the original model's parameters

    @property
    def achieved(self) -> float | None:
        """The deployed MACs as a fraction of the original's (``None``: no MACs budget, or not measured)."""
        if self.budget is None or self.after.macs is None:
            return None
        return self.after.macs / self.macs_original

    @property
    def achieved_params(self) -> float | None:
        """The deployed parameters as a fraction of the original's (``None``: no parameters budget)."""
        return None if self.params_budget is None else self.after.parameters / self.params_original

    def over_budget(self) -> list[str]:
        """Each budget target the deployed graph exceeds, worded (empty: every measured one is met)."""
        return [f"{achieved:.3f} of the original's {resource} (budget {target:.4g})"
                for resource, target, achieved in (("MACs", self.budget, self.achieved),
                                                   ("parameters", self.params_budget, self.achieved_params))
                if achieved is not None and achieved > target]

    @property
    def exact(self) -> bool | None:
        """The deployed graph computes the eval function (``None``: not measured)."""
        return None if self.shift is None else self.shift.exact

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON, with the ``exact`` verdicts (``None``: not measured) written out."""
        data = asdict(self)
        data["exact"] = self.exact
        data["achieved"] = self.achieved
        data["achieved_params"] = self.achieved_params
        for step, entry in zip(self.techniques, data["techniques"]):
            entry["exact"] = None if step.shift is None else step.shift.exact
        return data

    def technique(self, name: str) -> Lowering:
        """The lowering of technique ``name``."""
        for lowering in self.techniques:
            if lowering.technique == name:
                return lowering
        raise KeyError(f"{name!r} was not collapsed; collapsed: {[t.technique for t in self.techniques]}")

    def __str__(self) -> str:
        lines = [f"collapse ({self.mode}): {self.before} -> {self.after}; "
                 f"{self.shift if self.shift is not None else 'exactness not measured (no example inputs)'}"]
        for step in self.techniques:
            shift = f"; {step.shift}" if step.shift is not None else ""
            lines.append(f"  {step.technique}: {step.layers} layers lowered, {step.before} -> {step.after}{shift}")
        if self.budget is not None:
            achieved = f"{self.achieved:.3f}" if self.achieved is not None else "not measured (no example inputs)"
            lines.append(f"  budget: {self.budget:.4g} of the original's {self.macs_original:,} MACs; "
                         f"achieved {achieved}")
        if self.params_budget is not None:
            lines.append(f"  budget: {self.params_budget:.4g} of the original's {self.params_original:,} parameters; "
                         f"achieved {self.achieved_params:.3f}")
        return "\n".join(lines)


class Probe:
    """Measures a graph as ``collapse`` lowers it, step by step: parameters always, and with
    example inputs MACs and the eval outputs, compared with the previous step and the start."""

    def __init__(self, module: nn.Module, example_inputs: Sequence[torch.Tensor] | None) -> None:
        device = model_device(module)
        self.inputs = None if example_inputs is None else tuple(x.to(device) for x in example_inputs)
        self.start = self.last = self._outputs(module)
        self.first = self.cost = self._cost(module)

    def step(self, module: nn.Module, technique: str, layers: int, facts: Any) -> Lowering:
        """Record one technique's lowering of ``module`` (in eval mode, already recompiled)."""
        outputs, cost = self._outputs(module), self._cost(module)
        lowering = Lowering(technique, layers, self.cost, cost, _shift(self.last, outputs), facts,
                            tuple(facts.notes()))
        self.last, self.cost = outputs, cost
        return lowering

    def report(self, mode: str, steps: Sequence[Lowering], budget: Budget | None = None,
               macs_original: int | None = None, params_original: int | None = None) -> CollapseReport:
        return CollapseReport(mode, self.first, self.cost, _shift(self.start, self.last), tuple(steps),
                              None if budget is None else budget.macs, macs_original,
                              None if budget is None else budget.params, params_original)

    def _cost(self, module: nn.Module) -> Cost:
        return Cost(count_parameters(module), None if self.inputs is None else count_macs(module, *self.inputs))

    @torch.no_grad()
    def _outputs(self, module: nn.Module) -> list[torch.Tensor] | None:
        if self.inputs is None:
            return None
        return [t.detach().float() for t in tree_leaves(module(*self.inputs)) if isinstance(t, torch.Tensor)]


def _shift(reference: list[torch.Tensor] | None, outputs: list[torch.Tensor] | None) -> Shift | None:
    if reference is None or outputs is None:
        return None
    if len(reference) != len(outputs) or any(r.shape != o.shape for r, o in zip(reference, outputs)):
        raise RuntimeError("collapse changed the model's output structure or shapes")
    if not all(t.isfinite().all() for t in (*reference, *outputs)):
        return Shift(math.nan, math.nan)  # a NaN or inf output is never the eval function, however it compares
    diff = max(((r - o).abs().max().item() for r, o in zip(reference, outputs) if r.numel()), default=0.0)
    scale = max((r.abs().max().item() for r in reference if r.numel()), default=0.0)
    return Shift(diff, scale)
