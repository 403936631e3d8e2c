"""The suites' PNG figures, drawn from their results files only (as BENCHMARKS.md is rendered):
``python -m benchmarks`` writes ``<results>/<suite>.png`` beside ``<suite>.json`` for each suite
named here, and the page shows it under the suite's tables."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

from benchmarks.suite import per_seed, rows_of
from maskfx.report.plots import CostPoint, accuracy_against_cost


def budget_curve(record: dict[str, Any], path: Path) -> Path:
    """The budget suite: test accuracy (mean, std over seeds) against the MAC ratio and the ONNX
    Runtime latency ratios at batch 1 and 32, for the untouched model and each method's budgets."""
    summary, seeds_table = record["tables"]
    seeds = per_seed(seeds_table, "MACs budget", "method")
    methods: dict[str, list[CostPoint]] = {}
    for row in rows_of(summary):
        if row["MACs budget"] is None and not row["method"].startswith("untouched"):
            continue  # the start is not a deployed model of this comparison
        accuracies = list(seeds[(row["MACs budget"], row["method"])].values())
        error = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        methods.setdefault(row["method"], []).append(CostPoint(
            statistics.mean(accuracies), error,
            {"MACs": row["MAC ratio"], "ORT latency, batch 1": row["ORT b1 / untouched"],
             "ORT latency, batch 32": row["ORT b32 / untouched"]}))
    return accuracy_against_cost(methods, path, record["title"] + " (error bars: std over seeds)")


FIGURES: dict[str, Callable[[dict[str, Any], Path], Path]] = {"budget": budget_curve}


def draw(record: dict[str, Any], results: Path) -> Path | None:
    """``record``'s figure into ``results`` (``None``: the suite has none, or measured nothing)."""
    if record["suite"] not in FIGURES or record["status"] != "ok":
        return None
    return FIGURES[record["suite"]](record, Path(results) / f"{record['suite']}.png")
