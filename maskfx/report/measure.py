"""What the report compares per model: accuracy, parameters, MACs, ONNX Runtime latency."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from maskfx.export import open_session
from maskfx.passes.graph import model_device


@dataclass
class Measurement:
    """One row of a report table; ``None`` where a number was not taken (no ONNX file)."""

    model: str
    accuracy: float
    parameters: int
    macs: int  # multiply-accumulates for one input
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    onnx_nodes: int | None = None
    verification: str = ""  # the export's parity check, or what collapse says about exactness


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, *example: torch.Tensor) -> int:
    """Multiply-accumulates of one eval forward for a single input: the first row of each example
    tensor, on the module's device (``FlopCounterMode`` counts 2 FLOPs per MAC)."""
    device = model_device(module)
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(*(x[:1].to(device) for x in example))
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2


def ort_latency(paths: dict[str, str | os.PathLike], example: torch.Tensor, runs: int = 30, warmup: int = 5,
                threads: int | None = None) -> dict[str, tuple[float, float]]:
    """Median and 90th-percentile latency (ms) of one ONNX Runtime CPU call on ``example``, per
    model. The models take turns call by call, so load from other processes hits them alike and
    their ratio stays meaningful on a shared machine."""
    sessions = {name: open_session(path, device="cpu", threads=threads) for name, path in paths.items()}
    feed = example.detach().cpu().numpy()
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for step in range(warmup + runs):
        for name, session in sessions.items():
            began = time.perf_counter()
            session.run(feed)
            if step >= warmup:
                times[name].append((time.perf_counter() - began) * 1e3)
    return {name: (float(np.percentile(t, 50)), float(np.percentile(t, 90))) for name, t in times.items()}
