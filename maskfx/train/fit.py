"""``fit``: training through phases with checkpoints, exact resume and data parallelism.

``fit`` reseeds the generator and the sampler from ``(seed, epoch, rank)`` at every epoch, so an
epoch's randomness depends on nothing that happened before it: resuming from the checkpoint saved
after epoch *n* computes epoch *n + 1* exactly as the uninterrupted run does.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from maskfx.budget import expected_against_target, penalty_state, shortfall_warning
from maskfx.errors import UserError
from maskfx.train import ddp
from maskfx.train.checkpoint import Checkpoint, Recipe, save_checkpoint
from maskfx.train.data import Data
from maskfx.train.distill import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, Distillation
from maskfx.train.loop import accuracy, predict, run_epoch
from maskfx.train.params import clip_masks_after_steps, param_groups
from maskfx.train.optimizers import Optimizers
from maskfx.train.phases import Phase
from maskfx.train.recalibrate import recalibrate
from maskfx.transform import freeze


def evaluation_loader(data: Data, batch_size: int = 256) -> DataLoader:
    return DataLoader(data.test, batch_size=batch_size)


GATE_LR = 0.2  # Adam's learning rate for channel gates (CoFi trains its L0 gates with Adam at 0.01-0.1)
# Adam's momentum for the gates: 0.5, not the usual 0.9. When the budget's penalty goes silent at
# its target, the gates' momentum keeps closing them for about 1 / (1 - beta1) steps: 10 at 0.9, 2
# at 0.5 (maskfx.budget says what that cost). A run resumed from a checkpoint keeps the betas its
# optimizer state was saved with.
GATE_BETAS = (0.5, 0.999)


def gate_optimizer(gate_groups: list[dict]) -> torch.optim.Adam:
    """Adam over the channel gates' parameter groups (``param_groups``' ``"gates"``) at
    ``GATE_LR`` and ``GATE_BETAS``, whatever rate the groups carry: the gates' optimizer ``fit``
    steps, for a loop of one's own too."""
    return torch.optim.Adam([dict(group, lr=GATE_LR) for group in gate_groups], betas=GATE_BETAS)


def _optimizers(net: nn.Module, phase: Phase, momentum: float,
                weight_decay: float) -> tuple[torch.optim.Optimizer | Optimizers, torch.optim.SGD]:
    """SGD for the weights and the masks, which it clips after each step; Adam for channel gates,
    whose budget gradient is of the order of their share of the MACs, which Adam's normalisation
    evens out. Returns the optimizer the loop steps and the SGD the learning-rate schedule follows."""
    groups = param_groups(net, lr=phase.lr, mask_lr=phase.mask_lr, weight_decay=weight_decay)
    gates = [g for g in groups if g["name"] == "gates"]
    sgd = torch.optim.SGD([g for g in groups if g["name"] != "gates"], lr=phase.lr, momentum=momentum)
    clip_masks_after_steps(sgd, net)
    if not gates or phase.mask_lr == 0:  # a phase without structure learning leaves the gates as they are
        return sgd, sgd
    return Optimizers(sgd, gate_optimizer(gates)), sgd


def _learning_epochs(phases: list[Phase]) -> int:
    """Epochs of structure learning before the first freeze: the budget's target anneals over them."""
    epochs = 0
    for phase in phases:
        if phase.freeze_first:
            break
        epochs += phase.epochs if phase.mask_lr > 0 else 0
    return epochs


def _resumable(saved: list | None, plan: list, phase: int) -> bool:
    """Whether ``plan`` continues a run saved in ``phase`` of ``saved``: the same phases up to that
    one, the finished ones as long (the current one may be extended). A checkpoint from before
    plans were saved has none to compare."""
    if saved is None:
        return True
    if len(plan) <= phase or len(saved) <= phase:
        return False
    return (all(s[1:] == p[1:] for s, p in zip(saved[:phase + 1], plan[:phase + 1]))
            and all(s[0] == p[0] for s, p in zip(saved[:phase], plan[:phase])))


