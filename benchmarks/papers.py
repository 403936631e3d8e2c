"""The papers' comparisons, at small scale on real data, measured as they come out.

Each table mirrors one table of a paper (``/work/shared/papers`` set-ups, shrunk): the same rows,
the same kind of network, trained from scratch with ``maskfx.train.fit`` on a small training split
(the overfitting regime that dropout-like methods target) of Fashion-MNIST at 8x8, tested on
all 10,000 of its test images (the digits leave 1,597 test images beside the 200 trained on, too
few to tell one point from noise; the quick run keeps the digits, which need no installed data),
several seeds, mean and standard deviation of test accuracy, and parameters after pruning where a
method prunes.
Every paper ordering is checked on the paired seeds, and a note says plainly whether it
reproduces here and what a full-scale run needs.

    python -m benchmarks --only papers [--quick]
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

import maskfx
from benchmarks.arms import Arm, Claim, Results, accuracy_rows, claim_note, compare, digits_data, fashion_split, \
    random_fixed_connectivity
from benchmarks.paper_models import cifar_resnet, cifar_resnext, small_cnn
from benchmarks.suite import SuiteSkipped
from maskfx.nn import Jumpout
from maskfx.train import Data, DataError, Phase, resolve_device

SUITE = "papers"
TITLE = "The papers' comparisons on {data} (small training split, from scratch)"


@dataclass(frozen=True)
class Budget:
    train_images: int
    test_images: int | None  # None: every image not trained on
    epochs: int  # Jumpout and Blockout tables: one cosine phase
    maskconnect: tuple[int, int]  # joint epochs (masks learn in the learned arm), then every arm
    gateconnect: tuple[int, int]  # trains on at lr / 10 (the learned arms with their masks frozen)
    seeds: tuple[int, ...]
    smoke: bool = False  # budgets too small for the orderings to mean anything
    data: str = "digits"  # or "fashion-mnist"; 8x8 either way

    def split(self, seed: int) -> Data:
        """The seed's training split and the test images every arm is measured on."""
        draw = fashion_split if self.data == "fashion-mnist" else digits_data
        return draw(self.train_images, self.test_images, seed)


FULL = Budget(train_images=200, test_images=None, epochs=20, maskconnect=(16, 8), gateconnect=(8, 4),
              seeds=(0, 1, 2), data="fashion-mnist")
QUICK = Budget(train_images=100, test_images=200, epochs=2, maskconnect=(1, 1), gateconnect=(1, 1), seeds=(0,),
               smoke=True)
LR = 0.05
# Jumpout's rate spread: the paper tunes it per task. At 0.1 the mean rate is ~0.09 (about 0.18 of
# the active units once normalised), a regularising strength for this tiny CNN; Dropout gets that mean.
SIGMA = 0.1
DROPOUT = Jumpout(sigma=SIGMA).expected_rate()
BLOCKOUT_NODES, BLOCKOUT_CLUSTERS, FC_DROPOUT = 512, 6, 0.3  # the paper's CIFAR-100 set-up
RESNET_BLOCKS_PER_STAGE, MASKCONNECT_K, MASKCONNECT_MASK_LR = 3, 5, 0.3
GATECONNECT_C, GATECONNECT_MASK_LR = 8, 0.2
DATA_NEEDED = ("Data: a local CIFAR copy (maskfx's cifar10:PATH / cifar100:PATH loaders read torchvision's "
               "extracted folders; nothing is downloaded).")
SCALE = {"digits": "Digits: 1,797 8x8 images, 10 classes",
         "fashion-mnist": "Fashion-MNIST: 60,000 training and 10,000 test photos of clothing, 10 classes, served at "
                          "8x8 (from 28x28)"}
VERSUS_PAPERS = ", vs the papers' CIFAR (50k 32x32 images, 10 or 100 classes) and epochs in the hundreds."
DATA_NAMES = {"digits": "the digits", "fashion-mnist": "Fashion-MNIST"}


@dataclass(frozen=True)
class Table:
    title: str
    arms: list[Arm]
    claims: list[Claim]
    prune: str  # see benchmarks.arms.measure
    setup: str
    full_scale: str


def _jumpout(**switches: bool):
    config = maskfx.JumpoutConfig(placement="dropout", sigma=SIGMA, **switches)
    return lambda example, seed: maskfx.transform(small_cnn(DROPOUT, hidden=(128,)), jumpout=config)


