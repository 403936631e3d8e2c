"""``maskfx``: transform, train, export, inspect and benchmark models, or run the whole demo.

Every command has ``--help``. Bad input (a missing file, an unknown model, a bad value, a
corrupt checkpoint, an unreadable data folder) ends the command with one error line and a
non-zero exit status, never a traceback; a traceback means a bug in maskfx.
"""
from __future__ import annotations

import sys

from maskfx.cli import bench, demo, export, train
from maskfx.cli.options import OneLineParser
from maskfx.errors import UserError, first_line
from maskfx.export import ExportVerificationError, ProviderError
from maskfx.tracing import TraceError
from maskfx.train import NonFiniteLossError
from maskfx.train.ddp import ReplicaMismatchError
from maskfx.train.memory import reuse_freed_memory

COMMANDS = (train.TRANSFORM, train.TRAIN, export.EXPORT, export.SUMMARY, bench.BENCH, demo.DEMO)
# Documented user errors print one line; anything else is a bug in maskfx and keeps its traceback.
USER_ERRORS = (UserError, OSError, TraceError, ExportVerificationError, ProviderError, ReplicaMismatchError,
               NonFiniteLossError)


def parser() -> OneLineParser:
    top = OneLineParser(prog="maskfx", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for command in COMMANDS:
        command.add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as the maskfx program, so the process is ours to tune
        reuse_freed_memory()  # wide training tensors would page-fault afresh every step
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.invocation = " ".join(["maskfx", *argv])  # what the report says was run
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"maskfx {args.command}: error: {first_line(error)}", file=sys.stderr)
        return 1
