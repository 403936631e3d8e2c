"""BENCHMARKS.md from the suites' JSON results and nothing else, so every number in it is one a
benchmark run wrote (``tests/test_benchmarks.py`` re-renders and compares)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.figures import FIGURES
from benchmarks.registry import SUITES

HEADER = """# Benchmarks

Rendered by `python -m benchmarks` (`benchmarks/render.py`) from the JSON results it wrote,
`benchmarks/results/<suite>.json`; every number below is read from those files, and a test
re-renders this page from them and checks it is unchanged. Do not edit it by hand: rerun
`make bench` (the full run) or `make bench-quick` (`--quick`, the CI-sized run), or
`python -m benchmarks --only SUITE ...` for some suites. Each section states its command,
machine, versions, seeds, wall time and load average. Ratios are taken within one run with the
candidates interleaved, so load from other processes hits them alike; absolute times depend on
the machine and its load.
"""


QUICK = ("*Quick run (CI-sized): small inputs and a few rounds, so these numbers show that the suite "
         "works, not what the techniques cost; quote a full run (`make bench`).*")


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(table: dict[str, Any]) -> list[str]:
    lines = [f"### {table['title']}", "", "| " + " | ".join(table["columns"]) + " |",
             "|" + "---|" * len(table["columns"])]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    lines += [""] + [f"- {note}" for note in table["notes"]]
    return lines + [""] if table["notes"] else lines


def _slashed(values: list[float]) -> str:
    return " / ".join(str(v) for v in values)


def conditions(meta: dict[str, Any]) -> list[str]:
    m, v = meta["machine"], meta["versions"]
    gpu = f"; GPU {m['gpu']}" if m["gpu"] else "; no GPU"
    return [
        f"- Command: `{meta['command']}` ({'quick' if meta['quick'] else 'full'} run), finished {meta['finished']}, "
        f"{meta['wall seconds']} s wall.",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable cores']} usable), {m['torch threads']} torch "
        f"threads{gpu}; {m['platform']}.",
        f"- Versions: python {v['python']}, torch {v['torch']}, torchvision {v['torchvision']}, "
        f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}.",
        f"- Seeds: {', '.join(str(s) for s in meta['seeds'])}. Load average (1/5/15 min) before "
        f"{_slashed(meta['load average before'])}, after {_slashed(meta['load average after'])}.",
    ]


def section(record: dict[str, Any], figures_at: str = "") -> list[str]:
    """The suite's heading, conditions and tables, then its figure (``benchmarks/figures.py``) as
    an image in ``figures_at``, the results folder relative to the page."""
    lines = [f"## {record['title']} (`{record['suite']}`)", ""]
    if record["status"] != "ok":  # nothing measured: what was run, and why it did not
        return lines + [f"**{record['status'].capitalize()}**: {record['reason']}", "",
                        f"- Command: `{record['meta']['command']}`, finished {record['meta']['finished']}.", ""]
    if record["meta"]["quick"]:
        lines += [QUICK, ""]
    lines += conditions(record["meta"]) + [""]
    for table in record["tables"]:
        lines += markdown_table(table)
    if record["suite"] in FIGURES:
        lines += [f"![{record['suite']}: accuracy against cost]({figures_at}{record['suite']}.png)", ""]
    return lines


def ordered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Registry order first, then any other suite by name."""
    rank = {name: i for i, name in enumerate(SUITES)}
    return sorted(records, key=lambda r: (rank.get(r["suite"], len(rank)), r["suite"]))


def runs(records: list[dict[str, Any]]) -> list[str]:
    """One row per invocation that wrote suites on this page: its command and total wall time,
    the number the benchmark budget (45 minutes for the full run) is judged by."""
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        meta = record["meta"]
        if meta.get("run started"):
            by_run.setdefault((meta["run started"], meta["command"]), []).append(record)
    if not by_run:
        return []
    lines = ["## Runs on this page", "", "| started | command | suites | wall minutes |", "|---|---|---|---|"]
    for (started, command), members in sorted(by_run.items()):
        wall = sum(m["meta"]["wall seconds"] for m in members)
        lines.append(f"| {started} | `{command}` | {', '.join(m['suite'] for m in ordered(members))} | {wall / 60:.1f} |")
    return lines + ["", "Wall minutes sum the suites' own wall times; a suite rerun later by another command shows "
                        "under that command instead.", ""]


def render(results: Path, page_folder: Path | None = None) -> str:
    """The whole page from ``results/*.json``, for a page in ``page_folder`` (default: ``results``)."""
    records = [json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))]
    relative = os.path.relpath(results, page_folder if page_folder is not None else results)
    figures_at = "" if relative == "." else Path(relative).as_posix() + "/"
    lines = HEADER.splitlines() + [""] + runs(records)
    for record in ordered(records):
        lines += section(record, figures_at)
    return "\n".join(lines).rstrip() + "\n"