def jumpout_table(budget: Budget) -> Table:
    phases = [Phase(budget.epochs, LR)]
    ablation = {"Dropout+I": (True, False, False), "Dropout+I+II": (True, True, False),
                "Dropout+II": (False, True, False), "Dropout+II+III": (False, True, True),
                "Dropout+III": (False, False, True), "Dropout+III+I": (True, False, True)}
    paper = {"Dropout": 86.50, "Dropout+I": 87.56, "Dropout+I+II": 90.06, "Dropout+II": 87.14,
             "Dropout+II+III": 89.64, "Dropout+III": 87.70, "Dropout+III+I": 87.36, "Jumpout": 90.24}
    arms = [Arm("no dropout", lambda e, s: small_cnn(0.0, hidden=(128,)), phases),
            Arm("Dropout", lambda e, s: small_cnn(DROPOUT, hidden=(128,)), phases, paper["Dropout"])]
    arms += [Arm(name, _jumpout(sample_rate=i, normalize_rate=ii, damped_rescale=iii), phases, paper[name])
             for name, (i, ii, iii) in ablation.items()]
    arms += [Arm("Jumpout", _jumpout(), phases, paper["Jumpout"]),
             Arm("Jumpout after every ReLU (placement='relu')", lambda e, s: maskfx.transform(
                 small_cnn(0.0, hidden=(128,)), jumpout=maskfx.JumpoutConfig(sigma=SIGMA)), phases)]
    claims = [Claim("Jumpout", "Dropout")] + [Claim(f"Dropout+{m}", "Dropout") for m in ("I", "II", "III")] + \
             [Claim("Jumpout", pair) for pair in ("Dropout+I+II", "Dropout+II+III", "Dropout+III+I")]
    return Table(
        "Jumpout Tables 1-2: no dropout / Dropout / Jumpout and the I/II/III ablation", arms, claims, "no",
        f"Paper: CIFAR10(s), a 4-conv CNN with Dropout after its ReLUs, which Jumpout replaces (maskfx "
        f"placement='dropout'). Here: the same shape (conv 32-32-pool-64-64-pool, FC 128, BatchNorm) with "
        f"Dropout p = {DROPOUT:.3f} at 3 sites = Jumpout's mean rate at sigma = {SIGMA} (Jumpout with all "
        f"switches off is that Dropout in distribution); {budget.epochs} epochs, SGD lr {LR} cosine, batch 32.",
        "Full scale: CIFAR-10 with the paper's CNN, and WideResNet-28-10 on CIFAR-10/100 for the other columns, "
        "~200 epochs, sigma tuned per data set as the paper does: well under a GPU hour per small-CNN run, "
        "roughly 5-10 GPU hours per WRN-28-10 run (estimate), so 10 arms x 3 seeds x 2 data sets of WRN is "
        f"300-600 GPU hours. {DATA_NEEDED}")


def _blockout(variant: str):
    def build(example, seed):
        config = maskfx.BlockoutConfig(clusters=BLOCKOUT_CLUSTERS, hidden=(BLOCKOUT_NODES,) * 2, variant=variant,
                                       seed=seed)
        return maskfx.transform(small_cnn(), blockout=config, example_inputs=(example,))
    return build


def blockout_table(budget: Budget) -> Table:
    phases = [Phase(budget.epochs, LR, mask_lr=LR)]  # the paper: cluster logits at the network's rate
    hidden = (BLOCKOUT_NODES,) * 2
    arms = [Arm("Baseline", lambda e, s: small_cnn(), phases, 61.56),
            Arm("Baseline + FC", lambda e, s: small_cnn(hidden=hidden), phases, 62.66),
            Arm("Baseline + FC + Dropout", lambda e, s: small_cnn(hidden=hidden, head_dropout=FC_DROPOUT),
                phases, 64.32),
            Arm("Blockout (soft, learned)", _blockout("soft-learned"), phases, 63.57),
            Arm("Blockout (hard, fixed)", _blockout("hard-fixed"), phases, 65.62),
            Arm("Blockout (hard, learned)", _blockout("hard-learned"), phases, 65.66)]
    claims = [Claim("Baseline + FC + Dropout", "Baseline + FC"),
              Claim("Blockout (hard, learned)", "Baseline + FC + Dropout"),
              Claim("Blockout (hard, fixed)", "Baseline + FC + Dropout"),
              Claim("Blockout (hard, learned)", "Blockout (soft, learned)")]
    return Table(
        "Blockout Table 1: baseline / +FC / +FC+Dropout / Blockout variants", arms, claims, "both",
        f"Paper: CIFAR-100, a compact Inception; +FC adds two {BLOCKOUT_NODES}-node FC layers, Dropout 30%, "
        f"Blockout replaces them with k = {BLOCKOUT_CLUSTERS} clusters. Here: the 4-conv trunk (global pool, "
        f"64 features) with the same head sizes, clusters and rate; {budget.epochs} epochs, SGD lr {LR} cosine, "
        f"cluster logits at lr {LR}; no freeze (the paper has none), so 'pruned' thresholds the probabilities "
        f"and can cost accuracy.",
        "Full scale: CIFAR-100 with the compact Inception baseline and standard augmentation, a few hundred "
        f"epochs: a few GPU hours per run (estimate), 6 arms x 3 seeds ~ 50-100 GPU hours. {DATA_NEEDED}")


