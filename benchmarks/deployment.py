"""Deployment: ONNX Runtime latency (batch 1 and 32, p50 and p90) of ``collapse("expected")``
against the untouched model (goal 1.00 and the same ONNX ops), and of ``collapse("prune")``
against its MAC ratio (MACs from ``torch.utils.flop_counter``), with ONNX nodes and parameters.

The pruned variant needs learned structure; instead of training, a fixed structure is planted
(``plant_structure``): MaskConnect at K = 1 with every other block of the chain bypassed, and each
Blockout node in exactly one of the k clusters. Latency depends on the structure only, not on
how it was learned. ``benchmarks.gpu`` times the same variants on CUDA.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

import maskfx
from benchmarks.suite import Cell, ratio, result, table
from benchmarks.training import vgg_head
from maskfx.nn import BlockoutClusters, MaskedConnection
from maskfx.export.peepholes import apply_peepholes
from maskfx.report import count_macs, count_parameters, ort_latency

SUITE = "deployment"
UNTOUCHED, EXPECTED, PRUNE = "untouched", 'collapse("expected")', 'collapse("prune")'
BATCHES = (1, 32)
COLUMNS = ["model", "runtime", "variant", "batch", "p50 ms", "p90 ms", "p50 / untouched", "p90 / untouched",
           "MAC ratio", "p50 ratio / MAC ratio", "ONNX nodes", "same ONNX ops", "parameters"]


@dataclass(frozen=True)
class DeployModel:
    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]  # one input, without the batch dimension
    transform: Callable[[nn.Module, torch.Tensor], torch.fx.GraphModule]


def _all_techniques(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    # MaskConnect's defaults: K = 1 from the original chain, as when fine-tuning a pretrained model
    return maskfx.transform(model, jumpout=True, blockout=True, example_inputs=(x[:1],),
                            maskconnect=True)


def _blockout(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    return maskfx.transform(model, blockout=True)


def models(quick: bool) -> list[DeployModel]:
    """resnet18/resnet50 with Jumpout + Blockout + MaskConnect, and a Blockout vgg-style head;
    ``quick`` keeps resnet18 at 32 px and a smaller head."""
    if quick:
        return [DeployModel("resnet18 32px", torchvision.models.resnet18, (3, 32, 32), _all_techniques),
                DeployModel("vgg-style head 4096-1024-1024-1000", lambda: vgg_head(4096, 1024, 1000), (4096,), _blockout)]
    return [DeployModel("resnet18 224px", torchvision.models.resnet18, (3, 224, 224), _all_techniques),
            DeployModel("resnet50 224px", torchvision.models.resnet50, (3, 224, 224), _all_techniques),
            DeployModel("vgg11 head 25088-4096-4096-1000", lambda: vgg_head(classes=1000), (25088,), _blockout)]


@torch.no_grad()
def plant_structure(net: torch.fx.GraphModule, seed: int = 0) -> torch.fx.GraphModule:
    """Fix a learned-looking structure by hand: each MaskConnect block reads the latest earlier
    block that is not bypassed (the odd ones; the chain's last block is its output), and each Blockout node belongs to
    one cluster drawn with ``seed``. Frozen, so ``collapse("prune")`` keeps exactly this."""
    for layer in (m for m in net.modules() if isinstance(m, MaskedConnection)):
        block = layer.mask.numel() - 1  # candidates: the chain input, then blocks 0 .. block-1
        layer.mask.zero_()
        layer.mask[1 + max(i for i in range(block) if i % 2 == 0)] = 1.0
    generator = torch.Generator().manual_seed(seed)
    for clusters in (m for m in net.modules() if isinstance(m, BlockoutClusters)):
        for logits in clusters.logits:
            logits.fill_(-3.0)
            logits.scatter_(1, torch.randint(0, logits.shape[1], (logits.shape[0], 1), generator=generator), 3.0)
    return maskfx.freeze(net)


def variants(spec: DeployModel) -> dict[str, nn.Module]:
    """The untouched model and its two collapses, all in eval mode, on the CPU."""
    torch.manual_seed(0)
    model = spec.build().eval()
    example = torch.randn(2, *spec.sample_shape)
    expected = maskfx.collapse(spec.transform(model, example), "expected")
    pruned = maskfx.collapse(plant_structure(spec.transform(model, example)), "prune")
    return {UNTOUCHED: model, EXPECTED: expected, PRUNE: pruned}


@dataclass
class Exported:
    path: Path
    nodes: int
    ops: dict[str, int]
    provider: str


def export_all(nets: dict[str, nn.Module], example: torch.Tensor, folder: str) -> dict[str, Exported]:
    """Each variant exported and verified in ONNX Runtime (``maskfx.export_onnx``)."""
    done = {}
    for i, (name, net) in enumerate(nets.items()):
        _, report = maskfx.export_onnx(net, Path(folder) / f"variant{i}.onnx", (example,), device="cpu")
        done[name] = Exported(report.path, report.node_count, report.op_counts, report.provider)
    return done


@dataclass
class Variant:
    """A deployable variant: the CPU model, its size, and its verified ONNX export."""

    net: nn.Module
    macs: int
    parameters: int
    onnx: Exported


def prepare(spec: DeployModel, folder: str) -> dict[str, Variant]:
    """The variants of ``spec``, measured and exported (verified in ONNX Runtime) into ``folder``."""
    nets = variants(spec)
    one = torch.zeros(1, *spec.sample_shape)
    exported = export_all(nets, torch.randn(2, *spec.sample_shape), folder)
    # Counted as ONNX Runtime's CPU provider receives them: export applies its peepholes (the
    # channel pad of a bypassed downsampling block becomes the zero columns it was), so do the counts.
    shipped = {name: apply_peepholes(net, "CPUExecutionProvider", (one,))[0] for name, net in nets.items()}
    return {name: Variant(net, count_macs(shipped[name], one), count_parameters(shipped[name]), exported[name])
            for name, net in nets.items()}


def latency_rows(spec: DeployModel, runtime: str, batch: int, times: dict[str, tuple[float, float]],
                 prepared: dict[str, Variant]) -> list[list[Cell]]:
    """One row per variant: p50/p90 ms, ratios to the untouched model, MAC ratio, size."""
    base = prepared[UNTOUCHED]
    rows = []
    for name, (p50, p90) in times.items():
        variant = prepared[name]
        mac_ratio = variant.macs / base.macs
        p50_ratio = p50 / times[UNTOUCHED][0]
        rows.append([spec.name, runtime, name, batch, round(p50, 2), round(p90, 2), round(p50_ratio, 3),
                     ratio(p90, times[UNTOUCHED][1]), round(mac_ratio, 3), round(p50_ratio / mac_ratio, 3),
                     variant.onnx.nodes, "yes" if variant.onnx.ops == base.onnx.ops else "no", variant.parameters])
    return rows


def runs_for(batch: int, quick: bool) -> tuple[int, int]:
    """(timed runs, warm-up runs) per variant at ``batch``."""
    if quick:
        return (10, 2) if batch == 1 else (3, 1)
    return (50, 5) if batch == 1 else (15, 3)


def notes(quick: bool) -> list[str]:
    return [
        "Variants take turns call by call (interleaved), so machine load hits them alike; each ratio is "
        "taken within one run. Runs per variant: " + ", ".join(
            f"batch {b}: {runs_for(b, quick)[0]} after {runs_for(b, quick)[1]} warm-up" for b in BATCHES) + ".",
        "The pruned structure is planted, not learned: MaskConnect K = 1 with every other block of "
        "each chain bypassed, every Blockout node in one of 6 clusters (seed 0). Goal for collapse(\"expected\"): "
        "p50 / untouched 1.00 with the same ONNX ops; for collapse(\"prune\"): p50 ratio / MAC ratio near 1.",
        "MACs: torch.utils.flop_counter on one input (2 FLOPs per MAC). ONNX nodes, same ONNX ops (op "
        "histogram equal to the untouched export's) and parameters describe the variant, whatever runs it.",
    ]


def run(quick: bool) -> dict:
    rows = []
    for spec in models(quick):
        with tempfile.TemporaryDirectory() as folder:
            prepared = prepare(spec, folder)
            for batch in BATCHES:
                runs, warmup = runs_for(batch, quick)
                times = ort_latency({name: v.onnx.path for name, v in prepared.items()},
                                    torch.randn(batch, *spec.sample_shape), runs=runs, warmup=warmup)
                rows += latency_rows(spec, f"ORT {prepared[UNTOUCHED].onnx.provider}", batch, times, prepared)
    return result(SUITE, "Deployment latency", [
        table(f"ONNX Runtime on the CPU ({torch.get_num_threads()} threads)", COLUMNS, rows, notes(quick))])
