"""The report's PNG plots. Each reads numbers (histories, ``maskfx.structure`` sites), never text.

- training curves: loss and test accuracy per epoch, one line per run;
- Blockout: each layer's cluster probabilities, nodes x clusters (Blockout paper, Fig. 7);
- MaskConnect: per chain, which earlier outputs each block reads (MaskConnect paper, Fig. 4);
- GateConnect: per module, each branch's gates over the previous module's branches, and how
  many of those branches are still read, per depth (GateConnect paper, Figs. 3-4);
- channels: per channel space, its width before and what freeze keeps;
- accuracy against cost: each method's test accuracy against its MACs and its ONNX Runtime latency
  (fractions of the untouched model's), one line per method across budgets.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from maskfx.technique import LearnedSite


def _subplots(columns: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """A figure drawn straight to files: ``Figure`` without pyplot picks no display backend and
    changes no process-wide setting, so importing maskfx leaves the user's matplotlib alone."""
    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.subplots(1, columns, **kwargs)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


def training_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Loss and test accuracy against the epoch, for every run in ``histories``."""
    figure, (loss_axis, accuracy_axis) = _subplots(2, (10, 3.6))
    for label, history in histories.items():
        epochs = [r["epoch"] for r in history]
        loss_axis.plot(epochs, [r["loss"] for r in history], marker=".", label=label)
        accuracy_axis.plot(epochs, [r.get("test_accuracy", float("nan")) for r in history], marker=".", label=label)
    loss_axis.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    accuracy_axis.legend(fontsize=7)
    return _save(figure, path)


def blockout_clusters(sites: list[LearnedSite], path: Path) -> Path | None:
    """Per Blockout layer, the probability of every node (rows) being in every cluster
    (columns), nodes sorted by their most probable cluster; hatched: kept by freeze/prune."""
    sites = [s for s in sites if s.technique == "blockout"]
    if not sites:
        return None
    figure, axes = _subplots(len(sites), (2.6 * len(sites) + 1, 4), squeeze=False)
    for axis, site in zip(axes[0], sites):
        order = site.values.argmax(1).argsort(stable=True)
        image = axis.imshow(site.values[order].numpy(), aspect="auto", vmin=0, vmax=1, cmap="viridis",
                            interpolation="nearest")
        kept = int(site.keep.any(1).sum())
        axis.set(title=f"{site.location}\n{kept}/{site.values.shape[0]} nodes kept", xlabel="cluster", ylabel="node")
        axis.title.set_fontsize(8)
    figure.colorbar(image, ax=axes[0].tolist(), label="P(node in cluster)")
    figure.suptitle("Blockout cluster probabilities per layer")
    return _save(figure, path)


def _chains(sites: list[LearnedSite]) -> list[list[LearnedSite]]:
    """Blocks grouped into chains: a block with no more candidates than the one before starts one."""
    chains: list[list[LearnedSite]] = []
    for site in sites:
        if not chains or len(site.values) <= len(chains[-1][-1].values):
            chains.append([])
        chains[-1].append(site)
    return chains


def maskconnect_connectivity(sites: list[LearnedSite], path: Path) -> Path | None:
    """Per chain, block (row) by candidate input (column: the chain input, then the chain's
    blocks in order): the learned mask value, with the K inputs that freeze/prune keep starred.
    Columns go by candidate position, the order ``maskfx.structure`` gives the values in."""
    chains = _chains([s for s in sites if s.technique == "maskconnect"])
    if not chains:
        return None
    figure, axes = _subplots(len(chains), (3.6 * len(chains) + 1.5, 3.8), squeeze=False)
    for axis, chain in zip(axes[0], chains):
        width = max(len(site.values) for site in chain)
        grid = [site.values.tolist() + [float("nan")] * (width - len(site.values)) for site in chain]
        image = axis.imshow(grid, vmin=0, vmax=1, cmap="Blues", interpolation="nearest")
        for row, site in enumerate(chain):
            columns = site.keep.nonzero().flatten().tolist()
            axis.plot(columns, [row] * len(columns), "r*", markersize=9)
        axis.set_xticks(range(width), ["input"] + [f"block {k}" for k in range(1, width)], rotation=60, fontsize=7)
        axis.set_yticks(range(len(chain)), [s.location for s in chain], fontsize=7)
        axis.set(xlabel="reads the output of", ylabel="block")
    figure.colorbar(image, ax=axes[0].tolist(), label="mask (star: kept)")
    figure.suptitle("MaskConnect: learned block connectivity")
    return _save(figure, path)


def gateconnect_gates(sites: list[LearnedSite], path: Path) -> Path | None:
    """Per gated module, branch (row) by source branch (column) gates, kept ones marked; last
    panel: the previous module's branches still read, per depth."""
    sites = [s for s in sites if s.technique == "gateconnect"]
    if not sites:
        return None
    figure, axes = _subplots(len(sites) + 1, (2.8 * (len(sites) + 1) + 1, 3.4), squeeze=False)
    for axis, site in zip(axes[0], sites):
        axis.imshow(site.values.numpy(), vmin=0, vmax=1, cmap="Oranges", interpolation="nearest")
        rows, columns = site.keep.nonzero(as_tuple=True)
        axis.plot(columns.numpy(), rows.numpy(), "k.", markersize=5)
        axis.set(title=site.location, xlabel="source branch", ylabel="branch")
        axis.title.set_fontsize(8)
    depth_axis = axes[0][-1]
    active = [int(s.keep.any(0).sum()) for s in sites]
    depth_axis.bar(range(1, len(sites) + 1), active, color="tab:orange")
    depth_axis.axhline(sites[0].values.shape[1], color="gray", linestyle="--", label="all branches")
    depth_axis.set(xlabel="depth (gated module)", ylabel="branches read", title="active branches per depth")
    depth_axis.legend(fontsize=7)
    figure.suptitle("GateConnect: learned branch gates (dots: kept)")
    return _save(figure, path)


