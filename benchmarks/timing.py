"""Interleaved timing: the candidates take turns, so machine noise hits them alike and the
ratios taken in one run are meaningful even on a busy machine."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int = 15,
                        warmup: int = 3, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in alternation."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    sync()
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def print_ratio(label: str, numerator: float, denominator: float, goal: str) -> float:
    ratio = numerator / denominator
    print(f"{label:<58} {numerator * 1e3:9.2f} ms / {denominator * 1e3:9.2f} ms = {ratio:6.3f}   (goal {goal})")
    return ratio
