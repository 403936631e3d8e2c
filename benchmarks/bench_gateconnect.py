"""GateConnect costs and gains on resnext50_32x4d: training-step time and peak memory with learned
branch connectivity against the original ResNeXt, and ONNX Runtime latency of a K = 1 pruned
network against the original next to its MAC ratio.

    python benchmarks/bench_gateconnect.py [--rounds 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

import maskfx
from maskfx.nn import BranchedBottleneck, BranchGates
from measure import interleaved_medians, print_ratio, report_pruned_latency, train_step_fn


def build(variant: str, batch: int, size: int, fan_in: int):
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(num_classes=10)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if variant == "learned":
        model = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=fan_in), example_inputs=(x,))
    return model, x, y


def peak_memory_child(variant: str, batch: int, size: int, fan_in: int) -> None:
    """Run in a fresh process: a few training steps, then print the process's peak RSS in MiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak.
    """
    model, x, y = build(variant, batch, size, fan_in)
    step = train_step_fn(model, x, y)
    for _ in range(3):
        step()
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({"peak_mib": peak_kib / 1024}))


def peak_memory(variant: str, args) -> float:
    out = subprocess.run([sys.executable, __file__, "--peak-memory-of", variant, "--batch", str(args.batch),
                          "--size", str(args.size), "--fan-in", str(args.fan_in)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def bench_training(args) -> None:
    original, x, y = build("original", args.batch, args.size, args.fan_in)
    learned, _, _ = build("learned", args.batch, args.size, args.fan_in)
    t = interleaved_medians({"learned": train_step_fn(learned, x, y), "original": train_step_fn(original, x, y)},
                            rounds=args.rounds)
    label = f"resnext50_32x4d train step b{args.batch} {args.size}px, K={args.fan_in}"
    print_ratio(f"{label}: learned / original", t["learned"], t["original"], "<= 1.25")
    memory = {v: peak_memory(v, args) for v in ("learned", "original")}
    print(f"{label}: peak RSS learned {memory['learned']:.0f} MiB / original {memory['original']:.0f} MiB "
          f"= {memory['learned'] / memory['original']:.3f} (whole process, CPU)")


def bench_pruned_latency(args) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(num_classes=1000).eval()
    x = torch.randn(args.ort_batch, 3, 224, 224)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=1), example_inputs=(x[:1],))
    for gates in (m for m in net.modules() if isinstance(m, BranchGates)):
        with torch.no_grad():
            gates.mask.copy_(torch.rand(gates.mask.shape, generator=torch.Generator().manual_seed(1)))
    maskfx.freeze(net)
    pruned = maskfx.collapse(net.eval(), "prune")
    branches = [m.branches for m in pruned.modules() if isinstance(m, BranchedBottleneck)]
    report_pruned_latency(f"resnext50_32x4d ORT latency b{args.ort_batch} 224px: K=1 pruned / original", pruned,
                          model, x, args.rounds, detail=f"branches per module {branches}; ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fan-in", type=int, default=4)
    parser.add_argument("--ort-batch", type=int, default=4)
    parser.add_argument("--peak-memory-of", choices=("learned", "original"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory_of:
        return peak_memory_child(args.peak_memory_of, args.batch, args.size, args.fan_in)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_training(args)
    bench_pruned_latency(args)


if __name__ == "__main__":
    main()
