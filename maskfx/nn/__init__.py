"""torch.nn-style maskfx layers; each works on its own, without torch.fx."""
from maskfx.nn.blockout import BlockoutClusters, BlockoutLinear, BlockSparseLinear
from maskfx.nn.gateconnect import BranchedBottleneck, BranchGates, DeployedModule, ResNeXtBlock
from maskfx.nn.jumpout import Jumpout
from maskfx.nn.maskconnect import MaskedConnection

__all__ = ["BlockSparseLinear", "BlockoutClusters", "BlockoutLinear", "BranchGates", "BranchedBottleneck", "DeployedModule",
           "Jumpout", "MaskedConnection", "ResNeXtBlock"]
