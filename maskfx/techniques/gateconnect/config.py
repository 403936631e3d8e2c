"""GateConnect's name (the key of its config, sites and records) and its config: K, the branches each
branch reads."""
from __future__ import annotations

from dataclasses import dataclass

from maskfx.layers.kofn import check_kofn_args

TECHNIQUE = "gateconnect"


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
        check_kofn_args(self.fan_in, "uniform")
