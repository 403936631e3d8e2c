"""Arguments several commands share (model, data, techniques, training) and what they build."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, NoReturn

import maskfx
from maskfx.errors import UserError
from maskfx.nn.maskconnect import INITS, SAMPLINGS
from maskfx.train.data import DATA_HELP
from maskfx.train.models import DEFAULT_WEIGHTS, build_model, load_weights


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``maskfx train: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, how to declare its arguments, and what it runs."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    def add(self, commands: argparse._SubParsersAction) -> None:
        sub = commands.add_parser(self.name, help=self.help, description=self.help)
        self.arguments(sub)
        sub.set_defaults(run=self.run)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def rate(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="torchvision:<name> (e.g. torchvision:resnet18) or package.module:factory")
    parser.add_argument("--weights", default=None,
                        help=f"a local state_dict file (loaded with weights_only), or {DEFAULT_WEIGHTS} for "
                             "torchvision's pretrained weights (needs network access)")


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", help=DATA_HELP)
    parser.add_argument("--image-size", type=positive_int, default=32, help="images are resized to this square size")
    parser.add_argument("--limit", type=positive_int, default=None, help="train on a fixed random subset of this size")


def add_techniques(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("techniques (each with its config's defaults unless set)")
    group.add_argument("--jumpout", action="store_true", help="Jumpout after every ReLU and ReLU6")
    group.add_argument("--blockout", action="store_true", help="Blockout on the classifier head")
    group.add_argument("--maskconnect", action="store_true", help="MaskConnect on chains of residual blocks")
    group.add_argument("--gateconnect", action="store_true", help="GateConnect on chains of ResNeXt modules")
    group.add_argument("--clusters", type=positive_int, default=None, help="Blockout clusters k")
    group.add_argument("--fan-in", type=positive_int, default=None, help="MaskConnect/GateConnect inputs K")
    group.add_argument("--init", choices=INITS, default=None,
                       help="MaskConnect masks' start (default 'previous': the original chain; 'uniform': the paper's)")
    group.add_argument("--sampling", choices=SAMPLINGS, default=None,
                       help="how MaskConnect's training forwards pick K inputs (default 'top-k'; 'multinomial': the paper's)")


TECHNIQUES = ("jumpout", "blockout", "maskconnect", "gateconnect")
# Each technique option and the technique flags it configures: given without any of them, it is a mistake.
OPTION_TECHNIQUES = {"clusters": ("blockout",), "fan_in": ("maskconnect", "gateconnect"),
                     "init": ("maskconnect",), "sampling": ("maskconnect",)}


class FlagError(UserError):
    """A technique option given without the flag it configures, or technique flags beside a checkpoint
    (whose recipe fixes them): silently ignored, they would train something else than asked."""


def technique_flags(args: argparse.Namespace) -> list[str]:
    """The technique flags and options given on the command line."""
    names = [t for t in TECHNIQUES if getattr(args, t)] + [o for o in OPTION_TECHNIQUES if getattr(args, o) is not None]
    return [f"--{name.replace('_', '-')}" for name in names]


def technique_configs(args: argparse.Namespace) -> dict:
    """``maskfx.transform`` keyword arguments for the technique flags."""
    for option, techniques in OPTION_TECHNIQUES.items():
        if getattr(args, option) is not None and not any(getattr(args, t) for t in techniques):
            flags = " or ".join(f"--{t}" for t in techniques)
            raise FlagError(f"--{option.replace('_', '-')} configures {flags}, which is not given: "
                            f"add {flags} or drop --{option.replace('_', '-')}")
    configs: dict = {}
    if args.jumpout:
        configs["jumpout"] = maskfx.JumpoutConfig()
    if args.blockout:
        configs["blockout"] = maskfx.BlockoutConfig(**_given(clusters=args.clusters))
    if args.maskconnect:
        configs["maskconnect"] = maskfx.MaskConnectConfig(**_given(fan_in=args.fan_in, init=args.init,
                                                                   sampling=args.sampling))
    if args.gateconnect:
        configs["gateconnect"] = maskfx.GateConnectConfig(**_given(fan_in=args.fan_in))
    return configs


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def model_from(args: argparse.Namespace, num_classes: int):
    model = build_model(args.model, num_classes)
    if not args.weights:
        return model
    model, loaded = load_weights(model, args.model, args.weights, num_classes)
    print(f"weights: {loaded}")
    return model
