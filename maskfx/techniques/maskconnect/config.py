"""MaskConnect's config: K and how the masks start and sample."""
from __future__ import annotations

from dataclasses import dataclass

from maskfx.layers.kofn import check_kofn_args


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
        check_kofn_args(self.fan_in, self.init, self.sampling)
