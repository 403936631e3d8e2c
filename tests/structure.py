"""Set learned structure by hand, for tests that need a known structure."""
import torch
import torch.nn.functional as F

from maskfx.nn import BlockoutClusters


def random_logits(clusters: BlockoutClusters, scale: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for phi in clusters.logits:
            phi.copy_(torch.randn(phi.shape, generator=g) * scale)


def hard_block_logits(clusters: BlockoutClusters, magnitude: float, seed: int = 0) -> None:
    """Each node in at most one cluster (some in none): a block structure after permutation."""
    g = torch.Generator().manual_seed(seed)
    k = clusters.clusters
    with torch.no_grad():
        for j, phi in enumerate(clusters.logits):
            member = torch.randint(0, k + 1, (phi.shape[0],), generator=g)  # k = no cluster
            if j == len(clusters.logits) - 1:
                member = torch.randint(0, k, (phi.shape[0],), generator=g)
            phi.copy_(torch.where(F.one_hot(member, k + 1)[:, :k].bool(), magnitude, -magnitude))
