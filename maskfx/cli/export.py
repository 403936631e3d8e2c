"""``maskfx export`` (collapse, export to ONNX, verify in ONNX Runtime) and ``maskfx summary``."""
from __future__ import annotations

import argparse

import maskfx
from maskfx.cli.options import Command, positive_int
from maskfx.report import count_macs, count_parameters
from maskfx.train import load_checkpoint
from maskfx.transform import COLLAPSE_MODES


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a maskfx checkpoint (from `maskfx transform` or `maskfx train`)")
    parser.add_argument("--mode", choices=COLLAPSE_MODES, default="prune", help="how to collapse a transformed net")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--batch", type=positive_int, default=4, help="example batch for tracing and verification")
    parser.add_argument("--ort-device", default="auto", choices=("auto", "cpu", "cuda"), help="ONNX Runtime device")


def run_export(args: argparse.Namespace) -> int:
    saved = load_checkpoint(args.checkpoint)
    net = saved.network()
    deploy = maskfx.collapse(net, args.mode) if saved.recipe.transform and not saved.collapse else net
    example = saved.recipe.example_inputs(args.batch)[0].normal_()
    print(f"parameters {count_parameters(net):,} -> {count_parameters(deploy):,}; "
          f"MACs per input {count_macs(deploy, example):,}")
    _, report = maskfx.export_onnx(deploy, args.out, example_inputs=(example,), device=args.ort_device)
    print(report)
    return 0


def _summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a maskfx checkpoint")


def run_summary(args: argparse.Namespace) -> int:
    saved = load_checkpoint(args.checkpoint)
    net = saved.network()
    print(f"{saved.recipe.model}: {saved.recipe.num_classes} classes, input {saved.recipe.input_shape}, "
          f"progress {saved.progress or 'untrained'}")
    if not saved.recipe.transform:
        print(f"untransformed model, {count_parameters(net):,} parameters")
        return 0
    print(maskfx.summary(net))
    if not saved.collapse:
        for site in maskfx.structure(net):
            kept = int(site.keep.any(-1).sum()) if site.technique == "blockout" else int(site.keep.sum())
            print(f"  {site.technique:<12} {site.location:<32} values {tuple(site.values.shape)}, "
                  f"{kept} kept{', frozen' if site.frozen else ''}")
    return 0


EXPORT = Command("export", "collapse a checkpoint (expected or prune), export ONNX and verify it in ONNX Runtime",
                 _export_arguments, run_export)
SUMMARY = Command("summary", "what a checkpoint's network is: rewritten sites and learned structure",
                  _summary_arguments, run_summary)
