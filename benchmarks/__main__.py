"""``python -m benchmarks [--quick] [--only SUITE ...] [--out DIR] [--markdown PATH] [--render-only]``:
run the suites, write ``DIR/<suite>.json`` each, print the tables and render the markdown page
from every JSON file in ``DIR`` (and, for the default ``DIR``, README.md's marked figures:
``benchmarks/readme.py``)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import figures, harness, readme, render
from benchmarks.registry import SUITES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI-sized run (small models, few rounds)")
    parser.add_argument("--only", nargs="+", choices=list(SUITES), metavar="SUITE",
                        help=f"run these suites only: {', '.join(SUITES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for <suite>.json (default benchmarks/results)")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: re-render the page from --out's JSON (e.g. after copying in a GPU run's gpu.json)")
    parser.add_argument("--markdown", type=Path,
                        help="page to render from --out's JSON (default: BENCHMARKS.md at the repository root "
                             "for the default --out, else DIR/BENCHMARKS.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    command = "python -m benchmarks" + "".join(" " + shlex.quote(a) for a in argv)
    failed, started = [], datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    for name in [] if args.render_only else args.only or SUITES:
        print(f"=== {name}", flush=True)
        record = harness.run_suite(name, args.quick, command, started)
        path = harness.write(record, args.out)
        print("\n".join(render.section(record)) + f"(written to {path})\n", flush=True)
        if record["status"] == harness.FAILED:
            failed.append(name)
    committed = args.out.resolve() == RESULTS  # the repository's results: its page and README's figures
    markdown = args.markdown or (ROOT / "BENCHMARKS.md" if committed else args.out / "BENCHMARKS.md")
    for result in sorted(args.out.glob("*.json")):
        figures.draw(json.loads(result.read_text()), args.out)
    markdown.write_text(render.render(args.out, markdown.parent))
    if committed:
        readme.update()
    print(f"rendered {markdown} from {args.out}/*.json" + (" and README.md's figures" if committed else "")
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
