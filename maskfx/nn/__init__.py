"""torch.nn-style maskfx layers; each works on its own, without torch.fx."""
from maskfx.nn.blockout import BlockoutClusters, BlockoutLinear, BlockSparseLinear
from maskfx.nn.gateconnect import BranchedBottleneck, BranchGates, DeployedModule, ResNeXtBlock
from maskfx.nn.jumpout import Jumpout
from maskfx.nn.maskconnect import KOfNMasks, MaskedConnection

# Layers whose eval forward reads learned structure (a top K, cluster probabilities) from trainable
# values: ``maskfx.collapse`` lowers them to plain layers, "expected" or "prune". Jumpout learns none.
LEARNED_STRUCTURE = (BlockoutLinear, BranchedBottleneck, KOfNMasks)  # BlockoutClusters serve BlockoutLinears

__all__ = ["LEARNED_STRUCTURE", "BlockSparseLinear", "BlockoutClusters", "BlockoutLinear", "BranchGates", "BranchedBottleneck", "DeployedModule",
           "Jumpout", "MaskedConnection", "ResNeXtBlock"]
