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
from torch.autograd.function import once_differentiable

from maskfx.errors import UserError
from maskfx.layers.autocast import BACKWARD_AS_FORWARD, FP32_UNDER_AUTOCAST

VARIANTS = ("hard-learned", "hard-fixed", "soft-learned")
ESTIMATORS = ("straight-through", "paper")


def check_blockout_args(clusters: int, variant: str, estimator: str = "straight-through") -> None:
    """Raise ``ValueError`` naming the bad argument (shared by the layers and the config)."""
    if not (isinstance(clusters, int) and not isinstance(clusters, bool) and clusters >= 1):
        raise UserError(f"clusters must be an int >= 1, got {clusters!r}")
    if variant not in VARIANTS:
        raise UserError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if estimator not in ESTIMATORS:
        raise UserError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


class BlockoutClusters(nn.Module):
    """Cluster assignments for a chain of node sets of sizes ``sizes``.

    Training forward: ``C_j ~ Bernoulli(P_j)`` (hard variants); or ``C_j = P_j`` (soft-learned).
    Eval: ``C_j = P_j`` (eq. 5). ``hard-fixed`` keeps ``P = 0.5`` and learns nothing.

    Hard-learned gradients: ``estimator="paper"`` is eq. 9, ``dL/dP = dL/dC (.) C``: only clusters
    drawn on get a gradient, the derivative of the loss at ``C = 1``. A connection that is drawn is
    never weaker than one cluster in common, so where the right answer is "connected once" that
    derivative is zero or says "weaker", and no probability can learn to rise (on the planted
    block task 92% of the cluster gradients push down; agreement stays at 0.6). The default,
    ``"straight-through"``, is ``dL/dP = dL/dC`` for every draw (a deviation): a cluster drawn
    off also learns what turning it on would do, so the missing in-block connections pull up.

    Learned probabilities start at 0.5 plus a small seeded perturbation (``init_spread``, the
    standard deviation of the logits; a deviation from the paper). At the paper's exact 0.5 every
    cluster of a node receives the same gradient, so soft-learned clusters can never become
    different and hard-learned ones only random-walk; the perturbation lets the instability of the
    symmetric start grow into blocks. ``BlockoutLinear.load_linear`` divides by the initial
    eval mask, so the eval output still equals the pretrained layer's.

    ``hard()`` is the hard clustering: ``P > threshold``, plus each node's ``min_clusters`` most
    probable clusters (with ``min_clusters=0``, nodes in no cluster are pruned away; with 1, the
    default, a short training run whose ``P`` still sits near 0.5 cannot empty the head).
    ``freeze()`` replaces the probabilities by ``hard()`` for good, so the weights can be
    fine-tuned for the very structure that ``collapse("prune")`` keeps.
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], clusters: int = 6, variant: str = "hard-learned",
                 threshold: float = 0.5, min_clusters: int = 1, init_spread: float = 0.1, seed: int = 0,
                 estimator: str = "straight-through") -> None:
        super().__init__()
        check_blockout_args(clusters, variant, estimator)
        self.clusters, self.variant, self.threshold = clusters, variant, float(threshold)
        self.estimator = estimator
        self.min_clusters = min(int(min_clusters), clusters)
        self.register_buffer("frozen", torch.tensor(False))
        self._frozen = False  # host mirror of the buffer, so forward never syncs on it
        learned = variant != "hard-fixed"
        generator = torch.Generator().manual_seed(seed)
        initial_logit = math.log(INITIAL_PROBABILITY / (1.0 - INITIAL_PROBABILITY))
        self.logits = nn.ParameterList(
            nn.Parameter(initial_logit + (init_spread if learned else 0.0) * torch.randn(d, clusters, generator=generator),
                         requires_grad=learned) for d in sizes)

    @property
    def is_frozen(self) -> bool:
        return self._frozen

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
            if p.requires_grad:  # value c exactly; gradient dL/dC (* C for eq. 9) into P, then through the sigmoid
                gate = c if self.estimator == "paper" else 1.0
                c = c + gate * (p - p.detach())
            draws.append(c)
        return tuple(draws)

    def extra_repr(self) -> str:
        return f"sizes={[p.shape[0] for p in self.logits]}, clusters={self.clusters}, variant={self.variant}, " \
               f"estimator={self.estimator}"


# Inverted scaling, as inverted dropout does: the paper's W~ is 4x ours. At the initial P = 0.5 the
# expected paper mask (1/k) P P^T is 1/4, so with the literal eq. 4 a head's stored weights would sit
# at 4x their effective value and take 1/4 of its gradient: SGD would move it 16x slower than an
# ordinary Linear. With the factor folded in, the stored weight is the effective one at
# initialisation and usual learning rates and weight decay apply. Same model class as eq. 4.
INITIAL_PROBABILITY = 0.5
MASK_SCALE = 1.0 / INITIAL_PROBABILITY ** 2


def cluster_mask(c_out: torch.Tensor, c_in: torch.Tensor, clusters: int) -> torch.Tensor:
    """``(1/k) C_out C_in^T`` (the share of clusters each output/input pair has in common),
    times ``MASK_SCALE``. The straightforward formula: the kernels below compute the same without it."""
    return (c_out @ c_in.t()) * (MASK_SCALE / clusters)


def assignment_groups(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(distinct, index)`` with ``c == distinct[index]`` for hard assignments ``c``, or None where
    that saves nothing: soft probabilities, or more than a quarter of the rows distinct.

    A row is coded as an integer (bit j: cluster j), so the distinct rows come from a 1-D unique.
    ``torch.unique(c, dim=0)`` compares float rows pairwise on CPU: 0.1 s for 25088 x 6 (measured),
    and it ran on soft probabilities too, only to find every row distinct.
    """
    clusters = c.shape[1]
    if clusters > 62 or not bool(((c == 0) | (c == 1)).all()):  # 62 bits: the codes fit an int64
        return None
    bits = torch.arange(clusters, device=c.device)
    codes, index = torch.unique((c.long() << bits).sum(1), return_inverse=True)
    if 4 * codes.shape[0] > c.shape[0]:
        return None
    return ((codes.unsqueeze(1) >> bits) & 1).to(c.dtype), index


