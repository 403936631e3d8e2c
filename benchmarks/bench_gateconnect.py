"""GateConnect costs and gains: training step (time, saved activations) with learned branch
connectivity against the original ResNeXt, ONNX Runtime latency of the K = C expected collapse
(the original graph again) and of K = 1 and K = C/2 pruned networks against the original, next
to their MACs.

    python benchmarks/bench_gateconnect.py [--quick]

``run(quick)`` returns the tables; ``--quick`` uses fewer rounds and a smaller ORT batch.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.report import count_parameters
from maskfx.train.memory import GLIBC
from maskfx.nn import BranchGates, DeployedModule

try:
    from benchmarks.measure import REUSED, count_macs, interleaved_medians, ort_latency_ratio, saved_activation_mib, \
        train_step_fn, with_freed_memory_reused
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from measure import REUSED, count_macs, interleaved_medians, ort_latency_ratio, saved_activation_mib, \
        train_step_fn, with_freed_memory_reused

SUITE = "gateconnect"
MODELS = {  # name -> (factory, C)
    "resnext50_32x4d": (lambda classes: torchvision.models.resnext50_32x4d(num_classes=classes), 32),
    "resnext C=8 (2-2-2-2, width 8)": (lambda classes: ResNet(Bottleneck, [2, 2, 2, 2], groups=8, width_per_group=8,
                                                              num_classes=classes), 8),
}


def _settings(quick: bool) -> dict:
    return {"rounds": 3 if quick else 8, "batch": 8, "size": 64, "fan_in": 4, "ort_batch": 2 if quick else 8}


def bench_training(name: str, s: dict, label: str = "") -> list:
    """One row: train step time and saved activations, learned K / original."""
    factory, c = MODELS[name]
    torch.manual_seed(0)
    original = factory(10)
    x, y = torch.randn(s["batch"], 3, s["size"], s["size"]), torch.randint(0, 10, (s["batch"],))
    learned = maskfx.transform(original, gateconnect=maskfx.GateConnectConfig(fan_in=s["fan_in"]))
    t = interleaved_medians({"learned": train_step_fn(learned, x, y), "original": train_step_fn(original, x, y)},
                            rounds=s["rounds"])
    saved = {v: saved_activation_mib(m, x, y) for v, m in (("learned", learned), ("original", original))}
    return [name + label, s["fan_in"], round(t["learned"] * 1e3, 1), round(t["original"] * 1e3, 1),
            round(t["learned"] / t["original"], 3), "<= 4" if c == 32 else "<= 1.4",
            round(saved["learned"]), round(saved["original"]), round(saved["learned"] / saved["original"], 2)]


def with_gates(model: torch.nn.Module, fan_in: int, seed: int) -> torch.fx.GraphModule:
    """``model`` transformed with random gates (the same draw for every gate layer of one shape), frozen."""
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=fan_in))
    for gates in (m for m in net.modules() if isinstance(m, BranchGates)):
        with torch.no_grad():
            gates.mask.copy_(torch.rand(gates.mask.shape, generator=torch.Generator().manual_seed(seed)))
    return maskfx.freeze(net).eval()


def bench_deploy(s: dict) -> list[list]:
    """Rows: ORT latency of the collapsed network / the original, with MAC and parameter ratios."""
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(num_classes=1000).eval()
    x = torch.randn(s["ort_batch"], 3, 224, 224)
    macs, params = count_macs(model, x[:1]), count_parameters(model)
    rows = []
    for fan_in, mode, goal in ((32, "expected", "1.00, same nodes"), (1, "prune", "<= 1.0 (stretch 1.15 x MACs)"),
                               (16, "prune", "report")):
        deploy = maskfx.collapse(with_gates(model, fan_in, 1), mode)
        branches = [len(m.readers) for m in deploy.modules() if isinstance(m, DeployedModule)]
        with tempfile.TemporaryDirectory() as tmp:
            t, reports = ort_latency_ratio({"deploy": deploy, "original": model}, x, s["rounds"], tmp)
        ratio, mac_ratio = t["deploy"] / t["original"], count_macs(deploy, x[:1]) / macs
        rows.append([f"K={fan_in} {mode}", round(t["deploy"] * 1e3, 1), round(t["original"] * 1e3, 1), round(ratio, 3),
                     goal, round(mac_ratio, 3), round(count_parameters(deploy) / params, 3), round(ratio / mac_ratio, 3),
                     reports["deploy"].node_count, reports["original"].node_count, str(branches or "original")])
    return rows


def run(quick: bool) -> dict:
    s = _settings(quick)
    conditions = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
                  f"{os.getloadavg()[0]:.1f} at the start")
    training = [bench_training(name, s) for name in MODELS]
    deploy = bench_deploy(s)
    if GLIBC:  # as the maskfx command line trains
        training += [with_freed_memory_reused("benchmarks.bench_gateconnect",
                                              f"bench_training({name!r}, {s!r}, {REUSED!r})")
                     for name in MODELS]
    return {"suite": SUITE, "title": "GateConnect: training cost and deployed latency", "tables": [
        {"title": f"Train step, learned / original (b{s['batch']}, {s['size']} px, {s['rounds']} interleaved rounds)",
         "columns": ["model", "K", "learned ms", "original ms", "ratio", "goal", "saved MiB learned",
                     "saved MiB original", "saved ratio"],
         "rows": training, "notes": [conditions, "saved = tensors autograd keeps for backward (each storage once)",
                                     "freed memory reused: measured in a fresh process after "
                                     "maskfx.train.reuse_freed_memory(), as the maskfx command line trains (glibc "
                                     "keeps freed blocks for the next step instead of faulting them in afresh)"
                                     if GLIBC else "reuse_freed_memory() is not available here (needs glibc)"]},
        {"title": f"ONNX Runtime latency, resnext50_32x4d collapsed / original (b{s['ort_batch']}, 224 px, "
                  f"{s['rounds']} interleaved rounds)",
         "columns": ["collapse", "deploy ms", "original ms", "ratio", "goal", "MAC ratio", "parameter ratio",
                     "latency / MAC ratio", "ONNX nodes", "ONNX nodes original", "branches per module"],
         "rows": deploy, "notes": [conditions, f"load average {os.getloadavg()[0]:.1f} at the end",
                                   "gates drawn at random (seed 1), frozen"]},
    ]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    result = run(parser.parse_args().quick)
    print(result["title"])
    for table in result["tables"]:
        print(f"\n{table['title']}")
        print(" | ".join(table["columns"]))
        for row in table["rows"]:
            print(" | ".join(str(v) for v in row))
        for note in table["notes"]:
            print(f"  note: {note}")


if __name__ == "__main__":
    main()
