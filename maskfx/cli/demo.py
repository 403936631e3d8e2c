"""``maskfx demo``: the real use end to end, offline, with a baseline and the peer to compare against.

Per part (a ResNet pruned to a MACs budget by channel gates, distilled from its trained start; a
ResNet with Jumpout + Blockout + MaskConnect; a small ResNeXt with GateConnect; the same ResNeXt
under the budget, whose channel gates close whole branches): train the
untouched model (it stands in for a pretrained one), transform *that trained model*, learn
structure, freeze, fine-tune; train the baseline on for the same extra epochs; collapse both
ways, export baseline and pruned model to ONNX, verify them in ONNX Runtime, time them, and write
``report.md``, ``report.json`` and the plots into ``--out``. The budget part adds the peer:
Torch-Pruning's L2-magnitude channel pruning of the same trained start to the MACs maskfx's pruned
model reached (``maskfx.peers.torch_pruning``), trained as long with the same teacher, exported
and timed in the same ONNX Runtime run; so do the ResNeXt's.
"""
from __future__ import annotations

import argparse
import copy
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.cli.options import Command, fraction, positive_int
from maskfx.peers import torch_pruning as peer
from maskfx.report import Measurement, count_macs, count_parameters, ort_latency, plots, write_report
from maskfx.report.writer import comparison
from maskfx.train import (Data, Phase, accuracy, budget_structure_epochs, fit, learn_then_frozen, load_data, predict,
                          resolve_device)
from maskfx.train.distill import DEFAULT_ALPHA, DEFAULT_TEMPERATURE
from maskfx.train.fit import GATE_BETAS, GATE_LR, evaluation_loader
from maskfx.train.recalibrate import DEFAULT_BATCHES as RECALIBRATE_BATCHES


@dataclass(frozen=True)
class Schedule:
    """Epochs and sizes of one demo run: ``baseline`` epochs train the untouched model; the
    transformed model then learns ``learn`` epochs and fine-tunes ``finetune`` epochs, and the
    baseline trains on for as many."""

    limit: int | None  # training images (None: all 1,347)
    baseline: int
    learn: int
    finetune: int
    latency_runs: int
    peer_steps: int = peer.STEPS  # Torch-Pruning's iterative steps up to ratio peer.MAX_RATIO


FULL = Schedule(limit=None, baseline=4, learn=3, finetune=2, latency_runs=50)
# the peer's walk in steps of 0.05 of the ratio (0.01 in the full run), as the budget benchmark's quick run
QUICK = Schedule(limit=256, baseline=2, learn=1, finetune=1, latency_runs=10, peer_steps=18)
LR, MASK_LR, FINETUNE_LR = 0.05, 0.5, 0.01
PEER_ROUND_TO = maskfx.ChannelConfig().round_to  # Torch-Pruning's channel multiple: maskfx's default on this machine
PEER, PEER_ROW = "torch-pruning", f"Torch-Pruning: L2 magnitude, round_to={PEER_ROUND_TO}, at maskfx's MACs"


def small_resnext(num_classes: int) -> nn.Module:
    """A ResNeXt for 32x32 digits: C = 8 branches of width 4, two gated chains of two modules."""
    return ResNet(Bottleneck, [1, 2, 2, 1], groups=8, width_per_group=4, num_classes=num_classes)