def fill_cluster_mask_(out: torch.Tensor, c_in: torch.Tensor, c_out: torch.Tensor, scale: float) -> torch.Tensor:
    """``out = scale C_out C_in^T`` (``cluster_mask``) written into ``out``, without temporaries.

    A row depends only on its output node's assignment. Hard clusters have at most ``2^k`` distinct
    assignments (k = 6: 64 for 4096 nodes), so those rows are computed once and the mask is a gather
    of them (a copy at memory speed; a product with inner size k runs far below it on CPU).
    """
    groups = assignment_groups(c_out)
    if groups is not None:
        distinct, index = groups
        return torch.index_select((distinct * scale) @ c_in.t(), 0, index, out=out)
    return torch.mm(c_out * scale, c_in.t(), out=out)


def contract_clusters(product: torch.Tensor, c: torch.Tensor, dim: int) -> torch.Tensor:
    """``product @ c`` (``dim=1``) or ``product^T @ c`` (``dim=0``): a weight-sized matrix summed
    against the assignments ``c`` of its ``dim`` axis, (nodes of the other axis) x k.

    With inner or outer size k, the plain product runs at a few GFLOPS on CPU BLAS (5-6 memory
    passes' time). Hard clusters have few distinct assignments, so the matrix is first summed by
    assignment along ``dim`` (one pass, ``index_add_``) and only that small sum meets ``c``'s rows.
    """
    groups = assignment_groups(c)
    if groups is not None:
        distinct, index = groups
        shape = list(product.shape)
        shape[dim] = distinct.shape[0]
        sums = product.new_zeros(shape).index_add_(dim, index, product)
        return sums @ distinct if dim == 1 else sums.t() @ distinct
    if dim == 1:  # c read through a transposed contiguous copy: 1.6-2.4x faster in CPU BLAS than c itself
        return product @ c.t().contiguous().t()  # (4096 x 25088 @ 25088 x 6: 48 against 115 ms, measured)
    return torch.mm(c.t(), product).t()


