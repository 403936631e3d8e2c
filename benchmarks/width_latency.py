"""Width pruning's deployed latency per MAC: does ONNX Runtime turn a 0.5-MAC resnet50 into about
half the latency? maskfx's channel gates at ``Budget(macs=0.5)`` (rounded to its default multiple,
ONNX Runtime's channel block on this machine: 16 with AVX-512, else 8; and to multiples of 8, 1,
16 and 32) beside Torch-Pruning's L2-magnitude channel pruning at the same MACs (the same multiple,
and unrounded), every model timed against the dense one in one interleaved ONNX Runtime run per
batch size; then ONNX Runtime's own profile of each says where the time goes.

The issue's goal: ONNX Runtime latency ratio / MAC ratio <= 1.10 at batch 1 and at batch 32 for
maskfx's 0.5-MAC resnet50 (the rounded, default row); the other rows are reported beside it.

- Model: torchvision resnet50 (no weights, a 10-class head), eval mode, every BatchNorm given
  random statistics and affine parameters (seeded), so no layer is the identity and collapse and
  export have something to fold and verify.
- maskfx: ``transform(channels=True, budget=Budget(macs=0.5))``, untrained: every gate is equally
  likely open, so ``freeze``'s selection follows its tie-break (the space keeping the largest
  share of its width gives a chunk first: a uniform width cut), deterministically; then
  ``collapse("prune")``. The other rows:
  ``channels=ChannelConfig(round_to=r)`` (does a coarser multiple buy latency per MAC, or is the
  ratio a floor of ONNX Runtime's narrower convolutions?).
- Torch-Pruning: ``BasePruner`` + ``MagnitudeImportance(p=2)``, local (uniform per layer), the
  classifier kept, at the pruning ratio found by bisection
  (``maskfx.peers.torch_pruning.pruned_by_bisection``) whose MACs come closest to maskfx's default
  row from above; ``round_to`` that row's and ``None``.
- Every model (the dense one too) exported with ``maskfx.export_onnx`` (ONNX Runtime parity
  verified), then timed on the CPU provider, the models taking turns call by call
  (``maskfx.report.ort_latency``); MACs with ``maskfx.report.count_macs`` (one image).

Budget: 128 px inputs (1.34 GMACs an image dense; the network downsamples 32x, leaving a 4x4 final
map). Sized from its costs to about 8 minutes on 2 CPU cores: about 3 minutes for maskfx's four
transforms and collapses, 1.5 for Torch-Pruning's bisections, 1 for the seven exports and 3 for
the timing, most of it the batch-32 calls.

The quick run (CI-sized) takes resnet18 at 32 px and a few rounds: it shows every row runs, not
what the methods cost.

    python -m benchmarks --only width-latency [--quick]
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import torch
import torchvision
from torch import nn

import maskfx
from benchmarks.suite import Cell, result, table
from maskfx.peers import torch_pruning as peer
from maskfx.report import count_macs, count_parameters, ort_latency
from maskfx.techniques.channels.config import ort_cpu_channel_block

SUITE = "width-latency"
TITLE = "Width pruning: ONNX Runtime latency per MAC at 0.5 MACs, maskfx vs Torch-Pruning"
SEED = 0
BUDGET = 0.5  # the fraction of the dense MACs
GOAL = 1.10  # the issue: latency ratio / MAC ratio at batch 1 and 32, maskfx's 0.5-MAC resnet50
ROUND_TO = maskfx.ChannelConfig().round_to  # maskfx's default here: ONNX Runtime's channel block
BLOCK = ort_cpu_channel_block()  # the profile's CPU provider, GPU or not
PROFILE_RUNS = 3  # profiled ORT calls per model at batch 32
EXAMPLES = 8  # images for transform, collapse's check, MACs and the exports' tracing
DENSE = "dense"
# maskfx's rows by channel multiple: the default, none, and coarser ones (does a wider multiple buy
# latency per MAC, or is the ratio a floor of ONNX Runtime's narrower convolutions?)
MASKFX_ROUNDINGS = {f"maskfx, round_to={r}": r for r in dict.fromkeys((ROUND_TO, 8, 1, 16, 32))}
MASKFX = f"maskfx, round_to={ROUND_TO}"
TORCH_PRUNING, TORCH_PRUNING_UNROUNDED = f"Torch-Pruning, round_to={ROUND_TO}", "Torch-Pruning, no rounding"
ROWS = (DENSE, *MASKFX_ROUNDINGS, TORCH_PRUNING, TORCH_PRUNING_UNROUNDED)
COLUMNS = ["model", "MACs (M)", "MAC ratio", "parameters", "narrowest conv", "ORT b1 p50 ms", "ORT b32 p50 ms",
           "b1 latency ratio", "b32 latency ratio", "b1 latency / MAC", "b32 latency / MAC"]
PROFILE_COLUMNS = ["model", "ORT kernels", "layout reorders", "reorder time %", "MAC ratio",
                   f"MAC ratio in {BLOCK}-channel blocks", "kernel time ratio"]


@dataclass(frozen=True)
class RunBudget:
    model: str  # a torchvision constructor
    image_size: int
    b1_runs: int  # ORT calls per model at batch 1, interleaved
    b32_runs: int  # ORT calls per model at batch 32, interleaved
    warmup: int  # untimed calls per model before each interleaved run
    bisection_steps: int  # Torch-Pruning's ratio search per row


FULL = RunBudget("resnet50", 128, b1_runs=60, b32_runs=12, warmup=3, bisection_steps=10)
QUICK = RunBudget("resnet18", 32, b1_runs=10, b32_runs=3, warmup=2, bisection_steps=5)


def dense_model(budget: RunBudget) -> nn.Module:
    """The seeded model in eval mode with random BatchNorm statistics and affine parameters."""
    torch.manual_seed(SEED)
    model = getattr(torchvision.models, budget.model)(weights=None, num_classes=10).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


def maskfx_pruned(model: nn.Module, example: torch.Tensor, round_to: int) -> tuple[nn.Module, list[str]]:
    """``model`` width-pruned by maskfx to ``BUDGET`` of its MACs, untrained, with what transform
    warned and what collapse reports."""
    channels = True if round_to == ROUND_TO else maskfx.ChannelConfig(round_to=round_to)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = maskfx.transform(copy.deepcopy(model), channels=channels, example_inputs=(example,),
                               budget=maskfx.Budget(macs=BUDGET))
    maskfx.freeze(net)
    deploy = maskfx.collapse(net, "prune", example_inputs=(example,)).eval()
    report = maskfx.summary(deploy).collapse
    said = sorted({str(w.message) for w in caught})
    return deploy, [f"achieved {report.achieved:.3f} of the MACs (budget {report.budget}); collapse {report.shift}"] + \
        [f"transform warned: {message}" for message in said]


def narrowest_conv(model: nn.Module) -> int:
    return min(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def stage_widths(model: nn.Module) -> str:
    """A torchvision ResNet's widths after pruning: the stem's, then per stage its residual stream
    (its last convolution's outputs) and its narrowest convolution."""
    modules = dict(model.named_modules())
    parts = [f"stem {modules['conv1'].out_channels}"]
    for stage in range(1, 5):
        convs = [m for n, m in modules.items() if n.startswith(f"layer{stage}.") and isinstance(m, nn.Conv2d)
                 and "downsample" not in n]
        parts.append(f"layer{stage} {convs[-1].out_channels} (narrowest {min(c.out_channels for c in convs)})")
    return ", ".join(parts)


def latencies(models: dict[str, nn.Module], example: torch.Tensor, batch32: torch.Tensor,
              budget: RunBudget) -> tuple[dict[str, tuple[float, float]], list[str], list[list[Cell]]]:
    """Per model: ONNX Runtime p50 ms at batch 1 and at batch 32, every model exported, verified
    and timed in the same interleaved run (one per batch size); each export's report; and, after
    the timing, each model's ORT kernel profile (``profile_rows``)."""
    with tempfile.TemporaryDirectory() as tmp:
        exported = {name: maskfx.export_onnx(model, Path(tmp) / f"{i}.onnx", (example,), device="cpu")
                    for i, (name, model) in enumerate(models.items())}
        paths = {name: path for name, (path, _) in exported.items()}
        single = ort_latency(paths, example[:1], runs=budget.b1_runs, warmup=budget.warmup)
        batch = ort_latency(paths, batch32, runs=budget.b32_runs, warmup=budget.warmup)
        profiled = profile_rows(models, paths, batch32)
    reports = [f"{name} {report.node_count} nodes, {', '.join(map(str, report.checks))}, "
               f"{'verified' if report.ok else 'FAILED'}" for name, (_, report) in exported.items()]
    return {name: (single[name][0], batch[name][0]) for name in models}, reports, profiled


def kernel_profile(path: str | os.PathLike, batch: torch.Tensor, runs: int) -> tuple[int, int, float, float]:
    """ONNX Runtime's own profile of ``runs`` calls: the kernels one call runs, how many of them
    are layout reorders, their share of the kernel time, and the kernel time per call (µs)."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(path).with_suffix(""))
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch.numpy()}
    for _ in range(runs + 1):  # the first call is the warm-up: its events are dropped below
        session.run(None, feed)
    events = [e for e in json.loads(Path(session.end_profiling()).read_text())
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_call, left = divmod(len(events), runs + 1)
    assert left == 0, f"{len(events)} kernel events are not {runs + 1} calls' worth"
    timed = events[per_call:]
    reorders = [e for e in timed if e["args"].get("op_name", "").startswith("Reorder")]
    total = sum(e["dur"] for e in timed)
    return per_call, len(reorders) // runs, sum(e["dur"] for e in reorders) / total, total / runs


def blocked_macs(model: nn.Module, example: torch.Tensor, block: int) -> int:
    """The convolutions' and linear layers' MACs as ONNX Runtime's blocked CPU convolutions compute
    them: a plain convolution's output channels padded up to ``block``, and its input channels too
    when there are at least ``block`` of them (an image's three are read unblocked; this machine's
    profile shows a 40-channel convolution running as 48 by 48). Grouped and depthwise
    convolutions are blocked only when their widths are multiples of the block, so they count as
    they are."""
    total = 0

    def padded(channels: int) -> int:
        return -(-channels // block) * block

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
            return
        kernel = module.kernel_size[0] * module.kernel_size[1] * output.shape[-2] * output.shape[-1]
        if module.groups > 1:
            total += module.out_channels * module.in_channels // module.groups * kernel
            return
        reads = module.in_channels if module.in_channels < block else padded(module.in_channels)
        total += padded(module.out_channels) * reads * kernel

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total


def profile_rows(models: dict[str, nn.Module], paths: dict[str, str], batch32: torch.Tensor) -> list[list[Cell]]:
    """Per model, where its ONNX Runtime time goes against the dense model's (``kernel_profile``)."""
    profiles = {name: kernel_profile(path, batch32, PROFILE_RUNS) for name, path in paths.items()}
    macs = {name: count_macs(model, batch32[:1]) for name, model in models.items()}
    blocked = {name: blocked_macs(model, batch32, BLOCK) for name, model in models.items()}
    return [[name, kernels, reorders, round(100 * share, 1), round(macs[name] / macs[DENSE], 3),
             round(blocked[name] / blocked[DENSE], 3), round(per_call / profiles[DENSE][3], 3)]
            for name, (kernels, reorders, share, per_call) in profiles.items()]


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def goal_note(judged: dict[str, tuple[float, float, float]], budget: RunBudget, quick: bool) -> str:
    """The issue's goal judged on maskfx's rounded row, the other rows beside it (one run)."""
    goal = f"Goal (the issue: latency / MAC <= {GOAL:.2f} at batch 1 and 32 for maskfx's 0.5-MAC resnet50"
    if quick:
        return f"{goal}): no verdict (quick run: {budget.model} at {budget.image_size} px, a few calls)."
    mac_ratio, b1, b32 = judged[MASKFX]
    beside = "; ".join(f"{name} {r1:.3f} / {r32:.3f} ({'within' if max(r1, r32) <= GOAL else 'over'} {GOAL:.2f})"
                       for name, (_, r1, r32) in judged.items() if name not in (DENSE, MASKFX))
    return (f"{goal}, round_to={ROUND_TO}, the default here): batch 1 {_met(b1 <= GOAL)} ({b1:.3f}), "
            f"batch 32 {_met(b32 <= GOAL)} ({b32:.3f}), "
            f"at MAC ratio {mac_ratio:.3f}, from one interleaved run. Beside it (batch 1 / batch 32): {beside}.")


def run(quick: bool) -> dict:
    """The dense model, maskfx's and Torch-Pruning's 0.5-MAC models (rounded and not), exported,
    verified and timed (``UserError`` without Torch-Pruning, a dependency of maskfx)."""
    started = time.perf_counter()
    budget = QUICK if quick else FULL
    peer.require()
    dense = dense_model(budget)
    generator = torch.Generator().manual_seed(SEED)
    batch32 = torch.randn(32, 3, budget.image_size, budget.image_size, generator=generator)
    example = batch32[:EXAMPLES]
    base_macs = count_macs(dense, example)
    seconds: dict[str, float] = {}

    models: dict[str, nn.Module] = {DENSE: dense}
    maskfx_notes: dict[str, list[str]] = {}
    for name, round_to in MASKFX_ROUNDINGS.items():
        began = time.perf_counter()
        models[name], maskfx_notes[name] = maskfx_pruned(dense, example, round_to)
        seconds[name] = time.perf_counter() - began
    target = count_macs(models[MASKFX], example)
    ratios = {}
    for name, round_to in ((TORCH_PRUNING, ROUND_TO), (TORCH_PRUNING_UNROUNDED, None)):
        began = time.perf_counter()
        got = peer.pruned_by_bisection(dense, example, target, round_to=round_to, steps=budget.bisection_steps)
        models[name], ratios[name] = got.model, got.ratio
        seconds[name] = time.perf_counter() - began

    began = time.perf_counter()
    latency, exports, profiled = latencies(models, example, batch32, budget)
    seconds["export and timing"] = time.perf_counter() - began

    rows: list[list[Cell]] = []
    judged: dict[str, tuple[float, float, float]] = {}
    for name in ROWS:
        model = models[name]
        macs = count_macs(model, example)
        mac_ratio = macs / base_macs
        b1, b32 = (latency[name][i] / latency[DENSE][i] for i in (0, 1))
        judged[name] = (mac_ratio, b1 / mac_ratio, b32 / mac_ratio)
        rows.append([name, round(macs / 1e6, 1), round(mac_ratio, 3), count_parameters(model), narrowest_conv(model),
                     round(latency[name][0], 2), round(latency[name][1], 2), round(b1, 3), round(b32, 3),
                     round(b1 / mac_ratio, 3), round(b32 / mac_ratio, 3)])

    size = f"{budget.image_size}x{budget.image_size}"
    notes = [
        f"{budget.model} (torchvision, no weights, 10-class head) at 3x{size}, eval mode, every BatchNorm with "
        f"random statistics and affine parameters (running mean N(0, 0.1²), running variance and weight "
        f"U(0.5, 1.5), bias N(0, 0.1²); seed {SEED}). Inputs: seeded N(0, 1) images; MACs of one image "
        f"(torch.utils.flop_counter), {base_macs / 1e6:.1f}M dense.",
        f"maskfx: transform(channels=..., budget=Budget(macs={BUDGET})), untrained, freeze, collapse('prune') "
        f"(checked on {EXAMPLES} images). "
        f"Every gate is equally likely open untrained, so freeze's selection follows its tie-break (the space "
        f"keeping the largest share of its width gives a chunk first: a uniform width cut): the 'narrowest conv' "
        f"column shows where that leaves the network.",
        *[f"{name}: {note}" for name, said in maskfx_notes.items() for note in said],
        f"Torch-Pruning {peer.version()}: BasePruner, MagnitudeImportance(p=2), local "
        f"(uniform per layer), the classifier kept; the pruning ratio by {budget.bisection_steps} bisection steps "
        f"in [0, 0.95] for the MACs closest from above to maskfx's round_to={ROUND_TO} model ({target / 1e6:.1f}M): "
        + ", ".join(f"{name} at ratio {r:.3f}" for name, r in ratios.items()) + ".",
        f"ORT: CPU provider, default threads, every export verified against PyTorch in ONNX Runtime; p50 of "
        f"{budget.b1_runs} interleaved calls per model at batch 1 and {budget.b32_runs} at batch 32 "
        f"({budget.warmup} warm-up calls each); latency ratios to the dense model of the same run; "
        f"latency / MAC = latency ratio / MAC ratio (1.0: latency falls exactly as the MACs).",
        "Widths (stem; per stage the residual stream, narrowest convolution): " + "; ".join(
            f"{name}: {stage_widths(models[name])}" for name in ROWS) + ".",
        "Exports: " + "; ".join(exports) + ".",
    ]
    notes.append(goal_note(judged, budget, quick))
    notes.append("Seconds: " + ", ".join(f"{name} {s:.0f}" for name, s in seconds.items())
                 + f"; the whole suite {time.perf_counter() - started:.0f} s ({torch.get_num_threads()} torch "
                 f"threads), load average {os.getloadavg()[0]:.1f} at the end.")
    return {**result(SUITE, TITLE + (" [quick: resnet18, 32 px]" if quick else f" ({budget.model}, {size} px)"), [
        table(f"{budget.model} at {size}: ONNX Runtime latency ratio / MAC ratio, batch 1 and 32", COLUMNS, rows,
              notes),
        table(f"Where the time goes: ONNX Runtime's own profile at batch 32 ({PROFILE_RUNS} calls a model)",
              PROFILE_COLUMNS, profiled, [
                  f"ONNX Runtime's CPU convolutions compute in blocks of {BLOCK} channels on this machine (MLAS's "
                  f"NCHWc layout: 16 with AVX-512, 8 with AVX2; torch reports CPU capability "
                  f"{torch.backends.cpu.get_cpu_capability()}). A width off the block is padded up to it, and the "
                  f"adds, ReLUs and pools around it leave the blocked layout: 'layout reorders' are the "
                  f"ReorderInput/ReorderOutput kernels one call runs, 'reorder time %' their share of its kernel "
                  f"time. 'MAC ratio in {BLOCK}-channel blocks' counts every convolution's channels padded to the "
                  f"block (an image's 3 input channels unpadded), as the kernels compute them.",
                  "Kernel time ratio: the profiled kernels' summed time per call to the dense model's; the "
                  "profiler's own overhead is in both, and the calls are not interleaved: the first table's "
                  "ratios are the timing, this one says where the time goes."])]), "seeds": [SEED]}
