"""torch.nn-style maskfx layers; each works on its own, without torch.fx. Each technique keeps its
layers in its folder (``maskfx.techniques.<name>.layers``); this module gathers them."""
from maskfx.layers.kofn import KOfNMasks
from maskfx.techniques.blockout.layers import BlockoutClusters, BlockoutLinear, BlockSparseLinear
from maskfx.techniques.channels.layers import ChannelGate
from maskfx.techniques.gateconnect.layers import (BranchedBottleneck, BranchGates, DeployedBranches, DeployedEnd,
                                                  DeployedModule, ResNeXtBlock)
from maskfx.techniques.jumpout.layers import Jumpout
from maskfx.techniques.maskconnect.layers import MaskedConnection

__all__ = ["BlockSparseLinear", "BlockoutClusters", "BlockoutLinear", "BranchGates", "BranchedBottleneck", "ChannelGate",
           "DeployedBranches", "DeployedEnd", "DeployedModule", "Jumpout", "KOfNMasks", "MaskedConnection", "ResNeXtBlock"]
