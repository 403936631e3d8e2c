"""The public lifecycle: transform -> train -> freeze -> collapse. State lives in ``gm.meta``."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from maskfx import techniques
from maskfx.config import resolve
from maskfx.dual import attribute_targets, eval_module, join
from maskfx.errors import UserError, first_line
from maskfx.graph.surgery import finish, model_device
from maskfx.graph_module import MaskfxGraphModule
from maskfx.collapse_report import CollapseReport, Probe
from maskfx.measure import count_macs, count_parameters
from maskfx.budget import MODULE as BUDGET_MODULE, attach
from maskfx.config import Budget
from maskfx.state import META_KEY, MaskfxState, Rejection, Rewrite, Site, get_state
from maskfx.tracing import LeafSpec, trace

COLLAPSE_MODES = ("expected", "prune")
Inputs = tuple[torch.Tensor, ...]


def transform(model: nn.Module, *, example_inputs: Sequence[torch.Tensor] | None = None,
              leaf_modules: Iterable[LeafSpec] = (), budget: Budget | None = None, **requested: Any) -> fx.GraphModule:
    """Trace a copy of ``model`` and rewrite it with the requested techniques.

    Each technique of the registry is a keyword argument (``jumpout``, ``blockout``,
    ``maskconnect``, ``gateconnect``) taking ``None``/``False`` (off), ``True`` (the config's
    defaults) or its config dataclass. ``example_inputs`` (a tuple of tensors, as for
    ``torch.ao``'s ``prepare_fx``) give the tensor shapes that MaskConnect needs; given, the model
    must run on them (in eval mode, moved to its device), or a ``ValueError`` says why. GateConnect
    takes ResNeXt modules before MaskConnect looks for residual blocks, so both can be on.
    ``leaf_modules`` (qualified names or module types) are kept whole when tracing; use it for
    submodules torch.fx cannot trace. ``model`` itself is never modified.

    ``budget`` (``maskfx.Budget(macs=0.5)``: half the original's MACs at ``example_inputs``) makes
    the learning answer to a MACs target and ``freeze`` meet it (``maskfx.budget``); it needs a
    technique that can remove MACs (``channels``) and raises a ``UserError`` before anything is
    trained if the target is below what removing everything removable reaches.
    """
    unknown = sorted(set(requested) - {t.TECHNIQUE for t in techniques.PIPELINE})
    if unknown:
        raise TypeError(f"transform() got an unexpected keyword argument {unknown[0]!r}")
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    configs = {t.TECHNIQUE: resolve(t.TECHNIQUE, requested.get(t.TECHNIQUE), t.CONFIG)
               for t in techniques.PIPELINE}
    example_inputs = _checked_inputs(example_inputs)
    _check_budget(budget, configs, example_inputs)
    if isinstance(model, fx.GraphModule) and META_KEY in model.meta:
        raise UserError("model is already a maskfx graph module; transform the original model instead")
    copied = copy.deepcopy(model)
    example_inputs = _runnable_inputs(copied, example_inputs)
    macs_original = count_macs(copied, *example_inputs) if budget is not None else None
    traced = trace(copied, leaf_modules, _layers())
    eval_gm, train_gm = traced.eval, traced.train
    original_targets = set(attribute_targets(eval_gm.graph))
    records: dict[str, Any] = {}
    done = _rewrite(eval_gm, configs, example_inputs, records)
    if train_gm is None:
        gm = MaskfxGraphModule(eval_gm, eval_gm.graph, type(eval_gm).__name__)
    else:  # the forward depends on self.training: rewrite the train graph too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what does not apply was said for the eval graph
            in_train = _rewrite(train_gm, configs, example_inputs, {})
        gm = join(eval_gm, train_gm, original_targets - set(attribute_targets(eval_gm.graph)))
        shared = {site.module for site in done.sites}
        done.sites += [replace(s, train_only=True) for s in in_train.sites if s.module not in shared]
        done.notes += [n for n in in_train.notes if n not in done.notes]
        done.rejected += [r for r in in_train.rejected if r not in done.rejected]
        done.notes.append("the model's forward depends on train/eval mode: maskfx keeps a train graph and an "
                      "eval graph over the same modules")
    if traced.kept_whole:
        done.notes.append(f"kept whole, as their forward depends on train/eval mode and they have no parameters: "
                          f"{', '.join(traced.kept_whole)}")
    gm.train(model.training)  # layers the passes added start in train mode: match the model's
    gm.meta[META_KEY] = MaskfxState(configs={k: v for k, v in configs.items() if v is not None}, sites=done.sites,
                                    params_original=count_parameters(model), notes=done.notes,
                                    rejected=done.rejected, records=records, budget=budget,
                                    macs_original=macs_original)
    if budget is not None:
        attach(gm, budget)
    return gm


def _check_budget(budget: Budget | None, configs: dict, example_inputs: Inputs | None) -> None:
    """A budget's form, and the techniques it needs, before anything is traced."""
    if budget is not None and not isinstance(budget, Budget):
        raise UserError(f"budget must be a maskfx.Budget, e.g. Budget(macs=0.5), got {budget!r}")
    if budget is not None and example_inputs is None:
        raise UserError("a budget is a fraction of the MACs at example_inputs: pass example_inputs=(x,)")
    if configs.get("channels") is not None:
        others = sorted(name for name in ("gateconnect", "maskconnect", "blockout") if configs.get(name) is not None)
        if others:
            raise UserError(f"channels combines with jumpout only so far, not with {', '.join(others)}")


def _layers() -> tuple[type[nn.Module], ...]:
    """Every layer a technique adds."""
    return tuple(layer for technique in techniques.PIPELINE for layer in technique.LAYERS)


def _checked_inputs(example_inputs: Sequence[torch.Tensor] | None) -> Inputs | None:
    """``example_inputs`` as a tuple, or a ``TypeError`` naming the form (a bare tensor is one input
    too many levels down: iterating it would give its rows)."""
    if example_inputs is None:
        return None
    expected = "example_inputs must be a tuple of tensors, e.g. (x,)"
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(f"{expected}, got {type(example_inputs).__name__}")
    others = sorted({type(x).__name__ for x in example_inputs if not isinstance(x, torch.Tensor)})
    if others:
        raise TypeError(f"{expected}, got one holding {', '.join(others)}")
    if not example_inputs:
        raise UserError("example_inputs must be a non-empty tuple of tensors, e.g. (x,)")
    return tuple(example_inputs)


def _runnable_inputs(model: nn.Module, example_inputs: Inputs | None) -> Inputs | None:
    """``example_inputs`` on ``model``'s device, once ``model`` ran on them in eval mode: a wrong
    shape or dtype is reported here, in the caller's terms, not by whichever step runs it first."""
    if example_inputs is None:
        return None
    inputs = tuple(x.to(model_device(model)) for x in example_inputs)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    except Exception as error:  # any failure means these inputs do not fit the model
        described = "; ".join(f"shape {tuple(x.shape)}, {str(x.dtype).removeprefix('torch.')}" for x in inputs)
        raise UserError(f"the model could not run on example_inputs ({described}): {first_line(error)}") from None
    finally:
        model.train(was_training)
    return inputs


def _rewrite(gm: fx.GraphModule, configs: dict, example_inputs: tuple | None, records: dict) -> Rewrite:
    """Run the pipeline's passes on one graph; what they did, together (their records into ``records``)."""
    done = Rewrite([])
    for technique in techniques.PIPELINE:
        if configs[technique.TECHNIQUE] is not None:
            result = technique.rewrite(gm, configs[technique.TECHNIQUE], example_inputs)
            done.sites += result.sites
            done.notes += result.notes
            done.rejected += result.rejected
            if result.record is not None:
                records[technique.TECHNIQUE] = result.record
    finish(gm)
    return done


def freeze(net: fx.GraphModule) -> fx.GraphModule:
    """Fix learned connectivity and stop structure learning, technique by technique (each pass's
    ``freeze``: Blockout also folds its expected mask into the weights it keeps)."""
    get_state(net)
    for technique in techniques.PIPELINE:
        technique.freeze(net)
    return net


def collapse(net: fx.GraphModule, mode: str = "expected",
             example_inputs: Sequence[torch.Tensor] | None = None) -> fx.GraphModule:
    """Lower every maskfx layer to plain PyTorch ops; returns a new graph module in eval mode.

    One meaning per mode, for every technique: ``"expected"`` keeps the eval-mode function exactly
    (expected-value weights) and every unit the structure learns over (channel, branch, head node),
    so the original's parameter count; ``"prune"`` also removes what the learned structure leaves
    unread, so the graph really shrinks, and is the same function wherever the structure is
    discrete (frozen). Stated exceptions: MaskConnect removes the blocks nobody reads in both modes
    (a block no connection reads computes nothing the model returns), and GateConnect's chains
    lower to plain convolutions with their BatchNorm folded in (fewer parameters, every branch
    kept). ``tests/test_collapse_modes.py`` holds this technique by technique. The
    trained ``net`` is left as it is. What was done is a ``CollapseReport`` carried by the result,
    ``maskfx.summary(deploy).collapse``: parameters before and after, and per technique what was
    lowered. With ``example_inputs`` it also has MACs per input and how far each step moved the
    eval outputs on them, so it says whether the result is exactly the eval function.
    """
    if mode not in COLLAPSE_MODES:
        raise UserError(f"mode must be one of {COLLAPSE_MODES}, got {mode!r}")
    example_inputs = _checked_inputs(example_inputs)
    state = get_state(net)
    if state.collapsed is not None:
        raise UserError(f"net was already collapsed (mode={state.collapsed!r})")
    deploy = copy.deepcopy(eval_module(net)).eval()  # eval semantics: the eval graph
    if hasattr(deploy, BUDGET_MODULE):
        delattr(deploy, BUDGET_MODULE)  # training state only
    example_inputs = _runnable_inputs(deploy, example_inputs)
    probe = Probe(deploy, example_inputs)
    notes, steps = [], []
    for technique in reversed(techniques.PIPELINE):
        if technique.TECHNIQUE in state.configs:
            layers = sum(isinstance(m, technique.LAYERS) for m in deploy.modules())
            facts = technique.collapse(deploy, mode, state.configs[technique.TECHNIQUE])
            finish(deploy)
            deploy.eval()  # layers collapse added start in train mode
            steps.append(probe.step(deploy, technique.TECHNIQUE, layers, facts))
            notes += steps[-1].notes
    leftovers = [name for name, m in deploy.named_modules() if isinstance(m, _layers())]
    if leftovers:
        raise RuntimeError(f"collapse left maskfx layers behind: {leftovers}")
    report = probe.report(mode, steps, state.budget, state.macs_original, state.params_original)
    missed = report.over_budget() if mode == "prune" else []
    if missed:
        warnings.warn(f"collapse('prune') keeps {' and '.join(missed)}: maskfx.freeze(net) selects "
                      f"the structure that meets the budget; call it (training's last phase does) before "
                      f"collapse", UserWarning, stacklevel=2)
    deploy.meta[META_KEY] = MaskfxState(configs=dict(state.configs), sites=list(state.sites),
                                        params_original=state.params_original, collapsed=mode,
                                        notes=state.notes + notes, rejected=list(state.rejected),
                                        collapse_report=report,
                                        records=dict(state.records),
                                        budget=state.budget,
                                        macs_original=state.macs_original)
    return deploy


@dataclass
class Summary:
    """What ``transform`` rewrote, where, what it cost in parameters, and each candidate a pass
    rejected with the reason."""

    sites: list[Site]
    configs: dict
    params_original: int
    params_now: int
    collapsed: str | None
    notes: list[str]
    rejected: list[Rejection]
    collapse: CollapseReport | None = None  # what collapse did, on a collapsed module

    def count(self, technique: str) -> int:
        return sum(site.technique == technique for site in self.sites)

    def __str__(self) -> str:
        lines = [f"maskfx summary ({'collapsed: ' + self.collapsed if self.collapsed else 'trainable'})"]
        names = list(dict.fromkeys([*self.configs, *(s.technique for s in self.sites),
                                    *(r.technique for r in self.rejected)]))
        for name in names:
            lines.append(f"  {name}: {self.count(name)} sites  {self.configs.get(name, '')}")
            for site in (s for s in self.sites if s.technique == name):
                extra = "".join(f"  [{x}]" for x in (site.detail, "train mode only" * site.train_only) if x)
                lines.append(f"    {site.location:<40} -> {site.module or '-'}{extra}")
            for rejection in (r for r in self.rejected if r.technique == name):
                lines.append(f"    rejected {rejection.location}: {rejection.reason}")
        change = self.params_now - self.params_original
        lines.append(f"  parameters: {self.params_original:,} original -> {self.params_now:,} now "
                     f"({change:+,}, x{self.params_now / max(self.params_original, 1):.3f})")
        if self.collapse is not None:
            lines += ["  " + line for line in str(self.collapse).splitlines()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def summary(net: fx.GraphModule) -> Summary:
    state = get_state(net)
    return Summary(list(state.sites), dict(state.configs), state.params_original,
                   count_parameters(net), state.collapsed, list(state.notes), list(state.rejected),
                   state.collapse_report)
