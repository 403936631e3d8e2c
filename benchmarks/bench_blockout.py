"""Blockout costs and gains: training-step time against the same head as Linear + Dropout, and
prune against expected collapse (MACs, ONNX Runtime latency, accuracy on the digits demo data).

    python benchmarks/bench_blockout.py [--rounds 15] [--epochs 5]
"""
from __future__ import annotations

import argparse
import tempfile

import torch
import torchvision
from torch import nn

import maskfx
from maskfx.train import accuracy, digits_loaders, param_groups, predict, train_epochs
from measure import count_macs, interleaved_medians, ort_latency_ratio, print_ratio, train_step_fn


def resnet18_with_mlp_head(hidden: int = 512, classes: int = 10) -> nn.Module:
    """resnet18 with the paper's Fig. 5(b) head: two hidden FC layers with Dropout."""
    model = torchvision.models.resnet18(num_classes=classes)
    model.fc = nn.Sequential(nn.Linear(512, hidden), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, classes))
    return model


def bench_train_step(label: str, model: nn.Module, x: torch.Tensor, rounds: int) -> None:
    y = torch.randint(0, 10, (x.shape[0],))
    blockout = maskfx.transform(model, blockout=True)
    t = interleaved_medians({"blockout": train_step_fn(blockout, x, y), "dropout": train_step_fn(model, x, y)},
                            rounds=rounds)
    print_ratio(f"{label} train step: Blockout head / Linear+Dropout", t["blockout"], t["dropout"], "<= 1.05")


def bench_prune_vs_expected(args) -> None:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    train_loader, test_loader = digits_loaders(seed=0)
    net = maskfx.transform(torchvision.models.resnet18(num_classes=10), blockout=True)
    optimizer = torch.optim.SGD(param_groups(net, lr=0.01, mask_lr=1.0, weight_decay=5e-4), momentum=0.9)
    train_epochs(net, train_loader, optimizer, args.epochs, cpu, desc="joint")
    results = {"expected": maskfx.collapse(net, "expected"), "prune (no fine-tune)": maskfx.collapse(net, "prune")}
    maskfx.freeze(net)
    optimizer = torch.optim.SGD(param_groups(net, lr=0.005, weight_decay=5e-4), momentum=0.9)
    train_epochs(net, train_loader, optimizer, args.finetune_epochs, cpu, desc="fine-tune")
    results["freeze + fine-tune + prune"] = maskfx.collapse(net, "prune")
    x = next(iter(test_loader))[0][:32]
    print(f"digits, resnet18 + Blockout(k=6) head, {args.epochs} joint epochs, {args.finetune_epochs} fine-tune:")
    base_macs = count_macs(results["expected"], x[:1])
    for label, model in results.items():
        acc = accuracy(*predict(model, test_loader, cpu))
        head = [n for n in maskfx.summary(model).notes if "blockout collapse" in n][0].split(": ", 1)[1]
        print(f"  {label:<28} accuracy {acc:.4f}  model MACs x{count_macs(model, x[:1]) / base_macs:.4f}  ({head[:88]})")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"expected": results["expected"], "pruned": results["freeze + fine-tune + prune"]}
        t, _ = ort_latency_ratio(models, x, args.rounds, tmp)
    print_ratio("  ORT latency b32 32px: pruned / expected", t["pruned"], t["expected"], "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_train_step("resnet18 + 2x512 MLP head b32 112px", resnet18_with_mlp_head(), torch.randn(32, 3, 112, 112),
                     args.rounds)
    bench_train_step("vgg11 (25088-4096-4096 head) b16 32px", torchvision.models.vgg11(num_classes=10),
                     torch.randn(16, 3, 32, 32), args.rounds)
    bench_prune_vs_expected(args)


if __name__ == "__main__":
    main()
