"""Does Jumpout cost accuracy at the demo's budget? Test accuracy on the digits data of an
untouched model against the same model with Jumpout, per setting, seed by seed.

    python benchmarks/bench_jumpout_accuracy.py [--model resnet18] [--epochs 5] [--seeds 0 1 2] \
        [--settings untouched relu:0.1 relu:0.02]

A setting is ``untouched`` or ``placement:sigma[:switches]``; switches are letters of the
modifications to turn *off* (``I``, ``II``, ``III``, e.g. ``relu:0.1:III``), for the paper's
ablation. Recipe as ``maskfx demo``: SGD (lr 0.01, momentum 0.9, nesterov, weight decay 5e-4),
cosine schedule over the epochs (5, the demo's default), batch 64, 32x32 images. For a given seed
every setting starts from the same weights, split and batch order, so the differences are paired.
About 7 minutes per run on a busy 2-core CPU. ``placement="dropout"`` gives resnet18 no site (it has
no Dropout), so there it is the untouched model.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import maskfx
from maskfx.train import accuracy, digits_loaders, param_groups, predict, train_epochs

SWITCHES = {"I": "sample_rate", "II": "normalize_rate", "III": "damped_rescale"}


def parse_setting(text: str) -> maskfx.JumpoutConfig | None:
    """``untouched`` -> None; ``placement:sigma[:I,II,III off]`` -> its JumpoutConfig."""
    if text == "untouched":
        return None
    placement, sigma, *off = text.split(":")
    flags = {SWITCHES[s]: False for s in (off[0].split(",") if off else [])}
    return maskfx.JumpoutConfig(placement=placement, sigma=float(sigma), **flags)


def trained_accuracy(model_name: str, config: maskfx.JumpoutConfig | None, seed: int, epochs: int,
                  lr: float) -> tuple[float, int]:
    """Train one model with the demo's recipe; returns its test accuracy and Jumpout site count."""
    torch.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=seed)
    model = torchvision.models.get_model(model_name, weights=None, num_classes=10)
    net = maskfx.transform(model, jumpout=config) if config is not None else model
    sites = maskfx.summary(net).count("jumpout") if config is not None else 0
    optimizer = torch.optim.SGD(param_groups(net, lr=lr, weight_decay=5e-4), momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train_epochs(net, train_loader, optimizer, epochs, torch.device("cpu"), scheduler=scheduler)
    return accuracy(*predict(net, test_loader, torch.device("cpu"))), sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared, busy CPU, a second thread mostly waits)")
    parser.add_argument("--settings", nargs="+", default=["untouched", "relu:0.1", "relu:0.02"])
    args = parser.parse_args()
    configs = {text: parse_setting(text) for text in args.settings}  # bad settings fail before training
    torch.set_num_threads(args.threads)
    print(f"{args.model}, digits 32x32, {args.epochs} epochs, SGD lr {args.lr} cosine, seeds {args.seeds}")
    print(f"{'setting':<18} {'sites':>5} " + " ".join(f"{'seed ' + str(s):>7}" for s in args.seeds)
          + f" {'mean':>7} {'vs untouched':>12} {'min/run':>8}", flush=True)
    reference = None
    for text, config in configs.items():
        start = time.perf_counter()
        runs = [trained_accuracy(args.model, config, seed, args.epochs, args.lr) for seed in args.seeds]
        accs = [acc for acc, _ in runs]
        mean = statistics.mean(accs)
        reference = mean if text == "untouched" else reference
        delta = f"{100 * (mean - reference):+.1f} pt" if reference is not None else "-"
        minutes = (time.perf_counter() - start) / 60 / len(args.seeds)
        print(f"{text:<18} {runs[0][1]:>5} " + " ".join(f"{100 * a:7.1f}" for a in accs)
              + f" {100 * mean:7.1f} {delta:>12} {minutes:8.1f}", flush=True)


if __name__ == "__main__":
    main()
