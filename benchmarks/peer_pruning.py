"""maskfx's learned pruning side by side with Torch-Pruning's magnitude channel pruning.

Same data (the digits at 32x32, the demo's split), same model (torchvision resnet18), same start
(one trained model, the stand-in for a pretrained one) and the same fine-tuning budget:

- maskfx: MaskConnect (each block reads one earlier block output, from the trained chain) plus
  a Blockout head, learned, frozen, fine-tuned, ``collapse("prune")``;
- Torch-Pruning: L2-magnitude channel pruning (``BasePruner`` + ``MagnitudeImportance``) of the
  trained model to maskfx's MACs, then fine-tuned as long;
- combined: maskfx's pruned graph after its learning phase, channel-pruned by Torch-Pruning to
  half of maskfx's MACs, fine-tuned for the rest of the budget; next to Torch-Pruning alone at
  those MACs.

Every model is exported with ``maskfx.export_onnx`` (verified in ONNX Runtime) and timed in one
interleaved ONNX Runtime run. Torch-Pruning runs through ``maskfx.peers.torch_pruning`` (a
dependency of maskfx, as the demo compares against it too); without it the table says so.

    python -m benchmarks --only peer_pruning [--quick]
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models.resnet import BasicBlock, ResNet
from torch import nn

import maskfx
from benchmarks.arms import test_accuracy
from maskfx.errors import UserError
from maskfx.peers import torch_pruning as peer
from maskfx.report import count_macs, count_parameters, ort_latency
from maskfx.train import Data, Phase, fit, load_data, resolve_device

SUITE = "peer_pruning"
TITLE = "maskfx learned pruning vs Torch-Pruning magnitude channel pruning (resnet18 on the digits)"
COLUMNS = ["method", "test acc %", "parameters", "MACs (M)", "MAC ratio", "ORT b1 p50 ms", "ORT b1 p90 ms",
           "ORT b32 p50 ms", "b32 latency ratio"]


@dataclass(frozen=True)
class Budget:
    blocks: tuple[int, int, int, int]  # basic blocks per stage: (2, 2, 2, 2) is resnet18
    image_size: int
    limit: int | None  # training images (None: the demo split's 1,347)
    pretrain: int  # epochs of the untouched model before anything is pruned
    learn: int  # maskfx structure learning; Torch-Pruning's first fine-tuning epochs
    finetune: int  # after freeze / for the rest of the budget, at lr / 10
    latency_runs: int  # 0: no ONNX export or latency (each dynamo export takes 10-20 s on 2 cores)
    bisection_steps: int  # Torch-Pruning ratio search for a MACs target

    @property
    def model_name(self) -> str:
        return "resnet18" if self.blocks == (2, 2, 2, 2) else f"ResNet{list(self.blocks)}"


FULL = Budget((2, 2, 2, 2), 32, limit=None, pretrain=4, learn=3, finetune=2, latency_runs=50, bisection_steps=12)
# one block per stage and 16x16 images: the same code paths, a quarter of the graph to export
QUICK = Budget((1, 1, 1, 1), 16, limit=128, pretrain=1, learn=1, finetune=1, latency_runs=0, bisection_steps=5)
LR, MASK_LR, SEED, BATCH = 0.05, 0.5, 0, 64


def _fit(model: nn.Module, data: Data, phases: list[Phase], device: torch.device) -> nn.Module:
    fit(model, data, phases, device=device, seed=SEED, batch_size=BATCH, evaluate=False)
    return model.to("cpu").eval()


def maskfx_transform(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """Learned pruning: each residual block reads K = 1 earlier block output, starting from the
    trained chain and drawing its input from the masks (the paper's sampling, which explores, so
    blocks end up unread and are removed); a Blockout head."""
    return maskfx.transform(model, blockout=True, example_inputs=(example,),
                            maskconnect=maskfx.MaskConnectConfig(1, "previous", "multinomial"))


def channel_pruned(model: nn.Module, example: torch.Tensor, target_macs: int, steps: int) -> nn.Module:
    """A copy of ``model`` with Torch-Pruning's uniform L2-magnitude channel pruning (no rounding)
    at the ratio, found by bisection, whose MACs come closest to ``target_macs`` from above."""
    return peer.pruned_by_bisection(model, example, target_macs, steps=steps).model


def _latencies(models: dict[str, nn.Module], example: torch.Tensor, runs: int) -> dict[str, list[float]]:
    """Per model: ONNX Runtime p50 and p90 ms at batch 1 and p50 at batch 32, every model exported,
    verified and timed in the same interleaved run."""
    batch32 = example.repeat(-(-32 // len(example)), 1, 1, 1)[:32]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: maskfx.export_onnx(model, Path(tmp) / f"{i}.onnx", (example,), device="cpu")[0]
                 for i, (name, model) in enumerate(models.items())}
        single = ort_latency(paths, example[:1], runs=runs)
        batch = ort_latency(paths, batch32, runs=max(runs // 5, 3))
    return {name: [single[name][0], single[name][1], batch[name][0]] for name in models}


def _measure(models: dict[str, nn.Module], data: Data, example: torch.Tensor, runs: int) -> list[list]:
    """One row per model (the first is the reference): accuracy, size, MACs and, if ``runs``,
    ONNX Runtime latency."""
    base = next(iter(models))
    base_macs = count_macs(models[base], example)
    latency = _latencies(models, example, runs) if runs else {name: [None] * 3 for name in models}
    rows = []
    for name, model in models.items():
        macs = count_macs(model, example)
        times = latency[name]
        ratio = times[2] / latency[base][2] if runs else None
        rows.append([name, round(100 * test_accuracy(model, data, torch.device("cpu")), 2), count_parameters(model),
                     round(macs / 1e6, 2), round(macs / base_macs, 3)]
                    + [None if t is None else round(t, 3) for t in times] + [None if ratio is None else round(ratio, 3)])
    return rows


def compare(budget: Budget, device: torch.device) -> tuple[list[list], list[str]]:
    """Train, prune both ways, fine-tune, measure; returns the rows and notes."""
    data = load_data("digits", image_size=budget.image_size, seed=SEED, limit=budget.limit)
    example = torch.stack([data.test[i][0] for i in range(8)])
    rest = [Phase(budget.learn, LR), Phase(budget.finetune, LR / 10)]
    torch.manual_seed(SEED)
    trained = _fit(ResNet(BasicBlock, list(budget.blocks), num_classes=data.num_classes), data,
                   [Phase(budget.pretrain, LR)], device)
    steps = budget.bisection_steps

    models = {f"{budget.model_name}, trained on (untouched)": _fit(copy.deepcopy(trained), data, rest, device)}
    net = _fit(maskfx_transform(trained, example), data, [Phase(budget.learn, LR, MASK_LR)], device)
    learned = maskfx.collapse(maskfx.freeze(net), "prune")  # the combined arm starts here
    ours = maskfx.collapse(_fit(net, data, [Phase(budget.finetune, LR / 10)], device), "prune")
    target = count_macs(ours, example)
    models["maskfx: MaskConnect K=1 + Blockout head, collapse('prune')"] = ours
    models["Torch-Pruning: L2 magnitude channels, at maskfx's MACs"] = _fit(
        channel_pruned(trained, example, target, steps), data, rest, device)
    notes = [f"{budget.model_name} on the digits at {budget.image_size}x{budget.image_size}: {len(data.train)} "
             f"training, {len(data.test)} test images."]
    notes += [n for n in maskfx.summary(ours).notes if "collapse" in n]
    step = "Torch-Pruning on maskfx's collapsed graph"
    try:
        combined = channel_pruned(learned, example, target // 2, steps)
        step = "fine-tuning the combined model"
        models["maskfx, then Torch-Pruning channels, at half maskfx's MACs"] = _fit(
            combined, data, [Phase(budget.finetune, LR / 10)], device)
        models["Torch-Pruning alone, at half maskfx's MACs"] = _fit(
            channel_pruned(trained, example, target // 2, steps), data, rest, device)
        step = "measuring (ONNX export included)"
        rows = _measure(models, data, example, budget.latency_runs)
        notes.append("maskfx and Torch-Pruning compose: Torch-Pruning traces and prunes maskfx's collapsed graph "
                     "(MaskConnect's fixed sums included) and the result fine-tunes"
                     + (", exports and verifies in ONNX Runtime." if budget.latency_runs else "."))
    except Exception as error:  # a failed composition is a finding to report, not a crash
        notes.append(f"maskfx + Torch-Pruning did not compose ({step} failed): {type(error).__name__}: "
                     f"{str(error)[:300]}")
        models = dict(list(models.items())[:3])
        rows = _measure(models, data, example, budget.latency_runs)
    return rows, notes


def run(quick: bool) -> dict:
    """The comparison table (``quick``: a smoke run on a small subset, numbers meaningless)."""
    try:
        peer.require()
    except UserError as missing:
        table = {"title": TITLE, "columns": ["status"], "rows": [["torch-pruning is not installed"]],
                 "notes": [str(missing)]}
        return {"suite": SUITE, "title": TITLE, "tables": [table]}
    budget = QUICK if quick else FULL
    device = resolve_device("auto")
    began = time.perf_counter()
    rows, notes = compare(budget, device)
    notes += [f"Budget: {budget.pretrain} epochs untouched (lr {LR}), then {budget.learn} epochs at lr {LR} "
              f"(maskfx: masks and clusters at lr {MASK_LR}) and {budget.finetune} at lr {LR / 10} for every arm "
              f"(maskfx: frozen); SGD momentum 0.9, weight decay 5e-4, batch {BATCH}, seed {SEED}, one run.",
              (f"Latency: ONNX Runtime CPU, interleaved, {budget.latency_runs} runs at batch 1 "
               f"({max(budget.latency_runs // 5, 3)} at batch 32); " if budget.latency_runs
               else "Quick run: no ONNX export or latency; ")
              + f"{time.perf_counter() - began:.0f} s on {device}, load average {os.getloadavg()[0]:.1f} at the end."]
    table = {"title": TITLE, "columns": COLUMNS, "rows": rows, "notes": notes}
    return {"suite": SUITE, "title": TITLE + (" [quick: smoke budgets]" if quick else ""), "tables": [table]}

