"""Interleaved timing: the candidates take turns, so machine noise hits them alike and the
ratios taken in one run are meaningful even on a busy machine."""
from __future__ import annotations

import statistics
from typing import Callable

from maskfx.measure import count_macs, interleaved_times, percentiles_ms  # noqa: F401  (re-exported for the scripts)


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int = 15,
                        warmup: int = 3, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in alternation."""
    times = interleaved_times(candidates, rounds, warmup, sync)
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_percentiles(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 3,
                            sync: Callable[[], None] = lambda: None) -> dict[str, tuple[float, float]]:
    """p50 and p90 milliseconds per call of each candidate, measured in alternation."""
    times = interleaved_times(candidates, rounds, warmup, sync)
    return {name: percentiles_ms(v) for name, v in times.items()}


def print_ratio(label: str, numerator: float, denominator: float, goal: str) -> float:
    ratio = numerator / denominator
    print(f"{label:<58} {numerator * 1e3:9.2f} ms / {denominator * 1e3:9.2f} ms = {ratio:6.3f}   (goal {goal})")
    return ratio


def ort_latency_ratio(models: dict, example, rounds: int, tmp) -> tuple[dict[str, float], dict]:
    """Export each model, open it in ONNX Runtime, and time them interleaved on ``example``."""
    from pathlib import Path

    import maskfx
    from maskfx.export import open_session

    reports = {name: maskfx.export_onnx(m, Path(tmp) / f"{name}.onnx", (example,))[1] for name, m in models.items()}
    sessions = {name: open_session(r.path) for name, r in reports.items()}
    feeds = {name: s.feeds((example,)) for name, s in sessions.items()}
    times = interleaved_medians({name: (lambda s=s, f=feeds[name]: s.session.run(None, f))
                                 for name, s in sessions.items()}, rounds=rounds)
    return times, reports


def train_step_fn(model, x, y):
    """One SGD step of cross-entropy on a fixed batch, as a closure for timing."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


REUSED = ", freed memory reused"  # the label of a measurement taken by ``with_freed_memory_reused``


def with_freed_memory_reused(module: str, expression: str):
    """``module.expression`` (a call returning JSON-able data) evaluated in a fresh interpreter after
    ``maskfx.train.reuse_freed_memory()``, as the maskfx command line trains. A fresh process,
    because the setting is process-wide and cannot be undone: whatever this process measures
    afterwards keeps glibc's defaults."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (f"import json, torch; from maskfx.train import reuse_freed_memory; import {module} as m; "
            f"reuse_freed_memory(); print(json.dumps(m.{expression}))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True, cwd=root).stdout
    return json.loads(out.splitlines()[-1])


def report_pruned_latency(label: str, pruned, original, x, rounds: int, detail: str = "",
                          goal: str = "within 10% of the MAC ratio") -> None:
    """ONNX Runtime latency of ``pruned`` / ``original`` next to their MAC and parameter ratios."""
    import tempfile

    mac_ratio = count_macs(pruned, x[:1]) / count_macs(original, x[:1])
    params = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in original.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        t, _ = ort_latency_ratio({"pruned": pruned, "original": original}, x, rounds, tmp)
    ratio = print_ratio(label, t["pruned"], t["original"], goal)
    print(f"{'':<58} {detail}MAC ratio {mac_ratio:.3f}, parameter ratio {params:.3f}, "
          f"latency/MAC ratio {ratio / mac_ratio:.3f}")


def saved_activation_mib(model, x, y) -> float:
    """MiB of tensors autograd saves for backward in one training forward (each storage once):
    the training memory a method adds, which process RSS hides under the weights."""
    import torch
    import torch.nn.functional as F

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    del loss
    return sum(storages.values()) / 2**20