def resnet_transform(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """Jumpout, Blockout and MaskConnect at their configs' defaults (MaskConnect: each block reads
    one earlier output, starting from the trained chain, so blocks that end up unread are pruned)."""
    return maskfx.transform(model, jumpout=True, blockout=True, maskconnect=True, example_inputs=(example,))


def resnext_transform(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """GateConnect with its defaults: each branch reads K = 4 of the previous module's 8 branches
    (from a trained start on the digits over 3 seeds, K = 2 cost 1.3 points and K = 4 gained 0.4:
    ``benchmarks/accuracy/trained-gateconnect.json``)."""
    return maskfx.transform(model, example_inputs=(example,), gateconnect=True)


def budget_transform(budget: float) -> Callable[[nn.Module, torch.Tensor], torch.fx.GraphModule]:
    """Channel gates learned under ``budget`` of the MACs (``maskfx.Budget``); freeze meets it."""
    def build(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
        return maskfx.transform(model, channels=True, example_inputs=(example,), budget=maskfx.Budget(macs=budget))
    return build


@dataclass(frozen=True)
class Part:
    key: str
    title: str
    build: Callable[[int], nn.Module]
    transform: Callable[[nn.Module, torch.Tensor], torch.fx.GraphModule]
    distill: bool = False  # learn from the trained start's logits too (it is the teacher)
    peer: bool = False  # beside it Torch-Pruning from the same start, at the MACs the pruned model reached
    freeze_early: bool = False  # a budget: the structure freezes before the last learning epoch


def parts(model: str, budget: float) -> list[Part]:
    def resnet(n: int) -> nn.Module:
        return torchvision.models.get_model(model, weights=None, num_classes=n)
    return [Part("budget", f"{model} at {budget} of the MACs: channel gates under the budget, distilled from the "
                           f"trained start, against Torch-Pruning at the same MACs", resnet, budget_transform(budget),
                 distill=True, peer=True, freeze_early=True),
            Part("resnet", f"{model}: Jumpout + Blockout + MaskConnect", resnet, resnet_transform),
            Part("resnext", "small ResNeXt (C = 8): GateConnect", small_resnext, resnext_transform),
            Part("resnext_budget", f"small ResNeXt (C = 8) at {budget} of the MACs: channel gates under the budget "
                                   f"(a grouped convolution's unit is a whole branch), against Torch-Pruning",
                 small_resnext, budget_transform(budget), distill=True, peer=True,
                 freeze_early=True)]


def _step(part: Part, index: int, text: str) -> None:
    print(f"[{part.key} {index}/6 {time.strftime('%H:%M:%S')}] {text}", flush=True)


def peer_arm(start: nn.Module, example: torch.Tensor, target: int, teacher: nn.Module | None, budget: Schedule,
             train: dict) -> tuple[nn.Module, dict, list[dict]]:
    """The peer's arm: ``start`` pruned by Torch-Pruning to at most ``target`` MACs (iterative,
    ``round_to=PEER_ROUND_TO``), then trained on the baseline's schedule with the maskfx arm's
    ``teacher``. Returns the model (CPU, eval), what the pruning did as data, and the history."""
    (pruned,) = peer.pruned_iteratively(start, example, [target], round_to=PEER_ROUND_TO, steps=budget.peer_steps)
    history = fit(pruned.model, phases=[Phase(budget.learn, LR), Phase(budget.finetune, FINETUNE_LR)],
                  desc="Torch-Pruning", teacher=teacher, **train)
    facts = {"library": "Torch-Pruning", "version": peer.version(), "importance": "MagnitudeImportance(p=2), local",
             "round_to": PEER_ROUND_TO, "iterative_steps": budget.peer_steps, "max_ratio": peer.MAX_RATIO,
             "steps_taken": pruned.steps, "ratio": pruned.ratio, "target_macs": target, "macs": pruned.macs}
    return pruned.model.to("cpu").eval(), facts, history


def accuracy_against_cost(measured: dict[str, dict], keys: list[str], path: Path, title: str) -> Path:
    """The timed models' test accuracy against their MACs and ONNX Runtime latency, as fractions of
    the first's (one run: no error bars)."""
    base = measured[keys[0]]
    points = {measured[key]["model"]: [plots.CostPoint(
        100 * measured[key]["accuracy"], 0.0,
        {"MACs": measured[key]["macs"] / base["macs"],
         "ORT latency": measured[key]["latency_p50_ms"] / base["latency_p50_ms"]})] for key in keys}
    return plots.accuracy_against_cost(points, path, title)


def run_part(part: Part, data: Data, budget: Schedule, out: Path, device: torch.device, seed: int) -> dict:
    """Baseline, transformed, collapsed and pruned model of one part, measured; the report section."""
    cpu, test = torch.device("cpu"), evaluation_loader(data)
    example = torch.stack([data.test[i][0] for i in range(8)])
    train = dict(data=data, device=device, seed=seed)

    def score(model: nn.Module) -> float:
        return accuracy(*predict(model, test, cpu))

    _step(part, 1, f"train the untouched model {budget.baseline} epochs (it stands in for a pretrained one)")
    torch.manual_seed(seed)
    baseline = part.build(data.num_classes)
    history = {"baseline": fit(baseline, phases=[Phase(budget.baseline, LR)], desc="baseline", **train)}

    _step(part, 2, "transform the trained model")
    net = part.transform(baseline, example)
    print("      " + str(maskfx.summary(net)).replace("\n", "\n      "))
    structure = budget_structure_epochs(budget.learn) if part.freeze_early else budget.learn
    extra = learn_then_frozen(budget.learn, LR, MASK_LR, budget.finetune, FINETUNE_LR, structure)
    structure = extra[0].epochs
    _step(part, 3, f"learn structure {structure} of {budget.learn} epochs, freeze, fine-tune {budget.finetune}; "
                   "the baseline trains on as long")
    teacher = copy.deepcopy(baseline).eval() if part.distill else None
    history["transformed"] = fit(net, phases=extra, desc="transformed", teacher=teacher, **train)
    continued = copy.deepcopy(baseline)
    history["baseline, trained on"] = fit(continued, phases=[Phase(budget.learn, LR), Phase(budget.finetune, FINETUNE_LR)],
                                          desc="baseline on", **train)
    net, continued = net.to(cpu).eval(), continued.to(cpu).eval()

    _step(part, 4, "collapse both ways, measured on the test images")
    images = torch.cat([x for x, _ in test])
    deployed = {mode: maskfx.collapse(net, mode, example_inputs=(images,)) for mode in ("expected", "prune")}
    collapses = {mode: maskfx.summary(deploy).collapse for mode, deploy in deployed.items()}
    before = collapses["expected"].before
    rows = {"baseline, trained on": Measurement("baseline, trained on", score(continued), count_parameters(continued),
                                                count_macs(continued, example)),
            "transformed (eval)": Measurement("transformed (eval)", score(net), before.parameters, before.macs)}
    for mode, deploy in deployed.items():
        after = collapses[mode].after
        rows[mode] = Measurement(f"collapsed: {mode}", score(deploy), after.parameters, after.macs,
                                 verification=f"collapse {collapses[mode].shift}")
    if collapses["prune"].budget is not None:  # the pruned widths' BatchNorm statistics, recomputed
        recalibrated = maskfx.recalibrate(copy.deepcopy(deployed["prune"]), DataLoader(data.train, batch_size=64),
                                          batches=RECALIBRATE_BATCHES)
        after = collapses["prune"].after
        rows["prune, recalibrated"] = Measurement("collapsed: prune, BatchNorm recalibrated", score(recalibrated),
                                                  after.parameters, after.macs,
                                                  verification=f"{RECALIBRATE_BATCHES} training batches")
    deploys = [("baseline, trained on", continued, "baseline"), ("prune", deployed["prune"], "pruned")]
    facts = None
    if part.peer:  # the same start, budget (the MACs maskfx reached), schedule and teacher
        target = collapses["prune"].after.macs
        _step(part, 4, f"Torch-Pruning prunes the trained start to at most {target:,} MACs (the pruned model's), "
                       f"trains {budget.learn} + {budget.finetune} epochs with the same teacher")
        theirs, facts, history["Torch-Pruning"] = peer_arm(baseline, example, target, teacher, budget, train)
        rows[PEER] = Measurement(PEER_ROW, score(theirs), count_parameters(theirs), count_macs(theirs, example))
        deploys.append((PEER, theirs, "torch_pruning"))
    for name in history.keys() - {"baseline"}:
        for record in history[name]:
            record["epoch"] += budget.baseline

    _step(part, 5, "export baseline and pruned model" + (" and Torch-Pruning's" if part.peer else "")
          + " to ONNX, verify in ONNX Runtime")
    paths, exports = {}, {}
    for key, model, stem in deploys:
        paths[key], exports[key] = maskfx.export_onnx(model, out / f"{part.key}_{stem}.onnx", example_inputs=(example,),
                                                      device="cpu")
        print(f"      {exports[key]}")
        parity = "ORT parity " + ", ".join(f"b{c.batch} {c.max_abs_diff:.1e}" for c in exports[key].checks)
        rows[key].onnx_nodes = exports[key].node_count
        rows[key].verification = "; ".join(filter(None, [rows[key].verification, parity]))

    _step(part, 6, f"ONNX Runtime latency, batch {len(example)}, {budget.latency_runs} interleaved runs; plots")
    for key, (p50, p90) in ort_latency(paths, example, runs=budget.latency_runs).items():
        rows[key].latency_p50_ms, rows[key].latency_p90_ms = p50, p90
    measured = {key: asdict(row) for key, row in rows.items()}
    comparisons = [comparison(measured["prune"], measured[against]) for against in ("baseline, trained on", PEER)
                   if against in measured]
    sites = maskfx.structure(net)
    drawn = [plots.training_curves(history, out / f"{part.key}_training.png"),
             plots.blockout_clusters(sites, out / f"{part.key}_blockout_clusters.png"),
             plots.maskconnect_connectivity(sites, out / f"{part.key}_maskconnect.png"),
             plots.gateconnect_gates(sites, out / f"{part.key}_gateconnect.png"),
             plots.channel_widths(sites, out / f"{part.key}_channels.png")]
    if part.peer:
        drawn.append(accuracy_against_cost(measured, ["baseline, trained on", "prune", PEER],
                                           out / f"{part.key}_accuracy_cost.png", part.title))
    notes = [note for step in collapses["prune"].techniques for note in step.notes]
    if facts is not None:
        notes.append(f"Torch-Pruning: {facts['steps_taken']} of {facts['iterative_steps']} iterative steps (ratio "
                     f"{facts['ratio']:.2f}), {facts['macs']:,} MACs for the pruned model's {facts['target_macs']:,} "
                     f"(x{facts['macs'] / facts['target_macs']:.3f}); exported, verified and timed in the same "
                     f"ONNX Runtime run as the others")
    for mode in deployed:
        print("      " + str(collapses[mode]).replace("\n", "\n      "))
    recipe = (f"Baseline: {budget.baseline} epochs at lr {LR}. Then, from that trained model: transformed "
              f"{budget.learn} epochs at lr {LR}, the structure learning in the first {structure} (lr {MASK_LR}) "
              f"and frozen after them, then {budget.finetune} epochs at lr "
              f"{FINETUNE_LR}; the baseline trains on with the same schedule. SGD, momentum 0.9, weight decay 5e-4, "
              f"cosine within each phase, batch 64"
              + (f"; channel gates by Adam at lr {GATE_LR}, betas {GATE_BETAS}"
                 if collapses["prune"].budget is not None else "")
              + ("; the transformed model also learns from the trained start's logits (distillation, T = "
                 f"{DEFAULT_TEMPERATURE:g}, alpha {DEFAULT_ALPHA:g})." if part.distill else "."))
    if facts is not None:
        recipe += (f" Torch-Pruning {facts['version']} (the peer): the same trained start, L2-magnitude channel "
                   f"pruning (BasePruner, MagnitudeImportance(p=2), local: one ratio per layer), round_to="
                   f"{PEER_ROUND_TO}, the classifier kept, {facts['iterative_steps']} iterative steps up to ratio "
                   f"{facts['max_ratio']}, stopped at the first at or under the pruned model's MACs; then trained on "
                   f"the baseline's schedule" + (", distilled from the same trained start." if part.distill else "."))
    return {"title": part.title, "recipe": recipe, "rows": list(measured.values()), "comparisons": comparisons,
            "peer": facts, "collapse": {mode: report.to_dict() for mode, report in collapses.items()},
            "exports": {key: report.to_dict() for key, report in exports.items()},
            "notes": notes, "plots": [p.name for p in drawn if p is not None], "histories": history}


DATA_NAMES = {"digits": "scikit-learn digits", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def run_demo(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    budget = QUICK if args.quick else FULL
    budget = replace(budget, learn=args.epochs if args.epochs is not None else budget.learn,
                     finetune=args.finetune_epochs if args.finetune_epochs is not None else budget.finetune)
    device, out = resolve_device(args.device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data, seed=args.seed, limit=budget.limit)
    print(f"maskfx demo{' --quick' if args.quick else ''}: {args.data} {len(data.train)} train / {len(data.test)} test "
          f"images, 32x32, on {device}; report in {out}", flush=True)
    report = {"command": args.invocation,
              "quick": args.quick, "budget": asdict(budget), "seed": args.seed,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
              "data": f"{DATA_NAMES.get(args.data, args.data)} at 32x32, {len(data.train)} train / {len(data.test)} test images",
              "parts": [run_part(part, data, budget, out, device, args.seed) for part in parts(args.model, args.budget)]}
    report["wall_seconds"] = time.perf_counter() - began
    json_path, md_path = write_report(out, report)
    print(f"wrote {md_path} and {json_path} ({report['wall_seconds']:.0f} s)")
    return 0


def resnet_name(text: str) -> str:
    """``--model``: the first part needs a torchvision ResNet (residual blocks for MaskConnect)."""
    names = [name for name in torchvision.models.list_models(module=torchvision.models)
             if torchvision.models.get_model_builder(name).__module__ == "torchvision.models.resnet"]
    if text not in names:
        raise argparse.ArgumentTypeError(f"must be a torchvision ResNet ({', '.join(names)}), got {text!r}")
    return text


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small subset and one epoch per step (CI-sized: a few minutes on 2 cores)")
    parser.add_argument("--model", type=resnet_name, default="resnet18", help="torchvision ResNet for the first parts")
    parser.add_argument("--budget", type=fraction, default=0.5, metavar="FRACTION",
                        help="the budget parts' MACs budget, a fraction of the untouched model's (default 0.5)")
    parser.add_argument("--data", default="digits",
                        help="digits (embedded, the fast default), or the same story at full size: fashion-mnist or "
                             "mnist (60,000 / 10,000 images; `make data` fetches them)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="structure-learning epochs (overrides the budget)")
    parser.add_argument("--finetune-epochs", type=positive_int, default=None, help="epochs after freeze (overrides)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    parser.add_argument("--out", default="maskfx-demo", help="report folder")
    parser.add_argument("--seed", type=int, default=0)


DEMO = Command("demo", "the whole lifecycle offline, against a baseline; writes a report folder", _arguments, run_demo)
