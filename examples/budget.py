"""Ship half the MACs: a trained resnet18 pruned to a MACs budget by learned channel gates,
distilled from itself, compared with the same model trained as long, exported and checked in
ONNX Runtime. Offline digits data; the numbers of a 2-epoch run say the pipeline works, not what
a longer one reaches (``python -m benchmarks --only budget`` measures that).

    python examples/budget.py [--budget 0.5] [--epochs 2] [--out budget-out]
"""
import argparse
import copy
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

import maskfx
from maskfx.report import count_macs
from maskfx.train import Phase, accuracy, budget_structure_epochs, fit, learn_then_frozen, load_data, predict
from maskfx.train.fit import evaluation_loader

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--budget", type=float, default=0.5, help="fraction of the original's MACs to keep")
parser.add_argument("--epochs", type=int, default=2, help="epochs per phase")
parser.add_argument("--out", default="budget-out")
args = parser.parse_args()
torch.manual_seed(0)
cpu = torch.device("cpu")
data = load_data("digits")
test = evaluation_loader(data)
x = next(iter(test))[0][:8]

# The start: a trained model (here trained briefly; load your own weights instead).
start = torchvision.models.resnet18(weights=None, num_classes=data.num_classes)
fit(start, data, [Phase(args.epochs, lr=0.05)], device=cpu)

# Learn which channels to keep under the budget in all but the last epoch, distilling from the start;
# freeze meets the budget, then the weights train on the structure that ships.
net = maskfx.transform(start, channels=True, budget=maskfx.Budget(macs=args.budget), example_inputs=(x,))
phases = learn_then_frozen(args.epochs, 0.05, 0.5, args.epochs, 0.01, budget_structure_epochs(args.epochs))
fit(net, data, phases, device=cpu, teacher=copy.deepcopy(start).eval())
deploy = maskfx.collapse(net, mode="prune", example_inputs=(x,))
maskfx.recalibrate(deploy, DataLoader(data.train, batch_size=64), batches=20)  # BatchNorm of the new widths
print(maskfx.summary(deploy).collapse)

# The comparison a user judges by: the untouched model trained as long.
baseline = copy.deepcopy(start)
fit(baseline, data, [Phase(args.epochs, lr=0.05), Phase(args.epochs, lr=0.01)], device=cpu)
for name, model in (("untouched, trained as long", baseline), ("pruned to the budget", deploy)):
    print(f"{name}: test accuracy {accuracy(*predict(model, test, cpu)):.4f}, "
          f"MACs {count_macs(model, x):,}")

path, report = maskfx.export_onnx(deploy, Path(args.out) / "pruned.onnx", example_inputs=(x,))
print(report)
