"""``maskfx bench``: the repository's benchmarks (``python -m benchmarks`` in a maskfx checkout),
which write ``benchmarks/results/*.json`` and render ``BENCHMARKS.md`` from them."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from maskfx.cli.options import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=".", help="repository root holding the benchmarks package")
    parser.add_argument("--quick", action="store_true", help="the CI-sized run")


def run_bench(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise FileNotFoundError(f"{root / 'benchmarks'} not found: run `maskfx bench` in a maskfx checkout or pass --root")
    return subprocess.call([sys.executable, "-m", "benchmarks", *(["--quick"] if args.quick else [])], cwd=root)


BENCH = Command("bench", "run the benchmarks of a maskfx checkout (python -m benchmarks)", _arguments, run_bench)
