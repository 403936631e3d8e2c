"""``maskfx transform`` and ``maskfx train`` (also under ``torchrun --nproc_per_node=N -m maskfx train``)."""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace
from pathlib import Path

import maskfx
from maskfx.cli.options import (Command, FlagError, add_budget, add_data, add_model, add_techniques, budget_flags,
                                budgeted_configs, count, model_from, positive_int, rate, technique_flags)
from maskfx.errors import UserError
from maskfx.budget import penalty_state
from maskfx.train import (Checkpoint, Phase, Recipe, budget_structure_epochs, ddp, fit, learn_then_frozen,
                          load_checkpoint, load_data, resolve_device, save_checkpoint)
from maskfx.train.distill import DEFAULT_TEMPERATURE
from maskfx.train.phases import PRESETS, preset
from maskfx.train.recalibrate import DEFAULT_BATCHES


def _transform_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_data(parser)
    add_techniques(parser)
    add_budget(parser)
    parser.add_argument("--out", required=True, help="checkpoint file to write (recipe + state_dict)")


def _transformed(args: argparse.Namespace, num_classes: int, input_shape: tuple[int, ...]):
    """The transformed network, its recipe, and the untouched model it came from."""
    model = model_from(args, num_classes)
    configs, budget = budgeted_configs(args)
    recipe = Recipe(args.model, num_classes, input_shape)
    net = maskfx.transform(model, example_inputs=recipe.example_inputs(), budget=budget, **configs) if configs else model
    return net, Recipe.of(net, args.model, num_classes, input_shape), model


def run_transform(args: argparse.Namespace) -> int:
    data = load_data(args.data, args.image_size, limit=args.limit)
    net, recipe, _ = _transformed(args, data.num_classes, data.input_shape)
    if recipe.transform:
        print(maskfx.summary(net))
    path = save_checkpoint(args.out, Checkpoint(recipe, net.state_dict()))
    print(f"wrote {path}")
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="torchvision:<name> or module:fn; or use --checkpoint")
    parser.add_argument("--weights", default=None, help="a local state_dict file, or DEFAULT (torchvision download)")
    parser.add_argument("--checkpoint", default=None,
                        help="start from a maskfx checkpoint (from `maskfx transform` or an earlier `train`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the --checkpoint's run after its last finished epoch (same phases)")
    add_data(parser)
    add_techniques(parser)
    add_budget(parser)
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=None,
                        help=f"learn from the starting model's logits too (knowledge distillation, "
                             f"T = {DEFAULT_TEMPERATURE:g}; default: on when --weights gives a trained start)")
    schedule = parser.add_argument_group("schedule: learn structure, then freeze and fine-tune")
    schedule.add_argument("--epochs", type=count, default=3, help="epochs at --lr, the structure learning first")
    schedule.add_argument("--structure-epochs", type=count, default=None,
                          help="of --epochs, those in which the structure learns (then it is frozen and the weights "
                               "train on at --lr); default: all but the last under a budget (the weights then train "
                               "on the structure that ships before fine-tuning), else all")
    schedule.add_argument("--finetune-epochs", type=count, default=2, help="epochs after freeze (transformed nets)")
    schedule.add_argument("--lr", type=rate, default=0.05)
    schedule.add_argument("--mask-lr", type=rate, default=0.5, help="learning rate of the structure parameters")
    schedule.add_argument("--finetune-lr", type=rate, default=None, help="default: lr / 5")
    schedule.add_argument("--batch-size", type=positive_int, default=64, help="per process")
    schedule.add_argument("--preset", choices=sorted(PRESETS), default=None,
                          help="a paper's four-phase recipe (epochs, learning rates, batch size, momentum, weight "
                               "decay) instead of the options above")
    schedule.add_argument("--skip-nonfinite", action="store_true",
                          help="skip a batch whose loss is NaN or infinite instead of stopping (each epoch's record "
                               "counts them); training still stops once the weights themselves are not finite")
    parser.add_argument("--recalibrate", type=count, default=DEFAULT_BATCHES, metavar="BATCHES",
                        help="after training a transformed net, recompute its BatchNorm statistics over this many "
                             "training batches in eval mode (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt and history.json (rank 0 writes)")


def phases(args: argparse.Namespace, transformed: bool, budgeted: bool = False) -> list[Phase]:
    """A transformed net learns its structure with the weights (for ``--structure-epochs`` of
    ``--epochs``: by default all but the last under a budget, else all), is frozen, trains on at ``--lr`` and
    fine-tunes; a plain model just trains on. ``--preset`` gives a paper's phases instead."""
    if args.preset:
        return [p if transformed else replace(p, mask_lr=0.0, freeze_first=False) for p in preset(args.preset).phases]
    finetune_lr = args.finetune_lr if args.finetune_lr is not None else args.lr / 5
    if not transformed:
        return [Phase(args.epochs, args.lr), Phase(args.finetune_epochs, finetune_lr)]
    structure = args.structure_epochs if args.structure_epochs is not None else (
        budget_structure_epochs(args.epochs) if budgeted else args.epochs)
    return learn_then_frozen(args.epochs, args.lr, args.mask_lr, args.finetune_epochs, finetune_lr, structure)


