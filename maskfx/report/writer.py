"""``report.json`` (every number of the run) and ``report.md`` (the same numbers as tables)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = (("model", "model", "{}"), ("accuracy", "test accuracy", "{:.4f}"), ("parameters", "parameters", "{:,}"),
           ("macs", "MACs", "{:,}"), ("latency_p50_ms", "ORT p50 ms", "{:.2f}"), ("latency_p90_ms", "ORT p90 ms", "{:.2f}"),
           ("onnx_nodes", "ONNX nodes", "{}"), ("verification", "verification", "{}"))


def _cell(value: Any, form: str) -> str:
    return "-" if value is None or value == "" else form.format(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(key), form) for key, _, form in COLUMNS) + " |" for row in rows]
    return lines


def comparison(model: dict[str, Any], against: dict[str, Any]) -> dict[str, Any]:
    """``model``'s row against ``against``'s (``Measurement`` rows as dicts): parameters, MACs and
    ONNX Runtime p50 latency as ratios (``None`` where either was not timed), accuracy as a
    difference. The demo keeps these in ``report.json``: the numbers a reader judges by."""
    p50 = model.get("latency_p50_ms"), against.get("latency_p50_ms")
    return {"model": model["model"], "against": against["model"],
            "parameters_ratio": model["parameters"] / against["parameters"], "macs_ratio": model["macs"] / against["macs"],
            "latency_p50_ratio": p50[0] / p50[1] if all(p50) else None,
            "accuracy_difference": model["accuracy"] - against["accuracy"]}


def _comparison_line(c: dict[str, Any]) -> str:
    parts = [f"parameters x{c['parameters_ratio']:.3f}", f"MACs x{c['macs_ratio']:.3f}"]
    if c["latency_p50_ratio"] is not None:
        parts.append(f"ORT p50 latency x{c['latency_p50_ratio']:.3f}")
    parts.append(f"accuracy {c['accuracy_difference']:+.4f}")
    return f"**{c['model']} vs {c['against']}:** " + ", ".join(parts)


def _change(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "-"
    return f"{before:,} -> {after:,}" + (f" (x{after / before:.3f})" if before else "")


def _collapse_table(collapses: dict[str, dict[str, Any]]) -> list[str]:
    """Per collapse mode, each technique's step and the whole: what was lowered, what it cost, and
    how far it moved the eval outputs (``CollapseReport.to_dict()`` values)."""
    lines = ["| collapse | step | layers lowered | parameters | MACs per input | max abs output change | exact |",
             "|" + "---|" * 7]
    for mode, report in collapses.items():
        whole = {**report, "technique": "**whole model**", "layers": sum(s["layers"] for s in report["techniques"])}
        for step in [*report["techniques"], whole]:
            shift = step["shift"]
            lines.append(f"| {mode} | {step['technique']} | {step['layers']} | "
                         f"{_change(step['before']['parameters'], step['after']['parameters'])} | "
                         f"{_change(step['before']['macs'], step['after']['macs'])} | "
                         f"{'-' if shift is None else format(shift['max_abs_diff'], '.2e')} | "
                         f"{_cell(step['exact'], '{}')} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# maskfx demo report{' (--quick)' if report['quick'] else ''}", "",
             f"`{report['command']}` on {report['machine']}, {report['wall_seconds']:.0f} s wall. "
             f"Data: {report['data']}. Every number below comes from this run; `report.json` has them all.", ""]
    for part in report["parts"]:
        lines += [f"## {part['title']}", "", part["recipe"], ""]
        lines += _table(part["rows"]) + [""]
        lines += [line for c in part["comparisons"] for line in (_comparison_line(c), "")]
        lines += _collapse_table(part["collapse"]) + [""]
        lines += [f"- {note}" for note in part["notes"]] + [""]
        lines += [f"![{name}]({name})" for name in part["plots"]] + [""]
    return "\n".join(lines)


def write_report(folder: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "report.json", folder / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
