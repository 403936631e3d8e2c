"""Blockout's gains from learning: prune against expected collapse after training on the digits
demo data (accuracy, MACs, ONNX Runtime latency). Its training-step cost against Linear + Dropout
is in the ``training`` suite (``python -m benchmarks --only training``).

    python -m benchmarks.bench_blockout [--rounds 15] [--epochs 5] [--kernels]

``--kernels`` times the two exact kernels of one 25088 -> 4096 layer across batch sizes, the
measurement behind ``CLUSTER_SUM_MAX_ROWS``.
"""
from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import maskfx
from maskfx.techniques.blockout.layers import MASK_SCALE, _ClusterSumLinear, _MaskedLinear
from maskfx.train import Phase, accuracy, fit, load_data, predict
from maskfx.train.fit import evaluation_loader
from benchmarks.measure import count_macs, interleaved_medians, ort_latency_ratio, print_ratio


def bench_kernels(rounds: int, batches=(1, 2, 4, 16)) -> None:
    """Forward + backward of one 25088 -> 4096 layer (k = 6, hard clusters, gradients to everything):
    the cluster-sum GEMM of k x batch rows, and the masked weight, each against a plain Linear."""
    weight, bias = torch.randn(4096, 25088, requires_grad=True), torch.zeros(4096, requires_grad=True)
    c_in, c_out = (torch.bernoulli(torch.full((d, 6), 0.5)).requires_grad_() for d in (25088, 4096))
    workspace, scale = torch.empty_like(weight, requires_grad=False), MASK_SCALE / 6
    tensors = (weight, bias, c_in, c_out)
    for batch in batches:
        x = torch.randn(batch, 25088, requires_grad=True)

        def run(forward):
            def step():
                for t in (x, *tensors):
                    t.grad = None
                forward().sum().backward()
            return step
        t = interleaved_medians({
            "linear": run(lambda: F.linear(x, weight, bias)),
            "cluster sum": run(lambda: _ClusterSumLinear.apply(x, weight, bias, c_in, c_out, scale)),
            "masked weight": run(lambda: _MaskedLinear.apply(x, weight, bias, c_in, c_out, scale, workspace)),
        }, rounds=rounds, warmup=1)
        print(f"  batch {batch:>3} (k x batch = {6 * batch:>3} rows): " + ", ".join(
            f"{name} {v * 1e3:.0f} ms = {v / t['linear']:.2f}x" for name, v in t.items() if name != "linear"))


def bench_prune_forms(rounds: int, sizes=(64, 256, 1024, 2048, 4096), k: int = 6, batch: int = 8) -> None:
    """ONNX Runtime latency of a pruned layer with k disjoint clusters (blocks: 1/k of the dense
    multiply-adds) as ``BlockSparseLinear`` / as the dense pruned ``nn.Linear``, across sizes:
    the measurement behind ``BLOCK_SPARSE_MIN_MACS``."""
    from maskfx.nn import BlockSparseLinear
    for d in sizes:
        groups = torch.arange(d) % k
        blocks = [(torch.nonzero(groups == c).flatten(),) * 2 for c in range(k)]
        sparse = BlockSparseLinear([(i, o, torch.randn(len(o), len(i))) for i, o in blocks], torch.zeros(d), d, d)
        with tempfile.TemporaryDirectory() as tmp:
            t, _ = ort_latency_ratio({"blocks": sparse.eval(), "dense": nn.Linear(d, d).eval()}, torch.randn(batch, d),
                                     rounds, tmp)
        print_ratio(f"  {d}x{d}, k={k}, b{batch}: ORT blocks / dense ({d * d:,} dense MACs)", t["blocks"], t["dense"],
                    "< 1 where blocks are chosen")


def bench_prune_vs_expected(args) -> None:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    data = load_data("digits", seed=0)
    test_loader = evaluation_loader(data)
    net = maskfx.transform(torchvision.models.resnet18(num_classes=10), blockout=True)
    fit(net, data, [Phase(args.epochs, lr=0.01, mask_lr=1.0)], device=cpu, evaluate=False, desc="joint")
    results = {"expected": maskfx.collapse(net, "expected"), "prune (no fine-tune)": maskfx.collapse(net, "prune")}
    fit(net, data, [Phase(args.finetune_epochs, lr=0.005, freeze_first=True)], device=cpu, evaluate=False,
        desc="fine-tune")
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
    parser.add_argument("--kernels", action="store_true", help="only the per-layer kernel timings")
    parser.add_argument("--prune-forms", action="store_true", help="only the block-sparse vs dense ORT timings")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.kernels:
        bench_kernels(args.rounds)
        return
    if args.prune_forms:
        bench_prune_forms(args.rounds)
        return
    bench_prune_vs_expected(args)


if __name__ == "__main__":
    main()