def sgd_settings(args: argparse.Namespace) -> dict:
    """``fit``'s batch size, momentum and weight decay: the preset's, or ``--batch-size`` and ``fit``'s defaults."""
    if args.preset is None:
        return {"batch_size": args.batch_size}
    recipe = preset(args.preset)
    return {"batch_size": recipe.batch_size, "momentum": recipe.momentum, "weight_decay": recipe.weight_decay}


def _distil(args: argparse.Namespace) -> bool:
    """``--distill`` as given, else on for a trained start (``--weights``): the start is the teacher."""
    return args.distill if args.distill is not None else bool(args.weights)


def run_train(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.checkpoint is None):
        raise UserError("give a model (e.g. torchvision:resnet18) or --checkpoint FILE, not both")
    if args.resume and args.checkpoint is None:
        raise UserError("--resume needs --checkpoint FILE")
    given = technique_flags(args) + budget_flags(args) + ["--distill"] * bool(args.distill)
    if args.checkpoint and given:
        raise FlagError(f"{' '.join(given)}: a --checkpoint's recipe fixes its techniques (and the start to distil "
                        f"from); these flags go with a model (maskfx train MODEL ...)")
    if args.epochs + args.finetune_epochs == 0:
        raise UserError("nothing to train: --epochs and --finetune-epochs are both 0")
    if args.structure_epochs is not None and args.preset:
        raise UserError("--structure-epochs has no meaning with --preset, whose phases fix it")
    if args.structure_epochs is not None and args.structure_epochs > args.epochs:
        raise UserError(f"--structure-epochs {args.structure_epochs} counts among --epochs ({args.epochs})")
    device = resolve_device(args.device)
    job = ddp.setup(device)
    try:
        data = load_data(args.data, args.image_size, seed=args.seed, limit=args.limit)
        if args.checkpoint:
            saved = load_checkpoint(args.checkpoint)
            if (saved.recipe.num_classes, saved.recipe.input_shape) != (data.num_classes, data.input_shape):
                raise UserError(f"checkpoint {args.checkpoint!r} was made for {saved.recipe.num_classes} classes of "
                                 f"{saved.recipe.input_shape}, the data has {data.num_classes} of {data.input_shape}")
            net, recipe, teacher = saved.network(), saved.recipe, None
        else:
            saved, (net, recipe, start) = None, _transformed(args, data.num_classes, data.input_shape)
            teacher = copy.deepcopy(start).eval() if _distil(args) else None
        out = Path(args.out)

        def report(record: dict) -> None:
            print(f"epoch {record['epoch']} (phase {record['phase'] + 1}): loss {record['loss']:.4f}, "
                  f"test accuracy {record['test_accuracy']:.4f}, {record['seconds']:.1f} s"
                  + (f", {record['skipped']} batch(es) skipped" if record.get("skipped") else "")
                  + (f"; BatchNorm recalibrated (up to {args.recalibrate} training batches): test accuracy "
                     f"{record['recalibrated_test_accuracy']:.4f}" if "recalibrated_test_accuracy" in record else ""),
                  flush=True)

        if args.structure_epochs is not None and not recipe.transform:
            raise UserError("--structure-epochs: the model has no learned structure (no technique given)")
        # A checkpoint saved before plans were recorded learned its structure in every --epochs epoch.
        legacy = args.resume and saved is not None and "plan" not in saved.progress
        plan = phases(args, bool(recipe.transform), budgeted=penalty_state(net) is not None and not legacy)
        history = fit(net, data, plan, device=device, recipe=recipe, **sgd_settings(args), seed=args.seed,
                      checkpoint=out / "checkpoint.pt",
                      resume=saved if args.resume else None, job=job, on_epoch=report,
                      skip_nonfinite=args.skip_nonfinite, teacher=teacher,
                      recalibrate_batches=args.recalibrate if recipe.transform else 0)
        digest = ddp.check_replicas(net, job)
        ddp.on_main(job, lambda: (out / "history.json").write_text(json.dumps(history, indent=2) + "\n"))
        if job.main:
            print(f"{job.world} process(es) agree on the final state (sha256 {digest[:16]}); wrote {out / 'checkpoint.pt'}")
    finally:
        ddp.teardown(job)
    return 0


TRANSFORM = Command("transform", "rewrite a model with learnable structure and save it as a checkpoint",
                    _transform_arguments, run_transform)
TRAIN = Command("train", "train a model or checkpoint: learn structure, freeze, fine-tune (torchrun for DDP)",
                _train_arguments, run_train)
