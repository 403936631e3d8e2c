"""Training-step cost of each technique against its plain equivalent: step time (interleaved
medians) and the activations autograd saves for backward, at realistic batch sizes.

Jumpout against nn.Dropout at the same sites; a Blockout head against the same head as
Linear + Dropout; learned and frozen (fine-tuning) MaskConnect blocks against the original chain.
``benchmarks.gpu`` runs the same comparisons on CUDA.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

import maskfx
from benchmarks.measure import REUSED, interleaved_medians, saved_activation_mib, train_step_fn, \
    with_freed_memory_reused
from benchmarks.suite import Cell, ms, ratio, result, table
from maskfx.nn import Jumpout
from maskfx.train.memory import GLIBC

SUITE = "training"
PLAIN = "plain"  # the key of the baseline among a comparison's models
CLASSES = 10
Factory = Callable[[], nn.Module]
Builder = Callable[[torch.Tensor], dict[str, nn.Module]]  # example batch -> variants and PLAIN
COLUMNS = ["technique", "setting", "variant", "step ms", "plain step ms", "time ratio", "saved MiB",
           "plain saved MiB", "memory ratio", "goal (time)"]


@dataclass(frozen=True)
class Comparison:
    """Models that train the same network: ``build(x)`` returns variants plus the ``PLAIN`` one."""

    technique: str
    setting: str
    input_shape: tuple[int, ...]  # batch first
    build: Builder
    goals: dict[str, str]  # variant -> goal of its time ratio


def with_dropout_at_jumpout_sites(net: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The same graph with each Jumpout swapped for nn.Dropout of Jumpout's mean rate."""
    baseline = copy.deepcopy(net)
    for name, module in list(baseline.named_children()):
        if isinstance(module, Jumpout):
            setattr(baseline, name, nn.Dropout(module.expected_rate()))
    return baseline


def resnet18_with_mlp_head(hidden: int = 512, classes: int = CLASSES) -> nn.Module:
    """resnet18 with the Blockout paper's Fig. 5(b) head: two hidden FC layers with Dropout."""
    model = torchvision.models.resnet18(num_classes=classes)
    model.fc = vgg_head(512, hidden, classes)
    return model


def resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=CLASSES)


