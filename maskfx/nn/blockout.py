"""Blockout (Murdock et al., CVPR 2016): block-structured, learned cluster masks on FC weights.

Every node set of a head -- its input features, each hidden layer, its outputs -- has cluster
probabilities ``P_j = sigmoid(Phi_j)`` in ``[0, 1]^(d_j x k)``. A Linear layer between node sets
``j-1`` and ``j`` uses ``W_j = (1/k) W~_j (.) C_j C_{j-1}^T`` (eq. 4): a weight survives only where
its input and output nodes share a cluster, so the mask is block-structured up to a permutation.

``BlockoutClusters`` draws every ``C_j`` once per forward and ``BlockoutLinear`` takes the two it
needs as inputs, so adjacent layers share one draw by construction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("hard-learned", "hard-fixed", "soft-learned")


def check_blockout_args(clusters: int, variant: str) -> None:
    """Raise ``ValueError`` naming the bad argument (shared by the layers and the config)."""
    if not (isinstance(clusters, int) and not isinstance(clusters, bool) and clusters >= 1):
        raise ValueError(f"clusters must be an int >= 1, got {clusters!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


class BlockoutClusters(nn.Module):
    """Cluster assignments for a chain of node sets of sizes ``sizes``.

    Training forward: ``C_j ~ Bernoulli(P_j)`` (hard variants) with the gradient of eq. 9,
    ``dL/dP = dL/dC (.) C``; or ``C_j = P_j`` (soft-learned). Eval: ``C_j = P_j`` (eq. 5).
    ``hard-fixed`` keeps ``P = 0.5`` and learns nothing. Probabilities start at 0.5.

    ``hard()`` is the hard clustering: ``P > threshold``, plus each node's ``min_clusters`` most
    probable clusters (with ``min_clusters=0``, nodes in no cluster are pruned away; with 1, the
    default, a short training run whose ``P`` still sits near 0.5 cannot empty the head).
    ``freeze()`` replaces the probabilities by ``hard()`` for good, so the weights can be
    fine-tuned for the very structure that ``collapse("prune")`` keeps.
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], clusters: int = 6, variant: str = "hard-learned",
                 threshold: float = 0.5, min_clusters: int = 1) -> None:
        super().__init__()
        check_blockout_args(clusters, variant)
        self.clusters, self.variant, self.threshold = clusters, variant, float(threshold)
        self.min_clusters = min(int(min_clusters), clusters)
        self.register_buffer("frozen", torch.tensor(False))
        self._frozen = False  # host mirror of the buffer, so forward never syncs on it
        initial_logit = math.log(INITIAL_PROBABILITY / (1.0 - INITIAL_PROBABILITY))
        self.logits = nn.ParameterList(nn.Parameter(torch.full((d, clusters), initial_logit),
                                                    requires_grad=variant != "hard-fixed") for d in sizes)

    def structure_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.logits if p.requires_grad]

    def probabilities(self) -> list[torch.Tensor]:
        return self.hard() if self._frozen else [torch.sigmoid(phi) for phi in self.logits]

    def hard(self) -> list[torch.Tensor]:
        """Binary cluster assignments: ``P > threshold`` or among the node's ``min_clusters`` most likely."""
        assignments = []
        for phi in self.logits:
            p = torch.sigmoid(phi.detach())
            c = p > self.threshold
            if self.min_clusters:
                c = c.scatter(1, p.topk(self.min_clusters, dim=1).indices, True)
            assignments.append(c.to(phi.dtype))
        return assignments

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the clusters at ``hard()`` for good: no more sampling or structure learning."""
        self.frozen.fill_(True)
        self._frozen = True
        for phi in self.logits:
            phi.requires_grad_(False)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._frozen = bool(self.frozen)
        for phi in self.logits:
            phi.requires_grad_(not self._frozen and self.variant != "hard-fixed")

    def forward(self) -> tuple[torch.Tensor, ...]:
        probabilities = self.probabilities()
        if not self.training or self.variant == "soft-learned" or self._frozen:
            return tuple(probabilities)
        draws = []
        for p in probabilities:
            c = torch.bernoulli(p.detach())
            # Value c exactly; gradient dL/dC * C into P (eq. 9), then through the sigmoid.
            draws.append(c + c * (p - p.detach()) if p.requires_grad else c)
        return tuple(draws)

    def extra_repr(self) -> str:
        return f"sizes={[p.shape[0] for p in self.logits]}, clusters={self.clusters}, variant={self.variant}"


# Inverted scaling, as inverted dropout does: the paper's W~ is 4x ours. At the initial P = 0.5 the
# expected paper mask (1/k) P P^T is 1/4, so with the literal eq. 4 a head's stored weights would sit
# at 4x their effective value and take 1/4 of its gradient: SGD would move it 16x slower than an
# ordinary Linear. With the factor folded in, the stored weight is the effective one at
# initialisation and usual learning rates and weight decay apply. Same model class as eq. 4.
INITIAL_PROBABILITY = 0.5
MASK_SCALE = 1.0 / INITIAL_PROBABILITY ** 2


def cluster_mask(c_out: torch.Tensor, c_in: torch.Tensor, clusters: int) -> torch.Tensor:
    """``(1/k) C_out C_in^T`` (the share of clusters each output/input pair has in common),
    times ``MASK_SCALE``."""
    return (c_out @ c_in.t()) * (MASK_SCALE / clusters)


class BlockoutLinear(nn.Module):
    """A Linear layer whose weight is masked by the clusters of its input and output nodes.

    ``forward(x, c_in, c_out)`` takes the assignments from a ``BlockoutClusters``. The bias is
    not masked: the paper masks the weight matrix only, and an unmasked bias keeps a node with no
    cluster a constant that pruning can drop exactly (the next layer's mask zeroes its column).
    """

    def __init__(self, in_features: int, out_features: int, clusters: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.clusters = in_features, out_features, clusters
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reference = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        self.load_linear(reference)

    @torch.no_grad()
    def load_linear(self, linear: nn.Linear) -> "BlockoutLinear":
        """Take ``linear``'s weights; at ``P = 0.5`` the eval mask is exactly 1, so the eval output
        equals ``linear``'s."""
        self.weight.copy_(linear.weight)
        if self.bias is not None:
            self.bias.copy_(linear.bias)
        return self

    def masked_weight(self, c_in: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
        return self.weight * cluster_mask(c_out, c_in, self.clusters).to(self.weight.dtype)

    def forward(self, x: torch.Tensor, c_in: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(c_in, c_out), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, clusters={self.clusters}, " \
               f"bias={self.bias is not None}"


class BlockSparseLinear(nn.Module):
    """Inference form of a pruned Blockout layer: one small dense product per cluster block.

    ``y = b + sum_l scatter(out_l, x[:, in_l] @ W_l^T)``; exact for any hard clustering, and cheaper
    than the dense layer when the blocks cover a small part of the matrix.
    """

    def __init__(self, blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                 bias: torch.Tensor | None, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        for l, (in_index, out_index, weight) in enumerate(blocks):
            self.register_buffer(f"in_index{l}", in_index.long())
            self.register_buffer(f"out_index{l}", out_index.long())
            self.register_parameter(f"weight{l}", nn.Parameter(weight.detach().clone()))
        self.n_blocks = len(blocks)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.new_zeros(*x.shape[:-1], self.out_features)
        for l in range(self.n_blocks):
            part = F.linear(x.index_select(-1, getattr(self, f"in_index{l}")), getattr(self, f"weight{l}"))
            y = y.index_add(-1, getattr(self, f"out_index{l}"), part)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, blocks={self.n_blocks}"
