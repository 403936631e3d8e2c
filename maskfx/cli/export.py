"""``maskfx export`` (collapse, export to ONNX, verify in ONNX Runtime) and ``maskfx summary``."""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

import maskfx
from maskfx.cli.options import Command, positive_int
from maskfx.report import count_macs, count_parameters
from maskfx.collapse_report import Cost
from maskfx.train import Checkpoint, load_checkpoint
from maskfx.transform import COLLAPSE_MODES

SUMMARY_BATCH = 4  # random inputs that `summary` measures a collapse on


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a maskfx checkpoint (from `maskfx transform` or `maskfx train`)")
    parser.add_argument("--mode", choices=COLLAPSE_MODES, default="prune", help="how to collapse a transformed net")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--batch", type=positive_int, default=4, help="example batch for tracing and verification")
    parser.add_argument("--ort-device", default="auto", choices=("auto", "cpu", "cuda"), help="ONNX Runtime device")


def _deployed(saved: Checkpoint, mode: str | None, example: torch.Tensor) -> torch.nn.Module:
    """The checkpoint's network, collapsed (a collapsed checkpoint in its own mode, else in
    ``mode``; ``None``: as saved) with its ``CollapseReport`` measured on ``example``."""
    mode = saved.collapse or mode
    if not saved.recipe.transform or mode is None:
        return saved.network()
    return maskfx.collapse(replace(saved, collapse=None).network(), mode, example_inputs=(example,))


def _random_inputs(saved: Checkpoint, batch: int) -> torch.Tensor:
    return saved.recipe.example_inputs(batch)[0].normal_()


def run_export(args: argparse.Namespace) -> int:
    saved = load_checkpoint(args.checkpoint)
    example = _random_inputs(saved, args.batch)
    deploy = _deployed(saved, args.mode, example)
    if saved.recipe.transform:
        print(maskfx.summary(deploy).collapse)
    else:
        print(f"untransformed model: {Cost(count_parameters(deploy), count_macs(deploy, example))}")
    _, report = maskfx.export_onnx(deploy, args.out, example_inputs=(example,), device=args.ort_device)
    print(report)
    return 0


def _summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a maskfx checkpoint")
    parser.add_argument("--collapse", choices=COLLAPSE_MODES, default=None,
                        help="also collapse the network and show what that does (parameters, MACs, exactness)")


def run_summary(args: argparse.Namespace) -> int:
    saved = load_checkpoint(args.checkpoint)
    print(f"{saved.recipe.model}: {saved.recipe.num_classes} classes, input {saved.recipe.input_shape}, "
          f"progress {saved.progress or 'untrained'}")
    example = _random_inputs(saved, SUMMARY_BATCH)
    net = _deployed(saved, None, example)  # a collapsed checkpoint's report is measured on random inputs
    if not saved.recipe.transform:
        print(f"untransformed model, {count_parameters(net):,} parameters")
        return 0
    print(maskfx.summary(net))
    if not saved.collapse:
        for site in maskfx.structure(net):
            kept = int(site.keep.any(-1).sum()) if site.technique == "blockout" else int(site.keep.sum())
            print(f"  {site.technique:<12} {site.location:<32} values {tuple(site.values.shape)}, "
                  f"{kept} kept{', frozen' if site.frozen else ''}")
        if args.collapse:
            print(maskfx.summary(maskfx.collapse(net, args.collapse, example_inputs=(example,))).collapse)
    return 0


EXPORT = Command("export", "collapse a checkpoint (expected or prune), export ONNX and verify it in ONNX Runtime",
                 _export_arguments, run_export)
SUMMARY = Command("summary", "what a checkpoint's network is: rewritten sites and learned structure",
                  _summary_arguments, run_summary)