def fit(net: nn.Module, data: Data, phases: list[Phase], *, device: torch.device, recipe: Recipe | None = None,
        batch_size: int = 64, seed: int = 0, momentum: float = 0.9, weight_decay: float = 5e-4,
        checkpoint: str | os.PathLike | None = None, resume: Checkpoint | None = None,
        job: ddp.Distributed = ddp.Distributed(), desc: str = "train", evaluate: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, amp: bool = True,
        skip_nonfinite: bool = False, teacher: nn.Module | None = None,
        distill_temperature: float = DEFAULT_TEMPERATURE, distill_alpha: float = DEFAULT_ALPHA,
        recalibrate_batches: int = 0) -> list[dict[str, Any]]:
    """Train ``net`` through ``phases`` with SGD (cosine learning rate within each phase; channel
    gates with Adam, see ``_optimizers``). A net with a budget (``maskfx.Budget``) adds its
    penalty to the loss; its target anneals over the structure-learning epochs before the first
    freeze, and that freeze meets it (with a warning when the learning left more than
    ``maskfx.budget.SHORTFALL`` of the cut to the freeze's selection: too few structure steps).

    After every epoch rank 0 records ``{"phase", "epoch", "loss", "test_accuracy", "seconds"}``
    (and ``"skipped"``, the batches ``skip_nonfinite`` skipped; under a budget, until its freeze,
    ``"budget_expected"``: per resource the ratio the gates' probabilities give) and, given ``checkpoint`` and
    ``recipe``, saves one; ``resume`` (a loaded checkpoint whose state ``net`` already holds)
    continues after its last finished epoch. Returns the history.

    ``recalibrate_batches``: after the last epoch, recompute the BatchNorm statistics over that
    many training batches with the net in eval mode (``maskfx.recalibrate``; the same seeded
    batches on every rank), before the final checkpoint. Statistics gathered in training describe
    the training forward (Jumpout's noise, gates drawn before freeze), not the function that ships;
    the record then also has ``"recalibrated_test_accuracy"``.

    A non-finite loss raises ``NonFiniteLossError`` before its optimizer step, so the checkpoint
    keeps the last good epoch; ``skip_nonfinite`` skips such a batch instead (``run_epoch``).

    Given a ``teacher``, ``net`` learns by knowledge distillation: its loss is
    ``distillation_loss`` at ``distill_temperature``, the KL term weighted ``distill_alpha`` and
    cross-entropy ``1 - distill_alpha`` (``Distillation``; bad values raise ``UserError`` before
    any training). The teacher is moved to ``device`` and run in eval mode under ``no_grad``, its
    modes restored after every epoch; it is not in the optimizer and not wrapped in DDP, so its
    weights and buffers stay as they are (``requires_grad`` untouched; ``UserError`` if it shares
    parameters that ``net`` trains). It is not saved in checkpoints: resuming needs it passed again.
    """
    if isinstance(recalibrate_batches, bool) or not isinstance(recalibrate_batches, int) or recalibrate_batches < 0:
        raise UserError(f"recalibrate_batches must be an int >= 0 (0: no recalibration), got {recalibrate_batches!r}")
    distill = Distillation(teacher, distill_temperature, distill_alpha) if teacher is not None else None
    history = list(resume.history) if resume else []
    plan = [[p.epochs, p.lr, p.mask_lr, p.freeze_first] for p in phases]
    if resume is not None and not _resumable(resume.progress.get("plan"), plan, resume.progress.get("phase", 0)):
        raise UserError(f"the checkpoint was trained through phases {resume.progress['plan']} (epochs, lr, structure "
                        f"lr, freeze first); resuming needs the same up to its phase {resume.progress['phase'] + 1} "
                        f"(which may run longer), got {plan}")
    start_phase, start_epoch = (resume.progress.get("phase", 0), resume.progress.get("epoch", 0)) if resume else (0, 0)
    sampler = DistributedSampler(data.train, num_replicas=job.world, rank=job.rank, shuffle=True, seed=seed)
    loader = DataLoader(data.train, batch_size=batch_size, sampler=sampler)
    evaluation = evaluation_loader(data) if evaluate and job.main else None
    hooks = ddp.share_structure_draws(net, seed) if job.active else []
    done, total = sum(p.epochs for p in phases[:start_phase]) + start_epoch, sum(p.epochs for p in phases)
    budget = penalty_state(net)
    budget_frozen = any(p.freeze_first for p in phases[:start_phase + (start_epoch > 0)])  # selected before resuming
    if budget is not None and resume is None:
        budget.schedule(_learning_epochs(phases) * len(loader))
    try:
        for index in range(start_phase, len(phases)):
            phase, first = phases[index], (start_epoch if index == start_phase else 0)
            if phase.freeze_first and first == 0:
                if budget is not None and not budget_frozen and job.main and (message := shortfall_warning(net)):
                    warnings.warn(message, stacklevel=2)
                freeze(net)
                budget_frozen = True
            model = ddp.wrap(net.to(device), job)
            optimizer, weights = _optimizers(net, phase, momentum, weight_decay)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=max(phase.epochs, 1))
            if resume is not None and index == start_phase and first > 0:
                optimizer.load_state_dict(resume.optimizer)
                scheduler.load_state_dict(resume.scheduler)
            for epoch in range(first, phase.epochs):
                sampler.set_epoch(done)
                torch.manual_seed(ddp.mix(seed, done, job.rank))
                began = time.perf_counter()
                stats = run_epoch(model, loader, optimizer, device, amp, show=job.main, job=job,
                                  skip_nonfinite=skip_nonfinite, distill=distill,
                                  desc=f"{desc} phase {index + 1}/{len(phases)} epoch {epoch + 1}/{phase.epochs}")
                scheduler.step()
                ddp.sync_buffers(net, job)
                done += 1
                record = {"phase": index, "epoch": done, "loss": ddp.mean_over_ranks(stats.loss, job),
                          "seconds": time.perf_counter() - began}
                if skip_nonfinite:
                    record["skipped"] = stats.skipped  # the same on every rank: they skip together
                if budget is not None and not budget_frozen:  # how far the learning has come towards the budget
                    record["budget_expected"] = {r: e for r, (e, _) in expected_against_target(net).items()}
                if evaluation is not None:
                    record["test_accuracy"] = accuracy(*predict(net, evaluation, device))
                history.append(record)
                if recalibrate_batches and done == total:  # the last epoch: BatchNorm for the eval function
                    recalibrate(net, DataLoader(data.train, batch_size=batch_size, shuffle=True,
                                                generator=torch.Generator().manual_seed(seed)), recalibrate_batches)
                    if evaluation is not None:
                        record["recalibrated_test_accuracy"] = accuracy(*predict(net, evaluation, device))
                if checkpoint is not None and recipe is not None:
                    state = Checkpoint(recipe, net.state_dict(), optimizer=optimizer.state_dict(),
                                       scheduler=scheduler.state_dict(),
                                       progress={"phase": index, "epoch": epoch + 1, "plan": plan},
                                       history=history)
                    ddp.on_main(job, lambda: save_checkpoint(checkpoint, state))
                if on_epoch is not None and job.main:
                    on_epoch(record)
    finally:
        for hook in hooks:
            hook.remove()
    return history