def _maskconnect(random: bool):
    def build(example, seed):
        config = maskfx.MaskConnectConfig(MASKCONNECT_K, "uniform", "multinomial")
        net = maskfx.transform(cifar_resnet(RESNET_BLOCKS_PER_STAGE), maskconnect=config, example_inputs=(example,))
        return random_fixed_connectivity(net, seed) if random else net
    return build


def _structure_phases(epochs: tuple[int, int], mask_lr: float = 0.0) -> list[Phase]:
    """Joint phase, then ``lr / 10`` with the structure frozen (a no-op for fixed arms)."""
    return [Phase(epochs[0], LR, mask_lr), Phase(epochs[1], LR / 10, freeze_first=mask_lr > 0)]


def maskconnect_table(budget: Budget) -> Table:
    blocks, k = 3 * RESNET_BLOCKS_PER_STAGE, MASKCONNECT_K
    fixed, learned = _structure_phases(budget.maskconnect), _structure_phases(budget.maskconnect, MASKCONNECT_MASK_LR)
    arms = [Arm("Fixed-Prev, K=1 (ResNet)", lambda e, s: cifar_resnet(RESNET_BLOCKS_PER_STAGE), fixed, 68.54),
            Arm(f"Fixed-Random, K={k}", _maskconnect(random=True), fixed, 62.67),
            Arm(f"Learned, K={k}", _maskconnect(random=False), learned, 70.40)]
    names = [a.name for a in arms]
    claims = [Claim(names[2], names[0]), Claim(names[2], names[1]), Claim(names[0], names[1])]
    return Table(
        "MaskConnect Table 1: fixed previous / fixed random K / learned K, residual blocks", arms, claims, "exact",
        f"Paper: CIFAR-100, ResNet-38 (L = 18 blocks), K = 10 (the paper column is that row). Here: a "
        f"CIFAR-style ResNet-{2 + 2 * blocks} (L = {blocks} blocks, widths 16-32-64), one chain of {blocks} blocks "
        f"whose candidates are the chain input and every earlier block, K = {k}; {budget.maskconnect[0]} epochs at "
        f"lr {LR} (masks at lr {MASKCONNECT_MASK_LR} in the learned arm), then freeze and {budget.maskconnect[1]} "
        f"epochs at "
        f"lr {LR / 10} for every arm. Accuracy and parameters are of collapse('prune'), the same function "
        f"once frozen.",
        "Full scale: CIFAR-100, ResNet-38/74/110 at K = 10/15/20 and the paper's appendix A.6 recipe: 1-3 "
        f"GPU hours per run (estimate), 9 rows x 3 seeds ~ 25-80 GPU hours. {DATA_NEEDED}")


def _gateconnect(k: int, random: bool):
    def build(example, seed):
        net = maskfx.transform(cifar_resnext(cardinality=GATECONNECT_C), example_inputs=(example,),
                               gateconnect=maskfx.GateConnectConfig(fan_in=k))
        return random_fixed_connectivity(net, seed) if random else net
    return build


