"""``maskfx bench``: the repository's benchmarks (``benchmarks/run_all.py``), each printing the
ratios it measures within its own run."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from maskfx.cli.options import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=".", help="repository root holding benchmarks/run_all.py")


def run_bench(args: argparse.Namespace) -> int:
    script = Path(args.root) / "benchmarks" / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: run `maskfx bench` in a maskfx checkout or pass --root")
    return subprocess.call([sys.executable, str(script)])


BENCH = Command("bench", "run the benchmarks of a maskfx checkout (speed and memory ratios)", _arguments, run_bench)