def channel_widths(sites: list[LearnedSite], path: Path) -> Path | None:
    """Per channel space (in graph order), its width and the channels kept: where a budget cut."""
    sites = [s for s in sites if s.technique == "channels"]
    if not sites:
        return None
    figure, axes = _subplots(1, (max(6.0, 0.45 * len(sites) + 2), 3.8), squeeze=False)
    axis = axes[0][0]
    positions = range(len(sites))
    axis.bar(positions, [len(s.values) for s in sites], color="lightgray", label="units")
    axis.bar(positions, [int(s.keep.sum()) for s in sites], color="tab:green", label="kept")
    axis.set_xticks(positions, [s.location.removeprefix("channels of ") for s in sites], rotation=70, fontsize=7)
    axis.set(ylabel="units (channels, or groups)", title="channel gates: width kept per channel space")
    axis.legend(fontsize=7)
    return _save(figure, path)


@dataclass(frozen=True)
class CostPoint:
    """One deployed model: its test accuracy (%, with an error bar, e.g. the std over seeds) and
    its costs as fractions of the untouched model's (``None``: not measured)."""

    accuracy: float
    error: float
    costs: dict[str, float | None]  # axis label -> fraction of the untouched model's


def accuracy_against_cost(methods: dict[str, list[CostPoint]], path: Path, title: str) -> Path:
    """One panel per cost (MACs, latency at each batch size): each method's accuracy against it, a
    line through its budgets, so who is ahead at equal cost reads off the plot."""
    axes_labels = list(dict.fromkeys(label for points in methods.values() for p in points for label in p.costs))
    figure, axes = _subplots(len(axes_labels), (4.2 * len(axes_labels), 3.6), squeeze=False, sharey=True)
    for axis, label in zip(axes[0], axes_labels):
        for method, points in methods.items():
            drawn = sorted((p.costs[label], p.accuracy, p.error) for p in points if p.costs.get(label) is not None)
            if drawn:
                x, y, error = zip(*drawn)
                axis.errorbar(x, y, yerr=error, marker="o", capsize=3, label=method)
        axis.set(xlabel=f"{label} / untouched", title=f"accuracy against {label}")
        axis.grid(alpha=0.3)
    axes[0][0].set(ylabel="test accuracy %")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(textwrap.fill(title, 40 * len(axes_labels)), fontsize=9)
    return _save(figure, path)
