"""maskfx against Torch-Pruning's L2 magnitude pruning at equal MACs, on 24 seeds the budget suite
never ran: is maskfx ahead at 0.5 and 0.35 of resnet18's MACs, or level?

The budget suite (``benchmarks/budget.py``) measures every arm on 8 seeds. There, at the MACs
Torch-Pruning's L2 arm lands at, maskfx led on the mean at both budgets, but the seed-to-seed
spread of the paired difference (about one point) left the 95% interval across zero: +0.39
[-0.38, +1.16] at 0.5 and +0.12 [-0.70, +0.93] at 0.35. Three times the seeds narrow the interval
by about half; fresh seeds (8 to 31) make this a replication, not the same runs again.

Only what that question needs runs: per seed the budget suite's start (its recipe, sizes and
epochs: ``FULL``), the untouched model trained on, Torch-Pruning's L2 arm at each budget (pruned
iteratively to the first step under it, then trained distilled), and maskfx at the MACs that arm
landed at (``Budget(macs=...)`` the peer's ratio, distilled alike). About 2.6 minutes a seed on 2
cores, nothing else running (the recorded run: 63.5 minutes). The quick run (CI-sized) takes the
budget suite's quick sizes.

The budgets are the issue's. Below them a uniform cut should cost more than a learned allocation:
the equal-macs-deep suite (``benchmarks/equal_macs_deep.py``) runs these arms at 0.2 and 0.1 on
24 further seeds, through ``compare``.

    python -m benchmarks --only equal-macs [--quick]
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.arms import example_batch, training_subset
from benchmarks.budget import (FULL, QUICK, TORCH_PRUNING, UNTOUCHED, Arm, RunBudget, fashion_data, maskfx_arm,
                               measured, peer_arm, torch_pruned, trained_start, untouched_arm)
from benchmarks.stats import interval95, worded
from benchmarks.suite import Cell, result, table
from maskfx.config import DEEP_CUT, DEEP_CUT_MULTIPLIER, DEFAULT_MULTIPLIER
from maskfx.report import count_macs
from maskfx.train import Data, resolve_device

SUITE = "equal-macs"
TITLE = "maskfx vs Torch-Pruning L2 at equal MACs, 24 fresh seeds (resnet18 on Fashion-MNIST)"
SEEDS = tuple(range(8, 32))  # the budget suite runs 0-7
BUDGETS = (0.5, 0.35)
L2 = TORCH_PRUNING + " L2"
MASKFX_AT_L2 = "maskfx, at L2's MACs"
DELTA, VERSUS = "Δ vs untouched (pt, paired) [95% interval]", "Δ maskfx − L2 (pt, paired) [95% interval]"
COLUMNS = ["MACs budget", "arm", "MAC ratio", "test acc %", "acc std", DELTA, VERSUS]
SEED_COLUMNS = ["seed", "MACs budget", "arm", "test acc %", "Δ vs untouched (pt)", "MAC ratio"]
STARTED_VERSUS = "Δ vs maskfx's default start (pt, paired) [95% interval]"
START_COLUMNS = ["MACs budget", "arm", "multiplier at the first structure step", "expected MAC ratio at freeze (mean)",
                 STARTED_VERSUS]


def key(arm: str, b: float) -> str:
    return f"{arm} @ {b}"


def started_at(multiplier: float) -> str:
    """The arm of maskfx at L2's MACs with the budget's multiplier started at ``multiplier`` (the
    plain arm starts at the budget's default, ``Budget.start_multiplier``)."""
    return f"{MASKFX_AT_L2}, multiplier started at {multiplier:g}"


def run_seed(seed: int, full: Data, budget: RunBudget, budgets: tuple[float, ...], example: torch.Tensor,
             device: torch.device, multipliers: tuple[float, ...] = ()) -> dict[str, Arm]:
    """The untouched model, and per budget the L2 arm and maskfx at the MACs it landed at (and so
    again per multiplier of ``multipliers``, the budget's ``initial_multiplier``)."""
    data = training_subset(full, budget.train_images, seed)
    start = trained_start(data, budget, seed, device, full.num_classes).deploy
    arms = {UNTOUCHED: untouched_arm(start, data, budget, seed, device)}
    base = count_macs(start, example)
    pruned = torch_pruned(start, example, [int(b * base) for b in budgets], budget.prune_steps, "l2", None)
    for b, got in zip(budgets, pruned):
        arms[key(L2, b)] = peer_arm(got, start, data, budget, seed, device, f"l2 {b}")
        arms[key(MASKFX_AT_L2, b)] = maskfx_arm(start, data, budget, got.macs / base, seed, device, example)
        for multiplier in multipliers:
            arms[key(started_at(multiplier), b)] = maskfx_arm(start, data, budget, got.macs / base, seed, device,
                                                              example, initial_multiplier=multiplier)
    return measured(arms, full, example)


def verdict(differences: list[float], subject: str = "maskfx") -> str:
    """Ahead, behind or level (where the paired difference's 95% interval lies against zero), and
    on how many seeds ``subject`` was ahead."""
    _, low, high = interval95(differences)
    word = f"{subject} ahead" if low > 0 else f"{subject} behind" if high < 0 else "level (the interval spans zero)"
    return (f"{word}; {subject} ahead on {sum(d > 0 for d in differences)} seeds of {len(differences)}, the "
            f"paired difference's std {statistics.stdev(differences):.2f} pt")


@dataclass(frozen=True)
class Comparison:
    """One suite of this kind: its name and title, its seeds and its MACs budgets."""

    suite: str
    title: str
    seeds: tuple[int, ...]
    budgets: tuple[float, ...]
    multipliers: tuple[float, ...] = ()  # further maskfx arms, each with Budget(initial_multiplier=) given


def run(quick: bool) -> dict:
    """Every seed's arms, trained and measured; ``SuiteSkipped`` without the data."""
    return compare(Comparison(SUITE, TITLE, SEEDS, BUDGETS), quick)


def compare(comparison: Comparison, quick: bool) -> dict:
    """``comparison``'s seeds and budgets, trained and measured, as its suite's record (the quick
    run: the budget suite's quick sizes and seed, at ``comparison``'s first budget)."""
    started = time.perf_counter()
    budget, seeds, budgets = ((QUICK, QUICK.seeds, comparison.budgets[:1]) if quick
                              else (FULL, comparison.seeds, comparison.budgets))
    full = fashion_data(budget)
    example, device = example_batch(full, 8), resolve_device("auto")
    runs = [run_seed(seed, full, budget, budgets, example, device, comparison.multipliers) for seed in seeds]

    def points(name: str, minus: str = UNTOUCHED) -> list[float]:
        return [100 * (r[name].accuracy - r[minus].accuracy) for r in runs]

    def one_verdict(b: float, differences: list[float], subject: str = "maskfx") -> str:
        return f"at {b}: {verdict(differences, subject)}" if len(differences) > 1 else f"at {b}: one seed, no verdict"

    def at_freeze(name: str) -> float:
        return round(statistics.mean(r[name].expected_at_freeze for r in runs), 3)

    def first_multiplier(name: str) -> str:
        return " or ".join(f"{m:g}" for m in sorted({r[name].start_multiplier for r in runs}))

    def accuracy_row(b: float | None, name: str, versus: str | None = None) -> list[Cell]:
        accuracies = [100 * r[name].accuracy for r in runs]
        return [b, name if b is None else name.split(" @ ")[0],
                round(statistics.mean(r[name].macs / r[UNTOUCHED].macs for r in runs), 4),
                round(statistics.mean(accuracies), 2),
                round(statistics.stdev(accuracies), 2) if len(runs) > 1 else None,
                None if name == UNTOUCHED else worded(points(name)), versus]

    maskfx_arms = [MASKFX_AT_L2] + [started_at(m) for m in comparison.multipliers]
    subjects = {MASKFX_AT_L2: "maskfx", **{started_at(m): f"maskfx started at {m:g}" for m in comparison.multipliers}}
    summary = [accuracy_row(None, UNTOUCHED)]
    per_seed: list[list[Cell]] = []
    starts: list[list[Cell]] = []
    verdicts, start_verdicts = [], []
    for b in budgets:
        summary.append(accuracy_row(b, key(L2, b)))
        for name in maskfx_arms:
            ahead = points(key(name, b), key(L2, b))
            summary.append(accuracy_row(b, key(name, b), worded(ahead)))
            verdicts.append(one_verdict(b, ahead, subjects[name]))
        starts.append([b, MASKFX_AT_L2, first_multiplier(key(MASKFX_AT_L2, b)), at_freeze(key(MASKFX_AT_L2, b)), None])
        for m in comparison.multipliers:
            gain = points(key(started_at(m), b), key(MASKFX_AT_L2, b))
            starts.append([b, started_at(m), first_multiplier(key(started_at(m), b)), at_freeze(key(started_at(m), b)),
                           worded(gain)])
            start_verdicts.append(one_verdict(b, gain, f"the start at {m:g}"))
    for seed, r in zip(seeds, runs):
        per_seed += [[seed, None, UNTOUCHED, round(100 * r[UNTOUCHED].accuracy, 2), None, 1.0]]
        per_seed += [[seed, b, name, round(100 * r[key(name, b)].accuracy, 2),
                      round(100 * (r[key(name, b)].accuracy - r[UNTOUCHED].accuracy), 2),
                      round(r[key(name, b)].macs / r[UNTOUCHED].macs, 4)]
                     for b in budgets for name in [L2] + maskfx_arms]
    notes = [
        f"resnet18 (torchvision, no weights, 10-class head) at {budget.image_size} px on Fashion-MNIST: "
        f"{budget.train_images} training images per seed, tested on {len(full.test)} test images; the budget "
        f"suite's recipe (start {budget.pretrain} epoch(s), then {budget.learn} at the learning rate, maskfx's gates "
        f"learning in the first {budget.structure}, and {budget.finetune} of fine-tuning; both pruned arms distilled "
        f"from the start). Torch-Pruning: MagnitudeImportance(p=2), {budget.prune_steps} iterative steps, taken at "
        f"the first step under the budget; maskfx: Budget(macs=) that step's MAC ratio"
        + "".join(f", and again with Budget(initial_multiplier={m:g})" for m in comparison.multipliers) + ".",
        f"Seeds: {', '.join(map(str, seeds))}; differences paired by seed, 95% Student-t intervals.",
        "Verdict " + "; ".join(verdicts) + (" — quick run." if quick else "."),
        f"The whole suite {time.perf_counter() - started:.0f} s on {device} ({torch.get_num_threads()} torch "
        f"threads), load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    tables = [table("Untouched, Torch-Pruning L2 and maskfx at L2's MACs, same start, data, epochs and distillation",
                    COLUMNS, summary, notes),
              table("Per seed", SEED_COLUMNS, per_seed)]
    if comparison.multipliers:
        tables.append(table("maskfx's budget multiplier started elsewhere, against its default start "
                            f"({DEEP_CUT_MULTIPLIER:g} under {DEEP_CUT:g} of the MACs, else {DEFAULT_MULTIPLIER:g})",
                            START_COLUMNS, starts, [
                                "Expected MAC ratio at freeze: what the gates' probabilities gave when freeze "
                                "selected the kept units (the rest of the cut is freeze's, by near-tied "
                                "probabilities).",
                                "Verdict " + "; ".join(start_verdicts) + (" — quick run." if quick else ".")]))
    return {**result(comparison.suite, comparison.title + (" [quick: smoke budget]" if quick else ""), tables),
            "seeds": list(seeds)}