def gateconnect_table(budget: Budget) -> Table:
    c, half = GATECONNECT_C, GATECONNECT_C // 2
    fixed, learned = _structure_phases(budget.gateconnect), _structure_phases(budget.gateconnect, GATECONNECT_MASK_LR)
    arms = [Arm(f"Fixed-Full, K={c} (ResNeXt)", lambda e, s: cifar_resnext(cardinality=c), fixed, 73.37),
            Arm(f"Fixed-Random, K={half}", _gateconnect(half, random=True), fixed, 72.66),
            Arm("Learned, K=1", _gateconnect(1, random=False), learned, 73.76),
            Arm(f"Learned, K={half}", _gateconnect(half, random=False), learned, 75.77)]
    names = [a.name for a in arms]
    claims = [Claim(names[3], names[0]), Claim(names[3], names[1]), Claim(names[2], names[0])]
    return Table(
        "GateConnect Table 1: fixed full / random / learned at K=1 and K=C/2, ResNeXt branches", arms, claims,
        "exact",
        f"Paper: CIFAR-100, ResNeXt {{29, 8, 8}}, mean of 4 runs; parameters after pruning 0.86M (Fixed-Full), "
        f"0.85M (Fixed-Random), 0.65M (K=1), 0.81M (K=4). Here: a CIFAR-style ResNeXt of 6 modules (2 per stage, "
        f"outputs 64-128-256), C = {c} branches of width 4-8-16 (the paper's Fig. 2 model {{20, 4, 8}}); maskfx "
        f"chains start at a module with a projection shortcut, so the second module of each stage is gated. "
        f"{budget.gateconnect[0]} epochs at lr {LR} (gates at lr {GATECONNECT_MASK_LR} in the learned arms), then "
        f"freeze and {budget.gateconnect[1]} epochs at lr {LR / 10}; accuracy and parameters of collapse('prune').",
        "Full scale: CIFAR-100, ResNeXt-29 {29, 8, 8} (a few GPU hours per run) and {29, 64, 8} (1-2 GPU-days "
        "per run, estimates), the paper's schedule, 4 rows x 4 seeds: ~400-800 GPU hours, nearly all of it the "
        f"{{29, 64, 8}} rows. {DATA_NEEDED}")


def _pruning_note(table: Table, results: Results) -> str | None:
    """Parameters after pruning of the learned rows relative to the untouched network."""
    if table.prune != "exact":
        return None
    reference = results.runs[table.arms[0].name][0].pruned_parameters
    mean = {arm.name: statistics.mean(r.pruned_parameters for r in results.runs[arm.name]) for arm in table.arms}
    parts = [f"{arm.name} {mean[arm.name] / reference:.3f}" for arm in table.arms[1:]]
    return f"parameters after pruning / {table.arms[0].name}: " + ", ".join(parts)


def _spread_notes(table: Table, results: Results, points: float = 15.0) -> list[str]:
    """Rows whose seeds disagree by more than ``points``: training that is unstable at this budget."""
    notes = []
    for arm in table.arms:
        accuracies = results.accuracies(arm.name)
        if max(accuracies) - min(accuracies) > points:
            notes.append(f"{arm.name}: seeds range {min(accuracies):.1f}-{max(accuracies):.1f}%, training is "
                         f"unstable at this budget (a mean over {len(accuracies)} seeds says little here)")
    return notes


def run_table(table: Table, budget: Budget, device: torch.device, test_images: int) -> dict:
    began = time.perf_counter()
    results = compare(table.arms, budget.split, budget.seeds, device, table.prune)
    columns, rows = accuracy_rows(table.arms, results, table.prune)
    paper = {arm.name: arm.paper for arm in table.arms}
    notes = [table.setup, SCALE[budget.data] + VERSUS_PAPERS]
    notes += [claim_note(c, results, paper, not budget.smoke) for c in table.claims]
    notes += [n for n in (_pruning_note(table, results),) if n] + _spread_notes(table, results)
    notes += [table.full_scale,
              f"{len(budget.seeds)} seed(s) {list(budget.seeds)}, {budget.train_images} training images, "
              f"{test_images:,} test images; "
              f"{time.perf_counter() - began:.0f} s on {device} ({torch.get_num_threads()} torch thread(s)), "
              f"load average {os.getloadavg()[0]:.1f} at the end"]
    return {"title": table.title, "columns": columns, "rows": rows, "notes": notes}


TABLES = (jumpout_table, blockout_table, maskconnect_table, gateconnect_table)


def run(quick: bool) -> dict:
    """Every table; ``quick``: one seed and tiny budgets (a smoke run, numbers meaningless)."""
    budget = QUICK if quick else FULL
    try:
        test_images = len(budget.split(budget.seeds[0]).test)
    except DataError as error:
        raise SuiteSkipped(str(error)) from None
    device = resolve_device("auto")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread mostly waits on a shared CPU
    try:
        tables = [run_table(make(budget), budget, device, test_images) for make in TABLES]
    finally:
        torch.set_num_threads(threads)
    title = TITLE.format(data=DATA_NAMES[budget.data])
    return {"suite": SUITE, "title": title + (" [quick: smoke budgets]" if quick else ""), "tables": tables,
            "seeds": list(budget.seeds)}

