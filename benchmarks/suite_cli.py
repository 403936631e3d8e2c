"""Run one benchmark suite on its own: ``python -m benchmarks.<suite> [--quick] [--json PATH]``."""
from __future__ import annotations

import argparse
import json
from typing import Callable


def format_table(table: dict) -> str:
    """A table of a suite's result as aligned plain text, notes below it."""
    cells = [[str(c) for c in table["columns"]]] + [["-" if v is None else str(v) for v in row] for row in table["rows"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [table["title"]] + ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"  * {note}" for note in table["notes"]])


def main(run: Callable[[bool], dict], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="one seed, tiny budgets (CI)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = run(args.quick)
    print(f"== {result['title']}")
    for table in result["tables"]:
        print("\n" + format_table(table))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
