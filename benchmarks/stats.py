"""Intervals for the suites' paired differences over seeds."""
from __future__ import annotations

import statistics

from scipy import stats


def interval95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the two ends of its 95% Student-t interval (a paired difference's, when ``values``
    are per-seed differences); needs two values or more."""
    mean = statistics.mean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def worded(values: list[float], unit: str = "") -> str:
    """``+1.23 [-0.10, +2.56]``: the mean and its 95% interval (one value: the value alone)."""
    if len(values) < 2:
        return f"{values[0]:+.2f}{unit} (one seed: no interval)"
    mean, low, high = interval95(values)
    return f"{mean:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"
