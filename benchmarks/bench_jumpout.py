"""Jumpout costs: training-step time against nn.Dropout at the same sites, and ONNX Runtime
latency of the collapsed export against the original model's export.

    python benchmarks/bench_jumpout.py [--batch 32] [--size 112] [--rounds 15]
"""
from __future__ import annotations

import argparse
import copy
import tempfile

import torch
import torchvision
from torch import nn

import maskfx
from maskfx.nn import Jumpout
from measure import interleaved_medians, ort_latency_ratio, print_ratio, train_step_fn


def with_dropout_at_jumpout_sites(net: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The same graph with each Jumpout swapped for nn.Dropout of Jumpout's mean rate."""
    baseline = copy.deepcopy(net)
    for name, module in list(baseline.named_children()):
        if isinstance(module, Jumpout):
            setattr(baseline, name, nn.Dropout(module.expected_rate()))
    return baseline


def bench_train_step(args) -> None:
    torch.manual_seed(0)
    net = maskfx.transform(torchvision.models.resnet18(num_classes=10), jumpout=True)
    baseline = with_dropout_at_jumpout_sites(net)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    t = interleaved_medians({"jumpout": train_step_fn(net, x, y), "dropout": train_step_fn(baseline, x, y)},
                            rounds=args.rounds)
    print_ratio(f"resnet18 train step b{args.batch} {args.size}px: jumpout / dropout", t["jumpout"], t["dropout"], "<= 1.05")


def bench_onnx_latency(args, name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    deploy = maskfx.collapse(maskfx.transform(model, jumpout=True))
    x = torch.randn(args.ort_batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        t, reports = ort_latency_ratio({"original": model, "collapsed": deploy}, x, args.rounds, tmp)
    original, collapsed = reports["original"], reports["collapsed"]
    print_ratio(f"{name} ORT latency b{args.ort_batch} ({original.provider}): collapsed / original",
                t["collapsed"], t["original"], "1.00")
    print(f"{'':<58} ONNX nodes: collapsed {collapsed.node_count}, original {original.node_count}"
          f" ({'identical' if collapsed.op_counts == original.op_counts else 'DIFFERENT'} op histograms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--ort-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_train_step(args)
    for name in ("resnet18", "resnet50"):
        bench_onnx_latency(args, name)


if __name__ == "__main__":
    main()
