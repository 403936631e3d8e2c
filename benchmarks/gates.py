"""Which gate learns the width under a budget better: the hard-concrete (Louizos et al., 2018; the
channels technique's default) or a Bernoulli gate with a binary forward and the straight-through
gradient (how the MaskConnect and Blockout papers learn their masks)?

The budget suite's task, recipe and seeds (``benchmarks/budget.py``: resnet18 on Fashion-MNIST at
32 px, a start trained on a seeded subset of the training images, then structure learning,
freeze and training on the frozen structure, distilled from the start, BatchNorm recalibrated after
the last epoch), at one budget, 0.5 of the MACs, with one arm per
estimator beside the untouched model trained as long. Every arm is measured on all 10,000 test
images and paired by seed; the difference between the two estimators gets its 95% interval. The
planted tests (``tests/test_channels.py``) hold that both find the channels, branches and blocks
known to carry nothing; this suite asks which keeps more accuracy on a real task.

Budget: per seed a start, the untouched model and two maskfx arms (about 2.5 minutes a seed on 2
cores, nothing else running: the recorded run, from the budget suite's 32-epoch start, took 19.8
minutes); the budget suite's 8 seeds. The quick run (CI-sized) takes the budget suite's quick sizes.

    python -m benchmarks --only gates [--quick]
"""
from __future__ import annotations

import os
import statistics
import time

import torch

import maskfx
from benchmarks.arms import example_batch, training_subset
from benchmarks.budget import (FULL, QUICK, UNTOUCHED, Arm, fashion_data, maskfx_arm, measured, trained_start,
                               untouched_arm)
from benchmarks.stats import worded
from benchmarks.suite import Cell, result, table
from maskfx.train import resolve_device
from maskfx.techniques.channels.config import ESTIMATORS

SUITE = "gates"
TITLE = "Channel gates under a 0.5 MACs budget: hard-concrete vs straight-through (resnet18 on Fashion-MNIST)"
BUDGET = 0.5
COLUMNS = ["arm", "test acc %", "acc std", "Δ vs untouched (pt, paired) [95% interval]", "MAC ratio", "parameters",
           "train s"]
SEED_COLUMNS = ["seed", "arm", "test acc %", "Δ vs untouched (pt)", "MAC ratio", "parameters"]


def run_seed(seed: int, full, budget, example: torch.Tensor, device: torch.device) -> dict[str, Arm]:
    """The untouched model and one maskfx arm per estimator, from one trained start."""
    data = training_subset(full, budget.train_images, seed)
    start = trained_start(data, budget, seed, device, full.num_classes).deploy
    arms = {UNTOUCHED: untouched_arm(start, data, budget, seed, device)}
    for estimator in ESTIMATORS:
        arms[estimator] = maskfx_arm(start, data, budget, BUDGET, seed, device, example,
                                     channels=maskfx.ChannelConfig(estimator=estimator))
    return measured(arms, full, example)


def run(quick: bool) -> dict:
    """Every seed's three arms, trained and measured; ``SuiteSkipped`` without the data."""
    started = time.perf_counter()
    budget = QUICK if quick else FULL
    full = fashion_data(budget)
    example, device = example_batch(full, 8), resolve_device("auto")
    runs = [run_seed(seed, full, budget, example, device) for seed in budget.seeds]
    summary: list[list[Cell]] = []
    per_seed: list[list[Cell]] = []
    for name in (UNTOUCHED, *ESTIMATORS):
        accuracies = [100 * r[name].accuracy for r in runs]
        deltas = [100 * (r[name].accuracy - r[UNTOUCHED].accuracy) for r in runs]
        macs = statistics.mean(r[name].macs / r[UNTOUCHED].macs for r in runs)
        summary.append([name, round(statistics.mean(accuracies), 2),
                        round(statistics.stdev(accuracies), 2) if len(runs) > 1 else None,
                        None if name == UNTOUCHED else worded(deltas), round(macs, 3),
                        round(statistics.mean(r[name].parameters for r in runs)),
                        round(statistics.mean(r[name].seconds for r in runs), 1)])
        per_seed += [[seed, name, round(a, 2), None if name == UNTOUCHED else round(d, 2),
                      round(r[name].macs / r[UNTOUCHED].macs, 3), r[name].parameters]
                     for seed, r, a, d in zip(budget.seeds, runs, accuracies, deltas)]
    hard, straight = ESTIMATORS
    versus = [100 * (r[straight].accuracy - r[hard].accuracy) for r in runs]
    notes = [
        f"resnet18 (torchvision, no weights, 10-class head) at {budget.image_size} px on Fashion-MNIST: "
        f"{budget.train_images} training images per seed, tested on {len(full.test)} test images; the budget "
        f"suite's recipe (start {budget.pretrain} epoch(s), then {budget.learn} at the learning rate, the gates "
        f"learning in the first {budget.structure}, and {budget.finetune} of fine-tuning, maskfx distilled from the "
        f"start), at Budget(macs={BUDGET}); ChannelConfig(estimator=...) "
        f"is the only difference between the maskfx arms.",
        f"Seeds: {', '.join(map(str, budget.seeds))}; differences paired by seed, 95% Student-t intervals.",
        f"{straight} minus {hard}: {worded(versus, ' pt')} (per seed "
        f"{'/'.join(f'{v:+.2f}' for v in versus)})" + (" — quick run: no verdict." if quick else "."),
        "; ".join(f"{name} @ seed {seed}: {note}" for seed, r in zip(budget.seeds, runs) for name in ESTIMATORS
                  for note in r[name].notes),
        f"The whole suite {time.perf_counter() - started:.0f} s on {resolve_device('auto')} "
        f"({torch.get_num_threads()} torch threads), load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    return {**result(SUITE, TITLE + (" [quick: smoke budget]" if quick else ""), [
        table("Untouched vs maskfx with each gate, same start, data, epochs and distillation", COLUMNS, summary, notes),
        table("Per seed", SEED_COLUMNS, per_seed)]), "seeds": list(budget.seeds)}
