"""GateConnect costs and gains: training step (time, saved activations) with learned branch
connectivity against the original ResNeXt, ONNX Runtime latency of the K = C expected collapse
(the original graph again) and of a K = 1 pruned network against the original, next to its MACs.

    python benchmarks/bench_gateconnect.py [--rounds 8]
"""
from __future__ import annotations

import argparse
import tempfile

import torch
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.nn import BranchedBottleneck, BranchGates
from measure import interleaved_medians, ort_latency_ratio, print_ratio, report_pruned_latency, \
    saved_activation_mib, train_step_fn

MODELS = {  # name -> (factory, C)
    "resnext50_32x4d": (lambda classes: torchvision.models.resnext50_32x4d(num_classes=classes), 32),
    "resnext C=8 (2-2-2-2, width 8)": (lambda classes: ResNet(Bottleneck, [2, 2, 2, 2], groups=8, width_per_group=8,
                                                              num_classes=classes), 8),
}


def bench_training(name: str, args) -> None:
    factory, c = MODELS[name]
    torch.manual_seed(0)
    original = factory(10)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    learned = maskfx.transform(original, gateconnect=maskfx.GateConnectConfig(fan_in=args.fan_in))
    t = interleaved_medians({"learned": train_step_fn(learned, x, y), "original": train_step_fn(original, x, y)},
                            rounds=args.rounds)
    label = f"{name} train step b{args.batch} {args.size}px, K={args.fan_in}"
    print_ratio(f"{label}: learned / original", t["learned"], t["original"], "<= 4" if c == 32 else "<= 1.4")
    saved = {v: saved_activation_mib(m, x, y) for v, m in (("learned", learned), ("original", original))}
    print(f"{'':<58} saved activations {saved['learned']:.0f} / {saved['original']:.0f} MiB "
          f"= {saved['learned'] / saved['original']:.2f}")


def with_gates(model, x, fan_in: int, seed: int):
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=fan_in))
    for gates in (m for m in net.modules() if isinstance(m, BranchGates)):
        with torch.no_grad():
            gates.mask.copy_(torch.rand(gates.mask.shape, generator=torch.Generator().manual_seed(seed)))
    return maskfx.freeze(net).eval()


def bench_deploy(args) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(num_classes=1000).eval()
    x = torch.randn(args.ort_batch, 3, 224, 224)
    expected = maskfx.collapse(with_gates(model, x, 32, 1), "expected")
    with tempfile.TemporaryDirectory() as tmp:
        t, reports = ort_latency_ratio({"expected": expected, "original": model}, x, args.rounds, tmp)
    print_ratio(f"resnext50_32x4d ORT b{args.ort_batch} 224px: K=C expected / original", t["expected"],
                t["original"], "1.00")
    print(f"{'':<58} ONNX nodes {reports['expected'].node_count} / {reports['original'].node_count}")
    for fan_in in (1, 16):
        pruned = maskfx.collapse(with_gates(model, x, fan_in, 1), "prune")
        branches = [m.branches for m in pruned.modules() if isinstance(m, BranchedBottleneck)]
        report_pruned_latency(f"resnext50_32x4d ORT b{args.ort_batch} 224px: K={fan_in} pruned / original", pruned,
                              model, x, args.rounds, detail=f"branches per module {branches}; ",
                              goal="<= 1.0" if fan_in == 1 else "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fan-in", type=int, default=4)
    parser.add_argument("--ort-batch", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in MODELS:
        bench_training(name, args)
    bench_deploy(args)


if __name__ == "__main__":
    main()
