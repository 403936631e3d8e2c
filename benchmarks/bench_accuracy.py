"""Does a transform cost accuracy at the demo's budget? Test accuracy of the untouched model
against the same model transformed, seed by seed, with ``maskfx demo``'s recipe, on the digits
(the demo's data) or on Fashion-MNIST (``--data fashion-mnist --train-images N``: N training
images drawn with the seed, all 10,000 test images, so one image is 0.01 points).

    python -m benchmarks.bench_accuracy [--start scratch|trained] [--seeds 0 1 2] \
        [--data digits|fashion-mnist] [--train-images N] \
        [--settings untouched jumpout blockout maskconnect gateconnect] [--out FILE.json]

``--start trained`` is the demo's use: train the untouched model ``baseline`` epochs (it stands in
for a pretrained one), transform *that* model, learn structure ``learn`` epochs, freeze, fine-tune
``finetune`` epochs; the untouched model trains on through the same phases. ``--start scratch``
transforms the untrained model and runs the same total epochs in two phases (learn, then freeze and
fine-tune), the untouched model likewise: the papers' regime. Within a seed every setting starts
from the same weights, split and batch order, so the differences are paired.

A setting is a technique with its default config (``jumpout``, ``blockout``, ``maskconnect``,
``gateconnect``: ``transform(model, technique=True)``) or with options after colons:
``jumpout:PLACEMENT:SIGMA[:I,II,III]`` (the modifications to switch off, for the paper's
ablation), ``maskconnect:K[:INIT[:SAMPLING]]``, ``gateconnect:K``, ``blockout:VARIANT``. GateConnect runs on
the demo's small ResNeXt, everything else on ``--model``; each is compared with its own untouched
model. The README's tables are ``benchmarks/accuracy/*.json`` (``trained``, ``trained-maskconnect``,
``trained-structure-lr-0.05``, ``scratch``, ``scratch-maskconnect``, ``scratch-gateconnect``), written by
this script with ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import maskfx
from benchmarks.arms import training_subset
from maskfx.cli.demo import FINETUNE_LR, FULL, LR, MASK_LR, QUICK, Schedule, small_resnext
from maskfx.cli.options import positive_int
from maskfx.layers.kofn import SWITCH_MARGIN
from maskfx.report import count_parameters
from maskfx.techniques.jumpout.layers import SWITCHES as JUMPOUT_SWITCHES
from maskfx.train import Phase, accuracy, fit, load_data, predict
from maskfx.train.fit import evaluation_loader
from maskfx.train.models import build_model

SWITCHES = dict(zip(("I", "II", "III"), JUMPOUT_SWITCHES))  # the paper's names of Jumpout's modifications
RESNEXT = "resnext"  # the demo's small ResNeXt (C = 8), GateConnect's model


@dataclass(frozen=True)
class Setting:
    text: str
    family: str  # the model it runs on
    transform: dict[str, Any]  # maskfx.transform keyword arguments; {} is the untouched model


def parse_setting(text: str, model: str) -> Setting:
    """``untouched[:family]`` or ``technique[:options]`` -> its Setting; bad text raises ValueError."""
    name, *options = text.split(":")
    if name == "untouched":
        return Setting(text, options[0] if options else model, {})
    if name == "jumpout":
        if not options:
            return Setting(text, model, {"jumpout": True})
        placement, sigma, *off = options
        flags = {SWITCHES[s]: False for s in (off[0].split(",") if off else [])}
        return Setting(text, model, {"jumpout": maskfx.JumpoutConfig(placement=placement, sigma=float(sigma), **flags)})
    if name == "blockout":
        return Setting(text, model, {"blockout": maskfx.BlockoutConfig(variant=options[0]) if options else True})
    if name == "maskconnect":
        config = maskfx.MaskConnectConfig(int(options[0]), *options[1:3]) if options else True
        return Setting(text, model, {"maskconnect": config})
    if name == "gateconnect":
        return Setting(text, RESNEXT, {"gateconnect": maskfx.GateConnectConfig(int(options[0])) if options else True})
    raise ValueError(f"unknown setting {text!r}: untouched, jumpout, blockout, maskconnect or gateconnect")


def build(family: str, num_classes: int) -> nn.Module:
    if family == RESNEXT:
        return small_resnext(num_classes)
    return build_model(f"torchvision:{family}", num_classes)


class Run:
    """One seed: the data, and per model family its starting weights (trained first for ``trained``)."""

    def __init__(self, seed: int, start: str, budget: Schedule, structure_lr: float, data: str = "digits",
                 train_images: int | None = None) -> None:
        self.seed, self.start, self.budget, self.structure_lr = seed, start, budget, structure_lr
        if train_images is None:
            self.data = load_data(data, image_size=32, limit=budget.limit, seed=seed)
        else:  # a seeded draw of training images, every test image
            self.data = training_subset(load_data(data, image_size=32), train_images, seed)
        self.test = evaluation_loader(self.data)
        self.example = torch.stack([self.data.test[i][0] for i in range(8)])
        self.starts: dict[str, nn.Module] = {}

    def start_of(self, family: str) -> nn.Module:
        if family not in self.starts:
            torch.manual_seed(self.seed)
            model = build(family, self.data.num_classes)
            if self.start == "trained":
                self.train(model, [Phase(self.budget.baseline, LR)])
            self.starts[family] = model
        return copy.deepcopy(self.starts[family])

    def train(self, model: nn.Module, phases: list[Phase]) -> None:
        fit(model, self.data, phases, device=torch.device("cpu"), seed=self.seed, evaluate=False, desc="train")

    def accuracy(self, setting: Setting) -> tuple[float, float]:
        """Test accuracy after the lifecycle, and the parameters ``collapse("prune")`` keeps / the model's."""
        model = self.start_of(setting.family)
        net = model
        if setting.transform:
            net = maskfx.transform(model, example_inputs=(self.example,), **setting.transform)
        budget = self.budget
        learn = budget.learn if self.start == "trained" else budget.baseline + budget.learn
        frozen = bool(setting.transform)  # the untouched model has nothing to freeze
        self.train(net, [Phase(learn, LR, self.structure_lr), Phase(budget.finetune, FINETUNE_LR, freeze_first=frozen)])
        kept = count_parameters(maskfx.collapse(net, "prune")) / count_parameters(model) if setting.transform else 1.0
        return accuracy(*predict(net, self.test, torch.device("cpu"))), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", choices=("scratch", "trained"), default="trained")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick budget (256 images, 2 + 1 + 1 epochs)")
    parser.add_argument("--structure-lr", type=float, default=MASK_LR,
                        help=f"masks' and clusters' lr (the demo's: {MASK_LR})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core CPU, run two of these side by side)")
    parser.add_argument("--settings", nargs="+", default=["untouched", "jumpout", "blockout", "maskconnect",
                                                           "untouched:resnext", "gateconnect"])
    parser.add_argument("--data", choices=("digits", "fashion-mnist"), default="digits")
    parser.add_argument("--train-images", type=positive_int, default=None,
                        help="draw this many training images with each seed and test on every test image "
                             "(default: the demo's split)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    settings = [parse_setting(text, args.model) for text in args.settings]  # bad settings fail before training
    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else FULL
    epochs = f"{budget.baseline} + {budget.learn} + {budget.finetune}"
    print(f"{args.data} 32x32, start {args.start}, epochs {epochs} (lr {LR}, structure lr {args.structure_lr}, "
          f"fine-tune lr "
          f"{FINETUNE_LR}), seeds {args.seeds}")
    print(f"{'setting':<22} {'model':<9} " + " ".join(f"{'seed ' + str(s):>7}" for s in args.seeds)
          + f" {'mean':>6} {'vs untouched':>12} {'min/run':>8} pruned parameters", flush=True)
    runs = [Run(seed, args.start, budget, args.structure_lr, args.data, args.train_images) for seed in args.seeds]
    rows, untouched = [], {}
    for setting in settings:
        began = time.perf_counter()
        accs, kept = zip(*(run.accuracy(setting) for run in runs))
        mean = statistics.mean(accs)
        if not setting.transform:
            untouched[setting.family] = accs
        reference = untouched.get(setting.family)
        deltas = [a - r for a, r in zip(accs, reference)] if reference and setting.transform else None
        delta = f"{100 * statistics.mean(deltas):+.1f} pt" if deltas else "-"
        minutes = (time.perf_counter() - began) / 60 / len(runs)
        rows.append({"setting": setting.text, "model": setting.family, "accuracy": accs, "mean": mean,
                     "pruned parameters": [round(k, 4) for k in kept],
                     "paired delta": statistics.mean(deltas) if deltas else None})
        print(f"{setting.text:<22} {setting.family:<9} " + " ".join(f"{100 * a:7.1f}" for a in accs)
              + f" {100 * mean:6.1f} {delta:>12} {minutes:8.1f} " + "/".join(f"{k:.3f}" for k in kept), flush=True)
    if args.out:
        meta = {"start": args.start, "seeds": args.seeds, "epochs": epochs, "lr": LR, "structure lr": args.structure_lr,
                "finetune lr": FINETUNE_LR, "data": args.data,
                "training images": args.train_images if args.train_images is not None else budget.limit,
                "test images": len(runs[0].data.test), "switch margin": SWITCH_MARGIN,
                "torch": torch.__version__}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
