"""Compare training arms over seeds on a small training split, the way the papers' tables do.

An arm is one row of a table: a model (plain or ``maskfx.transform``-ed), a training schedule
through ``maskfx.train.fit``, and what is measured afterwards (test accuracy of the deployed
model, its parameters, optionally after ``collapse("prune")``). For one seed every arm sees the
same split, the same initial weights where the architectures match and the same batch order, so
differences between arms are paired and their spread over seeds is reported, not hidden.
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import fx, nn
from torch.utils.data import Subset

import maskfx
from maskfx.layers.kofn import KOfNMasks
from maskfx.report import count_parameters
from maskfx.train import Data, Phase, accuracy, fit, load_data, predict
from maskfx.train.data import digits_split
from maskfx.train.fit import evaluation_loader

BATCH = 32
DIGITS = 1797


def digits_data(train_images: int, test_images: int | None, seed: int, image_size: int = 8) -> Data:
    """A seeded split with ``train_images`` training images (the overfitting regime) and the rest,
    or the first ``test_images`` of it, as the test set. 8x8 is the digits' native resolution."""
    data = digits_split(image_size, test_fraction=1 - train_images / DIGITS, seed=seed)
    if test_images is not None and test_images < len(data.test):
        data.test = Subset(data.test, range(test_images))
    return data


@functools.lru_cache(maxsize=2)
def fashion_split(train_images: int, test_images: int | None, seed: int, image_size: int = 8,
                  spec: str = "fashion-mnist") -> Data:
    """``train_images`` of Fashion-MNIST's 60,000 training images drawn with ``seed`` (the
    overfitting regime, as ``digits_data``), and its 10,000 test images or the first
    ``test_images`` of them; ``DataError`` (how to get them) when the files are not here.
    ``spec``: the ``load_data`` name, ``fashion-mnist:PATH`` for the files elsewhere."""
    return first_test_images(training_subset(load_data(spec, image_size=image_size), train_images, seed), test_images)


def training_subset(data: Data, images: int, seed: int) -> Data:
    """``images`` training images drawn with ``seed`` (as ``load_data``'s ``limit``), the test set whole."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    return Data(Subset(data.train, order[:images].tolist()), data.test, data.num_classes, data.input_shape)


def first_test_images(data: Data, images: int | None) -> Data:
    """``data`` with the first ``images`` of its test images (``None``: all of them): a smoke run's
    test set, the same images on every call."""
    if images is not None:
        data.test = Subset(data.test, range(min(images, len(data.test))))
    return data


def example_batch(data: Data, size: int = 8) -> torch.Tensor:
    return torch.stack([data.test[i][0] for i in range(size)])


@dataclass(frozen=True)
class Run:
    """What one arm measured on one seed (accuracies in [0, 1])."""

    accuracy: float
    parameters: int
    pruned_accuracy: float | None = None
    pruned_parameters: int | None = None


@dataclass(frozen=True)
class Arm:
    """One table row. ``build(example, seed)`` makes the model after the global seed is set;
    ``phases`` is the schedule; ``paper`` the accuracy the paper reports for this row (None: not
    in the paper)."""

    name: str
    build: Callable[[torch.Tensor, int], nn.Module]
    phases: list[Phase]
    paper: float | None = None


def random_fixed_connectivity(net: fx.GraphModule, seed: int) -> fx.GraphModule:
    """Draw every K-of-N mask of ``net`` at random (seeded) and freeze it: the papers'
    Fixed-Random baseline, trained with its connectivity never changing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, KOfNMasks):
                module.mask.copy_(torch.rand(module.mask.shape, generator=generator))
                module.selected.copy_(module.top_k())  # the draw alone decides: no switch margin
    return maskfx.freeze(net)


def test_accuracy(model: nn.Module, data: Data, device: torch.device) -> float:
    return accuracy(*predict(model, evaluation_loader(data), device))