class _MaskedLinear(torch.autograd.Function):
    """``F.linear(x, W~ (.) scale C_out C_in^T, b)`` with one weight-sized buffer for every temporary.

    ``workspace`` is kept by the layer between steps (a fresh weight-sized tensor per step costs more
    in page faults than the product itself). Forward: mask, times W~, into it. Backward: the masked
    weight for dL/dx (rebuilt only if another call overwrote it since: its version counter says so);
    then ``dL/dW (.) W~`` in the same buffer for the cluster gradients; then the mask again, to turn
    dL/dW into dL/dW~ in place. dL/dW is the only other weight-sized tensor, and it becomes the
    weight's gradient.
    """

    @staticmethod
    @FP32_UNDER_AUTOCAST
    def forward(ctx, x, weight, bias, c_in, c_out, scale, workspace):
        masked = fill_cluster_mask_(workspace, c_in, c_out, scale).mul_(weight)
        ctx.save_for_backward(x, weight, c_in, c_out)
        ctx.scale, ctx.workspace, ctx.version = scale, workspace, workspace._version
        return F.linear(x, masked, bias)

    @staticmethod
    @BACKWARD_AS_FORWARD
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, c_in, c_out = ctx.saved_tensors
        need_x, need_w, need_b, need_in, need_out = ctx.needs_input_grad[:5]
        workspace, scale = ctx.workspace, ctx.scale
        grad_x = grad_w = grad_b = grad_in = grad_out = None
        if need_x:
            if workspace._version != ctx.version:
                fill_cluster_mask_(workspace, c_in, c_out, scale).mul_(weight)
            grad_x = grad_y @ workspace
        g = grad_y.reshape(-1, grad_y.shape[-1])
        if need_b:
            grad_b = g.sum(0)
        if need_w or need_in or need_out:
            grad_w = g.t() @ x.reshape(-1, x.shape[-1])  # dL/dW of the masked weight, turned into dL/dW~ below
            if need_in or need_out:
                product = torch.mul(grad_w, weight, out=workspace)  # dL/dmask, up to the scale
                grad_out = contract_clusters(product, c_in, 1).mul_(scale)
                grad_in = contract_clusters(product, c_out, 0).mul_(scale)
            grad_w.mul_(fill_cluster_mask_(workspace, c_in, c_out, scale))
        return grad_x, grad_w if need_w else None, grad_b, grad_in, grad_out, None, None


# Up to this many rows (clusters x batch), ``_ClusterSumLinear`` beats the masked weight: its GEMM
# of k x batch rows reads the weight once, where the masked weight takes several weight-sized passes
# and two products with inner or outer size k, which CPU BLAS runs far below memory speed. Measured
# (python -m benchmarks.bench_blockout --kernels, 25088 -> 4096, k = 6, 2 busy cores), forward + backward
# over a plain Linear, cluster sum / masked weight: 6 rows 2.15 / 3.54, 12 rows 1.82 / 2.28,
# 24 rows 1.72 / 2.02, 96 rows 2.06 / 1.85.
CLUSTER_SUM_MAX_ROWS = 48


def _per_cluster(x2: torch.Tensor, c_in: torch.Tensor) -> torch.Tensor:
    """``x (.) C_in[:, c]`` for each cluster c, stacked as ``k * batch`` rows (sizes spelled out,
    never inferred: an empty batch leaves nothing to infer them from)."""
    return (x2.unsqueeze(0) * c_in.t().unsqueeze(1)).flatten(0, 1)


class _ClusterSumLinear(torch.autograd.Function):
    """The same layer without any weight-sized mask, for small batches: with ``W = scale W~ (.) C_out C_in^T``,
    ``y = b + scale sum_c C_out[:, c] (.) ((x (.) C_in[:, c]) W~^T)``, i.e. one GEMM of ``k * batch`` rows.
    Costs k times the multiply-adds of the plain layer, but reads the weight as often as it does."""

    @staticmethod
    @FP32_UNDER_AUTOCAST
    def forward(ctx, x, weight, bias, c_in, c_out, scale):
        x2 = x.reshape(-1, x.shape[-1])
        k, batch = c_in.shape[1], x2.shape[0]
        z = (_per_cluster(x2, c_in) @ weight.t()).unflatten(0, (k, batch))
        # Summed straight into x's leading shape: a view (einsum's result is one) could not be modified
        # in place, and an in-place activation often follows.
        per_output = c_out.t().reshape(k, *[1] * (x.dim() - 1), -1)
        y = (z.view(k, *x.shape[:-1], z.shape[-1]) * per_output).sum(0).mul_(scale)
        if bias is not None:
            y += bias
        ctx.save_for_backward(x2, weight, c_in, c_out, z)
        ctx.scale, ctx.shape = scale, x.shape
        return y

    @staticmethod
    @BACKWARD_AS_FORWARD
    @once_differentiable
    def backward(ctx, grad_y):
        x2, weight, c_in, c_out, z = ctx.saved_tensors
        need_x, need_w, need_b, need_in, need_out, _ = ctx.needs_input_grad
        g = grad_y.reshape(-1, grad_y.shape[-1])
        k, batch = c_in.shape[1], x2.shape[0]
        scaled = (g.unsqueeze(0) * (c_out.t() * ctx.scale).unsqueeze(1)).flatten(0, 1)
        grad_x = grad_w = grad_b = grad_in = grad_out = None
        if need_x or need_in:
            u = (scaled @ weight).unflatten(0, (k, batch))  # dL/d(x (.) C_in[:, c])
            grad_x = torch.einsum("cbi,ic->bi", u, c_in).view(ctx.shape) if need_x else None
            grad_in = torch.einsum("cbi,bi->ic", u, x2) if need_in else None
        if need_w:
            grad_w = scaled.t() @ _per_cluster(x2, c_in)
        if need_b:
            grad_b = g.sum(0)
        if need_out:
            grad_out = torch.einsum("cbo,bo->oc", z, g) * ctx.scale
        return grad_x, grad_w, grad_b, grad_in, grad_out, None


