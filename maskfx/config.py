"""Technique configs. Each validates itself on construction, so a bad value raises
``ValueError`` naming the field before ``transform`` touches anything."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from maskfx.errors import UserError
from maskfx.nn.blockout import check_blockout_args
from maskfx.nn.jumpout import check_jumpout_args
from maskfx.nn.maskconnect import check_maskconnect_args


def _check_patterns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise UserError(f"{name} must be a glob pattern or a list or tuple of them (str), got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class JumpoutConfig:
    """Where and how Jumpout goes.

    ``placement="relu"`` puts a Jumpout after every rectifier call site, ReLU or ReLU6 (a Dropout
    right after one is replaced, unless ``replace_dropout=False``; other activations, SiLU, GELU
    and the like, are listed as rejected); ``"dropout"`` only replaces the Dropouts the model
    already has right after a rectifier, as in the paper's experiments, and leaves every other
    Dropout as it is (Jumpout's rate is normalised by the share of active rectifier units, which
    means nothing for an input that can be negative; a note names each one kept).

    ``include``/``exclude`` are ``fnmatch`` globs on a site's qualified name: the ReLU module's
    path (``"layer1.0.relu"``) or, for functional ReLUs, the enclosing module's path plus the
    graph node name (``"features.denseblock1.relu_3"``). Empty ``include`` means every site.

    ``sample_rate``, ``normalize_rate`` and ``damped_rescale`` switch Jumpout's modifications
    I, II and III (``maskfx.nn.jumpout``); off, each behaves as plain dropout does there.
    """

    PLACEMENTS: ClassVar[tuple[str, ...]] = ("relu", "dropout")

    sigma: float = 0.02  # measured, see Jumpout
    p_min: float = 0.01
    p_max: float = 0.6
    max_rate: float = 0.9
    per_sample: bool = False
    sample_rate: bool = True
    normalize_rate: bool = True
    damped_rescale: bool = True
    placement: str = "relu"
    replace_dropout: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_jumpout_args(self.sigma, self.p_min, self.p_max, self.max_rate, per_sample=self.per_sample,
                           sample_rate=self.sample_rate, normalize_rate=self.normalize_rate,
                           damped_rescale=self.damped_rescale, replace_dropout=self.replace_dropout)
        if self.placement not in self.PLACEMENTS:
            raise UserError(f"placement must be one of {self.PLACEMENTS}, got {self.placement!r}")
        if self.placement == "dropout" and not self.replace_dropout:
            raise UserError("replace_dropout=False contradicts placement='dropout' (which only replaces Dropouts)")
        object.__setattr__(self, "include", _check_patterns("include", self.include))
        object.__setattr__(self, "exclude", _check_patterns("exclude", self.exclude))

    def layer_kwargs(self) -> dict[str, Any]:
        return dict(sigma=self.sigma, p_min=self.p_min, p_max=self.p_max, max_rate=self.max_rate,
                    per_sample=self.per_sample, sample_rate=self.sample_rate,
                    normalize_rate=self.normalize_rate, damped_rescale=self.damped_rescale)


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
    cluster (``maskfx.nn.blockout.BlockoutClusters``).

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


@dataclass(frozen=True)
class MaskConnectConfig:
    """Learned K-of-N connectivity between the blocks of residual chains (MaskConnect).

    ``fan_in`` is K, each block's number of active inputs. The defaults are for the product's use,
    a trained network: ``init="previous"`` starts each block from the original chain (at K = 1 the
    network is the original one, in train and eval mode), and ``sampling="top-k"`` trains on the
    selected inputs (BinaryConnect's deterministic binarisation; a candidate takes a selected
    one's place once its mask exceeds that one's by ``SWITCH_MARGIN``), so a block is bypassed
    (and ``collapse("prune")`` removes it) only where the masks learn that another input serves
    its reader better. They are not the paper's set-up, which learns from scratch with
    ``init="uniform"``, ``sampling="multinomial"`` (K draws from the normalised masks) and K = 10
    on chains of 16-18 blocks: the presets of ``maskfx.train.preset``
    (``"maskconnect-resnet-imagenet"``: resnet50, K = 10).

    Measured (``python -m benchmarks.bench_accuracy``, digits, resnet18, 3 seeds, against the
    untouched model trained as long): from a trained model (3 epochs learning, 2 fine-tuning) the
    defaults give +0.0 points: no block's bypass paid, so the trained chain is kept; the paper's
    sampling -7.3; top-k without the margin -1.6 (the wiring flipped back and forth). From scratch
    (7 + 2 epochs), ``MaskConnectConfig(4, "uniform", "multinomial")`` costs 8.0 points. ResNeXt
    modules that GateConnect takes are left to it.
    """

    fan_in: int = 1
    init: str = "previous"
    sampling: str = "top-k"

    def __post_init__(self) -> None:
        check_maskconnect_args(self.fan_in, self.init, self.sampling)


@dataclass(frozen=True)
class GateConnectConfig:
    """Learned branch connectivity in chains of ResNeXt modules (GateConnect).

    ``fan_in`` is K: each branch reads the mean of K of the previous module's C branch outputs
    (the paper's best accuracy is at K = 4; K = 1 prunes most). Gates start uniform, so the top K
    of an untrained net are the last K branches; with K = C the network is the original one. The
    paper trains gates at a learning rate of 0.2 with plain gradient steps
    (``maskfx.param_groups(net, lr, mask_lr=0.2)``), 4 phases of 30 epochs on ImageNet at K = C/2:
    ``maskfx.train.preset("gateconnect")`` (CIFAR, K = 4 of 8: ``"gateconnect-cifar"``).
    """

    fan_in: int = 4

    def __post_init__(self) -> None:
        check_maskconnect_args(self.fan_in, "uniform")


Config = TypeVar("Config")


def resolve(argument: str, value: Any, config_type: type[Config]) -> Config | None:
    """Map a technique argument (``None``/``False``, ``True``, or a config) to a config or ``None``."""
    if value is None or value is False:
        return None
    if value is True:
        return config_type()
    if isinstance(value, config_type):
        return value
    raise UserError(f"{argument} must be None, False, True or a {config_type.__name__}, got {value!r}")
