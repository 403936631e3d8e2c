"""maskfx against Torch-Pruning's L2 magnitude pruning at equal MACs under deep budgets, 0.2 and
0.1 of resnet18's MACs (Torch-Pruning's iterative steps land at 0.154 and 0.094), on 24 seeds no
other suite runs (32 to 55).

At 0.5 and 0.35 the equal-macs suite found the two level: a converged resnet18 trained on 1,280
images loses under a point at 0.30 of its MACs to either, so a uniform width cut leaves a learned
allocation little to win. Deeper cuts cost more, and that is where the allocation should tell. A
side run before this suite, at 0.2 on seeds 0-13 (the budget suite's 8 starts and the equal-macs
suite's first 6, whose untouched models it reproduced), put maskfx +0.51 [-0.16, +1.17] points
ahead of L2 at 0.154 of the MACs (ahead on 9 seeds of 14; maskfx -1.93, L2 -2.44 against the
untouched model), its gates at 0.31-0.51 of the MACs when freeze made the rest of the cut. A
second side run on those 8 starts, the budget's multiplier started at 3 instead of 1, took the
gates to 0.14-0.20 and shipped +0.71 [+0.02, +1.41] points over the start at 1. This suite
measures both starts on fresh seeds, and one step deeper.

Its first recorded run (24 seeds, 79 minutes) measured both starts: the start at 1, then the
default, was level with L2 at both budgets, its gates at 0.47 of the MACs when freeze selected;
started at 3 they reached 0.18, and that arm led the start at 1 at both budgets and L2 at 0.154.
So the budget's default start is now 3 under a quarter of the MACs (``Budget.start_multiplier``),
and this suite measures that default beside the start at 1, given.

Same arms, recipe and sizes as the equal-macs suite (``benchmarks.equal_macs.compare``), plus
maskfx with ``Budget(initial_multiplier=1)``; about 3 minutes a seed on 2 cores (the recorded run:
72 minutes, the same numbers as the first, arms swapped). The results file and README have the
intervals.

    python -m benchmarks --only equal-macs-deep [--quick]
"""
from __future__ import annotations

from benchmarks.equal_macs import Comparison, compare

SUITE = "equal-macs-deep"
TITLE = "maskfx vs Torch-Pruning L2 at equal MACs under deep budgets, 24 fresh seeds (resnet18 on Fashion-MNIST)"
SEEDS = tuple(range(32, 56))  # the budget suite runs 0-7, the equal-macs suite 8-31
BUDGETS = (0.2, 0.1)
MULTIPLIERS = (1.0,)  # a second maskfx arm: Budget(initial_multiplier=1), the start before DEEP_CUT


def run(quick: bool) -> dict:
    """Every seed's arms, trained and measured; ``SuiteSkipped`` without the data."""
    return compare(Comparison(SUITE, TITLE, SEEDS, BUDGETS, MULTIPLIERS), quick)
