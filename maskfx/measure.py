"""What the lifecycle and the reports count per model: parameters, MACs (as ``torch.utils.flop_counter``
counts them), accuracy rows, and how timings are taken."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from maskfx.graph.surgery import model_device


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


def interleaved_times(candidates: dict[str, Callable[[], object]], rounds: int = 15, warmup: int = 3,
                      sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds of every timed call of each candidate. The candidates take turns call by call, so
    load from other processes hits them alike and their ratios stay meaningful on a shared
    machine; ``sync`` waits for queued device work, so an asynchronous GPU call is timed whole."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    sync()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    """p50 and p90 of ``seconds``, in milliseconds."""
    return float(np.percentile(seconds, 50)) * 1e3, float(np.percentile(seconds, 90)) * 1e3
