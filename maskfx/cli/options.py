"""Arguments several commands share (model, data, techniques, training) and what they build."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, NoReturn

from maskfx import techniques
from maskfx.budget import levers
from maskfx.config import DEEP_CUT, DEEP_CUT_MULTIPLIER, DEFAULT_MULTIPLIER, MULTIPLIER_RANGE, Budget
from maskfx.errors import UserError
from maskfx.technique import Option, positive_int
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


def fraction(text: str) -> float:
    """A share of something (the original's MACs): a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def multiplier(text: str) -> float:
    """The budget penalty's starting multiplier: a number in ``MULTIPLIER_RANGE``."""
    value, (low, high) = float(text), MULTIPLIER_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be a number in [{low:g}, {high:g}], got {text}")
    return value


def add_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=fraction, default=None, metavar="FRACTION",
                        help="prune to this fraction of the original model's MACs (e.g. 0.5): the channel gates learn "
                             "under it and freeze meets it; turns on --channels")
    parser.add_argument("--budget-params", type=fraction, default=None, metavar="FRACTION",
                        help="prune to this fraction of the original model's parameters, alone or beside --budget "
                             "(both are met); turns on --channels")
    parser.add_argument("--budget-multiplier", type=multiplier, default=None, metavar="M",
                        help="the budget penalty's multiplier at the first structure step (default: "
                             f"{DEEP_CUT_MULTIPLIER:g} when a budget is under {DEEP_CUT:g}, "
                             f"else {DEFAULT_MULTIPLIER:g}); "
                             "a larger start makes the gates learn more of a deep cut before freeze selects the rest")


def budget_flags(args: argparse.Namespace) -> list[str]:
    """The budget flags given on the command line."""
    return [flag for flag, value in (("--budget", args.budget), ("--budget-params", args.budget_params),
                                     ("--budget-multiplier", args.budget_multiplier)) if value is not None]


def budgeted_configs(args: argparse.Namespace) -> tuple[dict, Budget | None]:
    """``transform``'s technique configs and budget from the flags: a budget turns on the channel
    gates, the technique that can meet one, when no flag did."""
    configs = technique_configs(args)
    if args.budget is None and args.budget_params is None:
        if args.budget_multiplier is not None:
            raise FlagError("--budget-multiplier sets how a budget learns: give --budget or --budget-params with it")
        return configs, None
    channels = levers()[0]
    configs.setdefault(channels.TECHNIQUE, channels.CONFIG())
    return configs, Budget(macs=args.budget, params=args.budget_params, initial_multiplier=args.budget_multiplier)


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="torchvision:<name> (e.g. torchvision:resnet18) or package.module:factory")
    parser.add_argument("--weights", default=None,
                        help=f"a local state_dict file (loaded with weights_only), or {DEFAULT_WEIGHTS} for "
                             "torchvision's pretrained weights (needs network access)")


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", help=DATA_HELP)
    parser.add_argument("--image-size", type=positive_int, default=32, help="images are resized to this square size")
    parser.add_argument("--limit", type=positive_int, default=None, help="train on a fixed random subset of this size")


def _user_order() -> tuple:
    """The techniques in the order users read them: as collapse meets them."""
    return tuple(reversed(techniques.PIPELINE))


def _options() -> dict[str, tuple[Option, tuple[str, ...]]]:
    """Each option, as the first technique declaring it words it, with every technique it configures."""
    options: dict[str, tuple[Option, tuple[str, ...]]] = {}
    for technique in _user_order():
        for option in technique.FLAGS.options:
            first, techniques = options.get(option.field, (option, ()))
            options[option.field] = first, (*techniques, technique.TECHNIQUE)
    return options


def _flag(name: str) -> str:
    """The command-line spelling of a technique or config field: ``fan_in`` -> ``--fan-in``."""
    return f"--{name.replace('_', '-')}"


def add_techniques(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("techniques (each with its config's defaults unless set)")
    for technique in _user_order():
        group.add_argument(_flag(technique.TECHNIQUE), action="store_true", help=technique.FLAGS.help)
    for option, _ in _options().values():
        group.add_argument(_flag(option.field), type=option.type, choices=option.choices,
                           default=None, help=option.help)


class FlagError(UserError):
    """A technique option given without the flag it configures, or technique flags beside a checkpoint
    (whose recipe fixes them): silently ignored, they would train something else than asked."""


def technique_flags(args: argparse.Namespace) -> list[str]:
    """The technique flags and options given on the command line."""
    names = [t.TECHNIQUE for t in _user_order() if getattr(args, t.TECHNIQUE)]
    names += [field for field in _options() if getattr(args, field) is not None]
    return [_flag(name) for name in names]


def technique_configs(args: argparse.Namespace) -> dict:
    """``maskfx.transform`` keyword arguments for the technique flags."""
    for field, (_, techniques) in _options().items():
        if getattr(args, field) is not None and not any(getattr(args, t) for t in techniques):
            flags = " or ".join(_flag(t) for t in techniques)
            option = _flag(field)
            raise FlagError(f"{option} configures {flags}, which is not given: add {flags} or drop {option}")
    return {t.TECHNIQUE: t.CONFIG(**{o.field: getattr(args, o.field) for o in t.FLAGS.options
                                     if getattr(args, o.field) is not None})
            for t in _user_order() if getattr(args, t.TECHNIQUE)}


def model_from(args: argparse.Namespace, num_classes: int):
    model = build_model(args.model, num_classes)
    if not args.weights:
        return model
    model, loaded = load_weights(model, args.model, args.weights, num_classes)
    print(f"weights: {loaded}")
    return model
