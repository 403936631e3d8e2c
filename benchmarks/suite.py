"""The contract between the harness and a suite: what ``run(quick)`` returns.

A suite returns ``{"suite": str, "title": str, "tables": [table, ...]}`` where a table is
``{"title": str, "columns": [str], "rows": [[cell, ...]], "notes": [str]}`` and a cell is a
string, a number or ``None``. Everything must survive ``json.dumps``: the JSON file is the
only source of ``BENCHMARKS.md``. A suite that cannot run here raises ``SuiteSkipped``.
"""
from __future__ import annotations

from typing import Any

Cell = str | int | float | None


class SuiteSkipped(Exception):
    """The suite cannot run on this machine; the message says why (recorded, not an error)."""


def table(title: str, columns: list[str], rows: list[list[Cell]], notes: list[str] | None = None) -> dict[str, Any]:
    """One result table; every row must have one cell per column."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"table {title!r}: row {row} has {len(row)} cells for {len(columns)} columns")
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "notes": list(notes or [])}


def rows_of(table: dict[str, Any]) -> list[dict[str, Any]]:
    """A result table's rows as dicts keyed by its columns (how the renderers read a results file)."""
    return [dict(zip(table["columns"], row)) for row in table["rows"]]


def per_seed(table: dict[str, Any], *keys: str, value: str = "test acc %") -> dict[tuple, dict[int, Any]]:
    """A per-seed table's ``value`` by its ``keys`` columns, then by seed: what paired differences
    over seeds are taken from."""
    found: dict[tuple, dict[int, Any]] = {}
    for row in rows_of(table):
        found.setdefault(tuple(row[k] for k in keys), {})[row["seed"]] = row[value]
    return found


def result(suite: str, title: str, tables: list[dict[str, Any]]) -> dict[str, Any]:
    return {"suite": suite, "title": title, "tables": tables}


def ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded for the tables."""
    return round(seconds * 1e3, 2)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)