class BlockoutLinear(nn.Module):
    """A Linear layer whose weight is masked by the clusters of its input and output nodes.

    ``forward(x, c_in, c_out)`` takes the assignments from a ``BlockoutClusters``. The bias is
    not masked: the paper masks the weight matrix only, and an unmasked bias keeps a node with no
    cluster a constant that pruning can drop exactly (the next layer's mask zeroes its column).
    """

    def __init__(self, in_features: int, out_features: int, clusters: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        like = dict(device=device, dtype=dtype)
        self.in_features, self.out_features, self.clusters = in_features, out_features, clusters
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **like))
        self.bias = nn.Parameter(torch.empty(out_features, **like)) if bias else None
        self._buffer: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation (the mask at P = 0.5 is 1, so nothing to divide)."""
        nn.Linear.reset_parameters(self)

    @classmethod
    def from_linear(cls, linear: nn.Linear, clusters: int, p_in: torch.Tensor | None = None,
                    p_out: torch.Tensor | None = None) -> "BlockoutLinear":
        """A layer on ``linear``'s device and dtype holding its weights (``load_linear``), without
        initialising weights that would be overwritten (a vgg head's first layer has 103M)."""
        layer = nn.utils.skip_init(cls, linear.in_features, linear.out_features, clusters, linear.bias is not None,
                                   device=linear.weight.device, dtype=linear.weight.dtype)
        return layer.load_linear(linear, p_in, p_out)

    @torch.no_grad()
    def load_linear(self, linear: nn.Linear, p_in: torch.Tensor | None = None,
                    p_out: torch.Tensor | None = None) -> "BlockoutLinear":
        """Take ``linear``'s weights, divided by the eval mask of the probabilities ``p_in``/``p_out``
        the layer starts from, so its eval output equals ``linear``'s (at ``P = 0.5`` the mask is 1)."""
        self.weight.copy_(linear.weight)
        if p_in is not None:
            self.weight.div_(cluster_mask(p_out, p_in, self.clusters).to(self.weight.dtype))
        if self.bias is not None:
            self.bias.copy_(linear.bias)
        return self

    def masked_weight(self, c_in: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
        return self.weight * cluster_mask(c_out, c_in, self.clusters).to(self.weight.dtype)

    def forward(self, x: torch.Tensor, c_in: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, self.masked_weight(c_in, c_out), self.bias)``, by the cheaper exact kernel."""
        c_in, c_out = c_in.to(self.weight.dtype), c_out.to(self.weight.dtype)
        scale = MASK_SCALE / self.clusters
        if self.clusters * x[..., 0].numel() <= CLUSTER_SUM_MAX_ROWS:
            return _ClusterSumLinear.apply(x, self.weight, self.bias, c_in, c_out, scale)
        return _MaskedLinear.apply(x, self.weight, self.bias, c_in, c_out, scale, self._workspace())

    def _workspace(self) -> torch.Tensor:
        """The weight-sized buffer of ``_MaskedLinear``, kept between calls (not state: never saved)."""
        if self._buffer is None or self._buffer.shape != self.weight.shape or self._buffer.device != self.weight.device \
                or self._buffer.dtype != self.weight.dtype:
            self._buffer = torch.empty_like(self.weight, requires_grad=False)
        return self._buffer

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
