"""``maskfx`` command line: ``maskfx demo`` runs the whole lifecycle on offline data."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import maskfx
from maskfx.transform import COLLAPSE_MODES
from maskfx.train import accuracy, digits_loaders, param_groups, predict, resolve_device, train_epochs


def _load_model(name: str, weights: str | None) -> torch.nn.Module:
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    if weights:
        # weights_only: a checkpoint is data, never code.
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def _report(label: str, model: torch.nn.Module, loader, labels: torch.Tensor, reference: torch.Tensor | None = None):
    logits = predict(model, loader, torch.device("cpu"))[0]
    gap = f", max |difference| {(logits - reference).abs().max().item():.2e}" if reference is not None else ""
    print(f"      {label:<34} test accuracy {accuracy(logits, labels):.4f}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters{gap}")
    return logits


def demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    device, cpu = resolve_device(args.device), torch.device("cpu")
    train_loader, test_loader = digits_loaders(batch_size=args.batch_size, seed=args.seed)
    model = _load_model(args.model, args.weights)
    print(f"[1/6] transform {args.model} (digits, 32x32, 10 classes) on {device}")
    net = maskfx.transform(model, jumpout=True, blockout=maskfx.BlockoutConfig(clusters=args.clusters))
    summary = maskfx.summary(net)
    print(f"      jumpout sites: {summary.count('jumpout')}, blockout layers: {summary.count('blockout')}, "
          f"parameters: {summary.params_now:,}")

    print(f"[2/6] train {args.epochs} epochs (weights lr {args.lr}, cluster lr {args.mask_lr})")
    optimizer = torch.optim.SGD(param_groups(net, lr=args.lr, mask_lr=args.mask_lr, weight_decay=5e-4),
                                momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss = train_epochs(net, train_loader, optimizer, args.epochs, device, scheduler=scheduler)
    labels = torch.cat([y for _, y in test_loader])
    print(f"      last epoch loss {loss:.3f}")
    net = net.to(cpu)
    trained = _report("trained (eval)", net, test_loader, labels)
    _report("prune now, before freeze", maskfx.collapse(net, "prune"), test_loader, labels, trained)

    print(f"[3/6] freeze the structure, fine-tune {args.finetune_epochs} epochs")
    maskfx.freeze(net)
    optimizer = torch.optim.SGD(param_groups(net, lr=args.lr / 2, weight_decay=5e-4), momentum=0.9, nesterov=True)
    train_epochs(net, train_loader, optimizer, args.finetune_epochs, device, desc="fine-tune")
    net = net.to(cpu)
    tuned = _report("fine-tuned (eval)", net, test_loader, labels)

    print("[4/6] collapse")
    deployed = {}
    for mode in COLLAPSE_MODES:
        collapsed = maskfx.collapse(net, mode=mode)
        deployed[mode] = (collapsed, _report(mode, collapsed, test_loader, labels, tuned))
    for note in maskfx.summary(deployed["prune"][0]).notes:
        if "collapse" in note:
            print(f"      {note}")
    deploy, deploy_logits = deployed[args.mode]

    out = Path(args.out or tempfile.mkdtemp(prefix="maskfx-demo-"))
    print(f"[5/6] export the {args.mode} model to {out / 'model.onnx'}")
    example = next(iter(test_loader))[0][:8]
    path, report = maskfx.export_onnx(deploy, out / "model.onnx", example_inputs=(example,), device=args.ort_device)
    print(f"      {report}")

    print(f"[6/6] ONNX Runtime accuracy on the test set ({report.provider})")
    session = maskfx.export.open_session(path, device=args.ort_device)
    ort_logits = torch.cat([torch.from_numpy(session.run(images)[0]) for images, _ in test_loader])
    print(f"      test accuracy {accuracy(ort_logits, labels):.4f}, "
          f"max |ORT - PyTorch| = {(ort_logits - deploy_logits).abs().max().item():.2e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maskfx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="transform, train, collapse, export and verify a small model offline")
    run.add_argument("--model", default="resnet18", help="torchvision classification model (weights=None)")
    run.add_argument("--weights", default=None, help="local state_dict file to start from (10-class head)")
    run.add_argument("--epochs", type=int, default=5)
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--clusters", type=int, default=6, help="Blockout clusters k")
    run.add_argument("--mask-lr", type=float, default=1.0, help="learning rate of the structure parameters")
    run.add_argument("--lr", type=float, default=0.01)
    run.add_argument("--finetune-epochs", type=int, default=2, help="epochs after freezing the structure")
    run.add_argument("--mode", choices=COLLAPSE_MODES, default="prune", help="which collapse to export")
    run.add_argument("--device", default="auto", help="training device: auto, cpu or cuda")
    run.add_argument("--ort-device", default="auto", help="ONNX Runtime device: auto, cpu or cuda")
    run.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    run.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
