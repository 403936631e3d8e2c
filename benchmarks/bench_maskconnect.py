"""MaskConnect costs and gains on resnet50: training-step time with learned connectivity (and
frozen, as in fine-tuning) against the original chain, and ONNX Runtime latency of a pruned
network against the unpruned one next to its MAC ratio.

    python benchmarks/bench_maskconnect.py [--rounds 10]
"""
from __future__ import annotations

import argparse

import torch
import torchvision

import maskfx
from maskfx.nn import MaskedConnection
from measure import interleaved_medians, print_ratio, report_pruned_latency, train_step_fn


def bench_train_step(args) -> None:
    model = torchvision.models.resnet50(num_classes=10)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    config = maskfx.MaskConnectConfig(fan_in=args.fan_in)
    learned = maskfx.transform(model, maskconnect=config, example_inputs=(x,))
    frozen = maskfx.freeze(maskfx.transform(model, maskconnect=config, example_inputs=(x,)))
    t = interleaved_medians({"learned": train_step_fn(learned, x, y), "frozen": train_step_fn(frozen, x, y),
                             "original": train_step_fn(model, x, y)}, rounds=args.rounds)
    label = f"resnet50 train step b{args.batch} {args.size}px, K={args.fan_in}"
    print_ratio(f"{label}: learned / original chain", t["learned"], t["original"], "<= 1.10")
    print_ratio(f"{label}: frozen (fine-tune) / original", t["frozen"], t["original"], "<= 1.05")


def skip_blocks(net: torch.fx.GraphModule, skipped: set[int]) -> None:
    """K = 1 masks by hand: block j reads the latest earlier block not in ``skipped``."""
    layers = [net.get_submodule(s.module) for s in maskfx.summary(net).sites]  # blocks 1.. of the chain
    with torch.no_grad():
        for j, layer in enumerate(layers, start=1):
            readable = [i for i in range(j) if i not in skipped]
            layer.mask.zero_()
            layer.mask[1 + readable[-1] if readable else 0] = 1.0  # candidate 0 is the chain input


def bench_pruned_latency(args) -> None:
    model = torchvision.models.resnet50(num_classes=1000).eval()
    x = torch.randn(args.ort_batch, 3, 224, 224)
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1), example_inputs=(x[:1],))
    skip_blocks(net, skipped={1, 4, 6, 8, 10, 12, 14})  # every other non-final block of the 16
    maskfx.freeze(net)
    pruned = maskfx.collapse(net)
    assert not any(isinstance(m, MaskedConnection) for m in pruned.modules())
    report_pruned_latency(f"resnet50 ORT latency b{args.ort_batch} 224px: pruned / original", pruned, model, x,
                          args.rounds, goal="latency/MAC ratio <= 1.05")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--fan-in", type=int, default=4)
    parser.add_argument("--ort-batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_train_step(args)
    bench_pruned_latency(args)


if __name__ == "__main__":
    main()
