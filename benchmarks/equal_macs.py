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


def key(arm: str, b: float) -> str:
    return f"{arm} @ {b}"


def run_seed(seed: int, full: Data, budget: RunBudget, budgets: tuple[float, ...], example: torch.Tensor,
             device: torch.device) -> dict[str, Arm]:
    """The untouched model, and per budget the L2 arm and maskfx at the MACs it landed at."""
    data = training_subset(full, budget.train_images, seed)
    start = trained_start(data, budget, seed, device, full.num_classes).deploy
    arms = {UNTOUCHED: untouched_arm(start, data, budget, seed, device)}
    base = count_macs(start, example)
    pruned = torch_pruned(start, example, [int(b * base) for b in budgets], budget.prune_steps, "l2", None)
    for b, got in zip(budgets, pruned):
        arms[key(L2, b)] = peer_arm(got, start, data, budget, seed, device, f"l2 {b}")
        arms[key(MASKFX_AT_L2, b)] = maskfx_arm(start, data, budget, got.macs / base, seed, device, example)
    return measured(arms, full, example)


def verdict(differences: list[float]) -> str:
    """Ahead, behind or level (where the paired difference's 95% interval lies against zero), and
    on how many seeds maskfx was ahead."""
    _, low, high = interval95(differences)
    word = "maskfx ahead" if low > 0 else "maskfx behind" if high < 0 else "level (the interval spans zero)"
    return (f"{word}; maskfx ahead on {sum(d > 0 for d in differences)} seeds of {len(differences)}, the "
            f"paired difference's std {statistics.stdev(differences):.2f} pt")


@dataclass(frozen=True)
class Comparison:
    """One suite of this kind: its name and title, its seeds and its MACs budgets."""

    suite: str
    title: str
    seeds: tuple[int, ...]
    budgets: tuple[float, ...]


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
    runs = [run_seed(seed, full, budget, budgets, example, device) for seed in seeds]

    def points(name: str, minus: str = UNTOUCHED) -> list[float]:
        return [100 * (r[name].accuracy - r[minus].accuracy) for r in runs]

    def accuracy_row(b: float | None, name: str, versus: str | None = None) -> list[Cell]:
        accuracies = [100 * r[name].accuracy for r in runs]
        return [b, name if b is None else name.split(" @ ")[0],
                round(statistics.mean(r[name].macs / r[UNTOUCHED].macs for r in runs), 4),
                round(statistics.mean(accuracies), 2),
                round(statistics.stdev(accuracies), 2) if len(runs) > 1 else None,
                None if name == UNTOUCHED else worded(points(name)), versus]

    summary = [accuracy_row(None, UNTOUCHED)]
    per_seed: list[list[Cell]] = []
    verdicts = []
    for b in budgets:
        ahead = points(key(MASKFX_AT_L2, b), key(L2, b))
        summary += [accuracy_row(b, key(L2, b)), accuracy_row(b, key(MASKFX_AT_L2, b), worded(ahead))]
        verdicts.append(f"at {b}: {verdict(ahead)}" if len(ahead) > 1 else f"at {b}: one seed, no verdict")
    for seed, r in zip(seeds, runs):
        per_seed += [[seed, None, UNTOUCHED, round(100 * r[UNTOUCHED].accuracy, 2), None, 1.0]]
        per_seed += [[seed, b, name, round(100 * r[key(name, b)].accuracy, 2),
                      round(100 * (r[key(name, b)].accuracy - r[UNTOUCHED].accuracy), 2),
                      round(r[key(name, b)].macs / r[UNTOUCHED].macs, 4)]
                     for b in budgets for name in (L2, MASKFX_AT_L2)]
    notes = [
        f"resnet18 (torchvision, no weights, 10-class head) at {budget.image_size} px on Fashion-MNIST: "
        f"{budget.train_images} training images per seed, tested on {len(full.test)} test images; the budget "
        f"suite's recipe (start {budget.pretrain} epoch(s), then {budget.learn} at the learning rate, maskfx's gates "
        f"learning in the first {budget.structure}, and {budget.finetune} of fine-tuning; both pruned arms distilled "
        f"from the start). Torch-Pruning: MagnitudeImportance(p=2), {budget.prune_steps} iterative steps, taken at "
        f"the first step under the budget; maskfx: Budget(macs=) that step's MAC ratio.",
        f"Seeds: {', '.join(map(str, seeds))}; differences paired by seed, 95% Student-t intervals.",
        "Verdict " + "; ".join(verdicts) + (" — quick run." if quick else "."),
        f"The whole suite {time.perf_counter() - started:.0f} s on {device} ({torch.get_num_threads()} torch "
        f"threads), load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    return {**result(comparison.suite, comparison.title + (" [quick: smoke budget]" if quick else ""), [
        table("Untouched, Torch-Pruning L2 and maskfx at L2's MACs, same start, data, epochs and distillation",
              COLUMNS, summary, notes),
        table("Per seed", SEED_COLUMNS, per_seed)]), "seeds": list(seeds)}