def measure(model: nn.Module, data: Data, device: torch.device, prune: str) -> Run:
    """Accuracy and parameters of what would be deployed.

    ``prune``: ``"no"`` measures the expected collapse (the eval function); ``"exact"`` measures
    only ``collapse("prune")``, for frozen discrete structure where it is the same function;
    ``"both"`` measures both (Blockout, where pruning thresholds probabilities).
    """
    if not isinstance(model, fx.GraphModule):  # an untouched model deploys as it is
        deployed = {"expected": model, "prune": model}
    else:
        modes = {"no": ("expected",), "exact": ("prune",), "both": ("expected", "prune")}[prune]
        deployed = {mode: maskfx.collapse(model, mode) for mode in modes}
    main = deployed.get("expected", deployed.get("prune"))
    run = Run(test_accuracy(main, data, device), count_parameters(main))
    if prune == "no":
        return run
    pruned = deployed["prune"]
    same = pruned is main
    return Run(run.accuracy, run.parameters, run.accuracy if same else test_accuracy(pruned, data, device),
               count_parameters(pruned))


def train_arm(arm: Arm, data: Data, seed: int, device: torch.device, prune: str) -> Run:
    torch.manual_seed(seed)
    model = arm.build(example_batch(data), seed)
    fit(model, data, arm.phases, device=device, seed=seed, batch_size=BATCH, evaluate=False)
    return measure(model.to(device), data, device, prune)


@dataclass
class Results:
    """Every arm's runs, seed by seed (index i is seed i of the run)."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def accuracies(self, arm: str) -> list[float]:
        return [100 * r.accuracy for r in self.runs[arm]]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(arms: list[Arm], data_for_seed: Callable[[int], Data], seeds: tuple[int, ...],
            device: torch.device, prune: str = "no") -> Results:
    """Train every arm on every seed (seed-major, so a cut-short run still has paired seeds)."""
    results = Results({arm.name: [] for arm in arms})
    for seed in seeds:
        data = data_for_seed(seed)
        for arm in arms:
            results.runs[arm.name].append(train_arm(arm, data, seed, device, prune))
    return results


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def accuracy_rows(arms: list[Arm], results: Results, prune: str) -> tuple[list[str], list[list]]:
    """Columns and rows: accuracy mean and std over seeds, each seed, parameters (after
    pruning), and the paper's number for the row."""
    columns = ["method", "test acc % (mean)", "std", "per seed"]
    if prune == "both":
        columns += ["parameters", "pruned acc % (mean)", "pruned parameters (mean)"]
    elif prune == "exact":
        columns += ["parameters after pruning (mean)"]
    columns += ["paper %"]
    rows = []
    for arm in arms:
        runs = results.runs[arm.name]
        mean, std = mean_std(results.accuracies(arm.name))
        row = [arm.name, _r(mean), _r(std), " ".join(f"{a:.1f}" for a in results.accuracies(arm.name))]
        if prune == "both":
            row += [runs[0].parameters, _r(mean_std([100 * r.pruned_accuracy for r in runs])[0]),
                    round(statistics.mean(r.pruned_parameters for r in runs))]
        elif prune == "exact":
            row += [round(statistics.mean(r.pruned_parameters for r in runs))]
        rows.append(row + [arm.paper])
    return columns, rows


@dataclass(frozen=True)
class Claim:
    """A paper's ordering ``better > worse`` between two rows, checked on the paired seeds."""

    better: str
    worse: str


def claim_note(claim: Claim, results: Results, paper: dict[str, float | None], verdict: bool = True) -> str:
    """The paper's gap next to ours (paired by seed), with a plain verdict (none for smoke runs)."""
    ours = [b - w for b, w in zip(results.accuracies(claim.better), results.accuracies(claim.worse))]
    mean, std = mean_std(ours)
    if not verdict:
        verdict = "no verdict (smoke budget)"
    elif mean > 0 and all(d > 0 for d in ours):
        verdict = "reproduced"
    elif mean > 0:
        verdict = "not clearly reproduced (the seeds disagree)"
    else:
        verdict = "NOT reproduced at this scale"
    gap = paper.get(claim.better), paper.get(claim.worse)
    paper_gap = f"paper {gap[0] - gap[1]:+.2f} pt" if None not in gap else "paper: ordering stated"
    return (f"{claim.better} > {claim.worse}: {paper_gap}; here {mean:+.2f} ± {std:.2f} pt over "
            f"{len(ours)} paired seed(s): {verdict}")
