"""ONNX Runtime latency of exported models, the models taking turns."""
from __future__ import annotations

import os

import torch

from maskfx.export import open_session
from maskfx.measure import interleaved_times, percentiles_ms


def ort_latency(paths: dict[str, str | os.PathLike], example: torch.Tensor, runs: int = 30, warmup: int = 5,
                threads: int | None = None) -> dict[str, tuple[float, float]]:
    """Median and 90th-percentile latency (ms) of one ONNX Runtime CPU call on ``example``, per
    model, the models taking turns (``interleaved_times``)."""
    sessions = {name: open_session(path, device="cpu", threads=threads) for name, path in paths.items()}
    feed = example.detach().cpu().numpy()
    times = interleaved_times({name: (lambda s=session: s.run(feed)) for name, session in sessions.items()},
                              rounds=runs, warmup=warmup)
    return {name: percentiles_ms(t) for name, t in times.items()}
