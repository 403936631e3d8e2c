"""maskfx in one page: all four techniques on a torchvision ResNeXt, trained briefly on the
offline digits data, frozen, fine-tuned, pruned, exported and checked in ONNX Runtime.

    python examples/quickstart.py [--epochs 2] [--out quickstart-out]
"""
import argparse
from pathlib import Path

import torch
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.train import Phase, accuracy, fit, load_data, maskconnect_recipe, predict
from maskfx.train.fit import evaluation_loader

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=2, help="joint epochs; fine-tuning takes as many again")
parser.add_argument("--out", default="quickstart-out")
args = parser.parse_args()
torch.manual_seed(0)
cpu = torch.device("cpu")
data = load_data("digits")
test_loader = evaluation_loader(data)
x = next(iter(test_loader))[0][:8]

# A small ResNeXt (C = 8 branches per module); any traceable nn.Module works the same way.
model = ResNet(Bottleneck, [1, 2, 1, 1], groups=8, width_per_group=4, num_classes=10)
net = maskfx.transform(
    model,
    jumpout=True,                                            # after every ReLU
    blockout=maskfx.BlockoutConfig(clusters=4),              # the classifier head
    gateconnect=maskfx.GateConnectConfig(fan_in=2),          # ResNeXt branches read 2 of 8
    example_inputs=(x,),
)
print(maskfx.summary(net))

# The paper's recipe, shortened: joint learning, freeze (top-K gates, hard clusters), fine-tune.
joint, frozen, *_ = maskconnect_recipe(lr=0.02, mask_lr=0.3, epochs=(args.epochs, args.epochs, 0, 0))
fit(net, data, [joint, frozen, Phase(args.epochs, lr=0.002)], device=cpu, evaluate=False)  # clips the masks too
logits, labels = predict(net, test_loader, cpu)
print(f"trained: test accuracy {accuracy(logits, labels):.4f}")

deploy = maskfx.collapse(net, mode="prune", example_inputs=(x,))  # exact after freezing; unread branches go
print(maskfx.summary(deploy))
pruned_logits, _ = predict(deploy, test_loader, cpu)
print(f"pruned: test accuracy {accuracy(pruned_logits, labels):.4f}, "
      f"max |pruned - trained| {(pruned_logits - logits).abs().max().item():.2e}")

path, report = maskfx.export_onnx(deploy, Path(args.out) / "resnext.onnx", example_inputs=(x,))
print(report)
