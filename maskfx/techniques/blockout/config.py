"""Blockout's config: the head it takes, its clusters, and how they are made discrete."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from maskfx.errors import UserError
from maskfx.techniques.blockout.layers import check_blockout_args


@dataclass(frozen=True)
class BlockoutConfig:
    """Blockout on the classifier head (the trailing Linear layers of the model).

    ``hidden`` adds ReLU hidden layers of those sizes before the classifier (the paper's Fig. 5);
    the classifier is then re-initialised, so only ``hidden=()`` keeps a pretrained function.
    ``keep_dropout`` keeps the head's Dropouts (removed by default: Blockout generalises them).
    ``prune_threshold`` turns probabilities into hard clusters for ``freeze`` and ``collapse("prune")``,
    where each node also keeps its ``min_clusters`` most probable clusters (0: a node in no cluster
    is removed, the paper's plain thresholding; 1, the default, never empties the head). A pruned
    layer uses per-cluster blocks (``BlockSparseLinear``) when they cost at most ``block_ratio``
    times the multiply-adds of the dense pruned layer and that layer has at least
    ``block_min_macs`` multiply-adds per sample; smaller layers export as one dense ``Linear``,
    which ONNX Runtime runs faster than the blocks' gathers and scatters (measured, k = 6 disjoint
    clusters, blocks / dense: 1.5-2.6x up to 262k MACs, 0.98x at 590k, 0.16-0.77x at 1M, batch
    1-64; ``python -m benchmarks.bench_blockout --prune-forms``).

    ``init_spread`` is the standard deviation of a seeded (``seed``) perturbation of the initial
    cluster logits around the paper's P = 0.5 (a deviation: from the exact 0.5 all clusters of a
    node get the same gradient and never separate); the weights are divided by the initial eval
    mask, so the eval output still equals the original head's. ``hard-fixed`` stays at 0.5.

    ``estimator`` is hard-learned's gradient to the probabilities: ``"paper"`` is eq. 9 (only
    clusters drawn on learn, and only to fall where a block needs one cluster in common: planted
    blocks are not recovered); ``"straight-through"`` (default, a deviation) passes dL/dC to every
    cluster (``maskfx.techniques.blockout.layers.BlockoutClusters``).

    ``True`` means the paper's k = 6 on the model's own head, which keeps a pretrained function,
    with the soft-learned variant, chosen by measurement (a deviation: the paper's best at full
    scale is hard-learned, +2.1 points on CIFAR-100). On the digits the sampled clusters cost
    accuracy at short budgets: from a trained resnet18 (3 + 2 epochs, seed 0) hard-learned ended
    at 95.3%, soft-learned at 97.8%, the untouched model trained as long at 97.1%; from scratch
    (``python -m benchmarks --only papers``) hard-learned ranged 37.8-85.4% over 3 seeds against
    soft-learned's 96.1%. ``variant="hard-learned"`` is the paper's. The paper's experiments
    instead add two new FC layers (Fig. 5(c): 512 nodes on CIFAR-100, 4096 on ImageNet):
    ``BlockoutConfig(hidden=(512, 512))``. The paper names
    no separate learning rate for the cluster logits: they train with the network's optimizer and
    rate (``mask_lr`` of ``param_groups`` defaults to that).
    """

    # Fields only ``freeze`` and ``collapse`` read: how a learned state is made discrete and shipped,
    # not what it is. A saved state loads under other values (to collapse it with another threshold).
    LOWERING_FIELDS: ClassVar[frozenset[str]] = frozenset({"prune_threshold", "min_clusters", "block_ratio",
                                                           "block_min_macs"})

    clusters: int = 6
    hidden: tuple[int, ...] = ()
    variant: str = "soft-learned"
    keep_dropout: bool = False
    prune_threshold: float = 0.5
    min_clusters: int = 1
    block_ratio: float = 1.0
    block_min_macs: int = 1_000_000
    init_spread: float = 0.1
    seed: int = 0
    estimator: str = "straight-through"

    def __post_init__(self) -> None:
        check_blockout_args(self.clusters, self.variant, self.estimator)
        if not (isinstance(self.init_spread, (int, float)) and 0.0 <= self.init_spread < math.inf):
            raise UserError(f"init_spread must be a finite number >= 0, got {self.init_spread!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool)):
            raise UserError(f"seed must be an int, got {self.seed!r}")
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise UserError(f"hidden sizes must be ints >= 1, got {self.hidden!r}")
        object.__setattr__(self, "hidden", hidden)
        if not (isinstance(self.prune_threshold, (int, float)) and 0.0 < self.prune_threshold < 1.0):
            raise UserError(f"prune_threshold must be in (0, 1), got {self.prune_threshold!r}")
        if not (isinstance(self.min_clusters, int) and 0 <= self.min_clusters <= self.clusters):
            raise UserError(f"min_clusters must be an int in [0, clusters], got {self.min_clusters!r}")
        if not (isinstance(self.block_ratio, (int, float)) and self.block_ratio >= 0.0):
            raise UserError(f"block_ratio must be a number >= 0, got {self.block_ratio!r}")
        if not (isinstance(self.block_min_macs, int) and self.block_min_macs >= 0):
            raise UserError(f"block_min_macs must be an int >= 0, got {self.block_min_macs!r}")
