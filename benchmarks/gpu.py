"""The GPU variant: PyTorch eager CUDA latency of the untouched and collapsed models (batch 1
and 32), ONNX Runtime on the provider that really loads (CUDA when offered), and the training-step
ratios on the GPU. Skipped, with the reason, where torch sees no CUDA device.

Runs alone as ``python -m benchmarks --only gpu --out DIR``.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from benchmarks import deployment, training
from benchmarks.measure import interleaved_percentiles
from benchmarks.suite import SuiteSkipped, result, table
from maskfx.export import open_session

SUITE = "gpu"


def eager_latency(nets: dict[str, torch.nn.Module], example: torch.Tensor, runs: int,
                  warmup: int) -> dict[str, tuple[float, float]]:
    """p50/p90 ms of each model's eager CUDA forward, interleaved, synchronised per call."""
    x = example.cuda()

    def forward(net: torch.nn.Module):
        return lambda: net(x)
    with torch.no_grad():
        return interleaved_percentiles({name: forward(net) for name, net in nets.items()}, rounds=runs,
                                       warmup=warmup, sync=torch.cuda.synchronize)


def ort_session_latency(paths: dict[str, Path], example: torch.Tensor, runs: int,
                        warmup: int) -> tuple[dict[str, tuple[float, float]], str]:
    """p50/p90 ms in ONNX Runtime on CUDA when its provider loads, else on the CPU; and that provider."""
    sessions = {name: open_session(path, device="auto") for name, path in paths.items()}
    feeds = {name: s.feeds((example,)) for name, s in sessions.items()}

    def call(name: str):
        return lambda: sessions[name].session.run(None, feeds[name])
    times = interleaved_percentiles({name: call(name) for name in sessions}, rounds=runs, warmup=warmup)
    return times, next(iter(sessions.values())).provider


def deployment_table(quick: bool) -> dict:
    rows, providers = [], set()
    for spec in deployment.models(quick):
        with tempfile.TemporaryDirectory() as folder:
            prepared = deployment.prepare(spec, folder)
            cuda_nets = {name: copy.deepcopy(v.net).cuda() for name, v in prepared.items()}
            for batch in deployment.BATCHES:
                runs, warmup = deployment.runs_for(batch, quick)
                example = torch.randn(batch, *spec.sample_shape)
                times = eager_latency(cuda_nets, example, runs, warmup)
                rows += deployment.latency_rows(spec, "torch eager CUDA", batch, times, prepared)
                times, provider = ort_session_latency({name: v.onnx.path for name, v in prepared.items()}, example,
                                                      runs, warmup)
                providers.add(provider)
                rows += deployment.latency_rows(spec, f"ORT {provider}", batch, times, prepared)
    notes = deployment.notes(quick) + [
        f"GPU: {torch.cuda.get_device_name()}; ONNX Runtime providers offered: {', '.join(ort.get_available_providers())}; "
        f"ran: {', '.join(sorted(providers))}.",
    ]
    if "CUDAExecutionProvider" in providers:
        notes.append("ONNX Runtime CUDA calls take and return host arrays, so their times include both copies; "
                     "eager CUDA times do not (the input is on the GPU).")
    else:
        notes.append("ONNX Runtime's CUDA provider did not load here, so its rows are ONNX Runtime on this machine's CPU.")
    return table("Deployment latency: PyTorch eager CUDA and ONNX Runtime", deployment.COLUMNS, rows, notes)


def run(quick: bool) -> dict:
    if not torch.cuda.is_available():
        raise SuiteSkipped(f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() False")
    return result(SUITE, "GPU: deployment latency and training-step cost", [
        deployment_table(quick), training.training_table(quick, torch.device("cuda"))])