def vgg_head(features: int = 25088, hidden: int = 4096, classes: int = CLASSES) -> nn.Sequential:
    """A vgg-style classifier (features-hidden-hidden-classes, ReLU and Dropout between); the
    defaults are vgg11's own head."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, classes))


def _jumpout(factory: Factory) -> Builder:
    def build(x: torch.Tensor) -> dict[str, nn.Module]:
        net = maskfx.transform(factory(), jumpout=True)
        return {"jumpout": net, PLAIN: with_dropout_at_jumpout_sites(net)}
    return build


def _blockout(factory: Factory) -> Builder:
    def build(x: torch.Tensor) -> dict[str, nn.Module]:
        model = factory()
        return {"blockout": maskfx.transform(model, blockout=True), PLAIN: model}
    return build


def _maskconnect(factory: Factory, fan_in: int) -> Builder:
    def build(x: torch.Tensor) -> dict[str, nn.Module]:
        model = factory()
        config = maskfx.MaskConnectConfig(fan_in, "uniform", "multinomial")
        learned = maskfx.transform(model, maskconnect=config, example_inputs=(x[:1],))
        frozen = maskfx.freeze(maskfx.transform(model, maskconnect=config, example_inputs=(x[:1],)))
        return {"learned": learned, "frozen (fine-tune)": frozen, PLAIN: model}
    return build


JUMPOUT = "Jumpout vs nn.Dropout at the same sites"
BLOCKOUT = "Blockout head vs Linear+Dropout head"
MASKCONNECT = "MaskConnect blocks vs the original chain"


def comparisons(quick: bool) -> list[Comparison]:
    """The measured settings; ``quick`` keeps one small setting per technique."""
    if quick:
        return [
            Comparison(JUMPOUT, "resnet18 b8 32px", (8, 3, 32, 32), _jumpout(resnet18),
                       {"jumpout": "<= 1.05"}),
            Comparison(BLOCKOUT, "vgg-style head 4096-1024-1024-10 b32", (32, 4096), _blockout(lambda: vgg_head(4096, 1024)),
                       {"blockout": "<= 1.25"}),
            Comparison(MASKCONNECT, "resnet18 b8 32px K=2", (8, 3, 32, 32),
                       _maskconnect(resnet18, 2),
                       {"learned": "<= 1.10", "frozen (fine-tune)": "<= 1.05"}),
        ]
    return [
        Comparison(JUMPOUT, "resnet18 b32 112px", (32, 3, 112, 112), _jumpout(resnet18),
                   {"jumpout": "<= 1.05"}),
        Comparison(BLOCKOUT, "resnet18 + 2x512 MLP head b32 112px", (32, 3, 112, 112), _blockout(resnet18_with_mlp_head),
                   {"blockout": "<= 1.05"}),
        Comparison(BLOCKOUT, "vgg11 head 25088-4096-4096-10 b16", (16, 25088), _blockout(vgg_head),
                   {"blockout": "<= 1.25"}),
        Comparison(BLOCKOUT, "vgg11 head 25088-4096-4096-10 b128", (128, 25088), _blockout(vgg_head),
                   {"blockout": "<= 1.05"}),
        Comparison(MASKCONNECT, "resnet50 b16 112px K=4", (16, 3, 112, 112),
                   _maskconnect(lambda: torchvision.models.resnet50(num_classes=CLASSES), 4),
                   {"learned": "<= 1.10", "frozen (fine-tune)": "<= 1.05"}),
    ]


def measure(comparison: Comparison, device: torch.device, rounds: int, warmup: int) -> list[list[Cell]]:
    """One row per variant: its step time and saved activations against the plain model's."""
    torch.manual_seed(0)
    x = torch.randn(comparison.input_shape)
    y = torch.randint(0, CLASSES, (x.shape[0],))
    models = {name: m.to(device) for name, m in comparison.build(x).items()}
    x, y = x.to(device), y.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = interleaved_medians({name: train_step_fn(m, x, y) for name, m in models.items()},
                            rounds=rounds, warmup=warmup, sync=sync)
    saved = {name: saved_activation_mib(m, x, y) for name, m in models.items()}
    return [[comparison.technique, comparison.setting, name, ms(t[name]), ms(t[PLAIN]), ratio(t[name], t[PLAIN]),
             round(saved[name], 1), round(saved[PLAIN], 1), ratio(saved[name], saved[PLAIN]), goal]
            for name, goal in comparison.goals.items()]


def training_table(quick: bool, device: torch.device, reused: bool = False) -> dict:
    """The comparisons' rows; ``reused`` labels a run after ``maskfx.train.reuse_freed_memory()``."""
    rounds, warmup = (3, 1) if quick else (10, 2)
    rows = [row for c in comparisons(quick) for row in measure(c, device, rounds, warmup)]
    notes = [
        f"SGD step of cross-entropy on a fixed random batch, {CLASSES} classes; medians of {rounds} "
        f"interleaved steps (warm-up rounds: {warmup}), {torch.get_num_threads()} torch threads.",
        "saved MiB: tensors autograd keeps for backward in one training forward (each storage once).",
        "frozen (fine-tune): MaskConnect after maskfx.freeze, the connectivity fixed at its top K.",
    ]
    if reused:
        notes.append("freed memory reused: measured in a fresh process after maskfx.train.reuse_freed_memory(), as "
                     "the maskfx command line trains (glibc keeps freed blocks, such as each step's new weight "
                     "gradients, instead of faulting their pages in afresh).")
    title = f"Training step on {device.type.upper()}: technique / plain equivalent"
    return table(title + (REUSED if reused else ""), COLUMNS, rows, notes)


def run(quick: bool) -> dict:
    """The training table, and on glibc (full runs) the same measured as the command line trains."""
    tables = [training_table(quick, torch.device("cpu"))]
    if GLIBC and not quick:
        tables.append(with_freed_memory_reused("benchmarks.training",
                                               f"training_table({quick}, torch.device('cpu'), reused=True)"))
    return result(SUITE, "Training-step cost", tables)
