"""GateConnect (Ahmed & Torresani, 2018) on ResNeXt modules: each branch reads K of the C
branch outputs of the previous module (eq. 2), every branch a residual block of its own.

A ResNeXt module computes ``relu(x + bn3(sum_j conv3_j(h_j)))``. ``BranchedBottleneck`` keeps the
branches apart as ``u_j = x_j + C * F_j(x_j)``; ``BranchGates`` gives branch ``t`` of the next
module ``relu(mean of K of the u_k)``. ReLU's positive homogeneity and the mean make this exact:
with all gates on it is the original network, in eval and in train mode, and at any K each
branch's identity path has the original's scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maskfx.nn.maskconnect import KOfNMasks


@dataclass
class BottleneckParts:
    """The layers of one ResNeXt module, however its forward is written: 1x1 conv -> BatchNorm ->
    ReLU -> grouped 3x3 conv (C = groups branches) -> BatchNorm -> ReLU -> 1x1 conv -> BatchNorm,
    added to the input or to a 1x1 conv + BatchNorm projection of it."""

    conv1: nn.Module
    bn1: nn.Module
    conv2: nn.Module
    bn2: nn.Module
    conv3: nn.Module
    bn3: nn.Module
    projection: tuple[nn.Module, nn.Module] | None = None

    def problem(self) -> str | None:
        """Why these layers are not a ResNeXt module GateConnect can split, or None."""
        convs = {"conv1": self.conv1, "conv2": self.conv2, "conv3": self.conv3}
        norms = {"bn1": self.bn1, "bn2": self.bn2, "bn3": self.bn3}
        if self.projection is not None:
            convs["projection conv"], norms["projection norm"] = self.projection
        for name, conv in convs.items():
            if type(conv) is not nn.Conv2d or conv.bias is not None:
                return f"{name} is not a bias-free Conv2d"
        for name, norm in norms.items():
            if type(norm) is not nn.BatchNorm2d or not norm.affine or not norm.track_running_stats:
                return f"{name} is not an affine BatchNorm2d with running statistics"
        one_by_one = [name for name in ("conv1", "conv3", "projection conv") if name in convs
                      and (convs[name].kernel_size != (1, 1) or convs[name].groups != 1)]
        if one_by_one:
            return f"{one_by_one[0]} is not an ungrouped 1x1 convolution"
        if self.conv2.groups < 2:
            return "conv2 is not grouped (a plain bottleneck, one branch)"
        if not (self.conv1.out_channels == self.conv2.in_channels == self.conv2.out_channels == self.conv3.in_channels):
            return "conv1, conv2 and conv3 widths do not line up"
        return None


def _conv(reference: nn.Conv2d, in_channels: int, out_channels: int, groups: int, weight: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, reference.kernel_size, reference.stride, reference.padding,
                     reference.dilation, groups, bias=False).to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def _slice_norm(norm: nn.BatchNorm2d, channels: torch.Tensor) -> nn.BatchNorm2d:
    sliced = nn.BatchNorm2d(len(channels), norm.eps, norm.momentum).to(norm.weight.device)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(sliced, name).copy_(getattr(norm, name)[channels])
        sliced.num_batches_tracked.copy_(norm.num_batches_tracked)
    return sliced


def summed_norm_affine(norm: nn.BatchNorm2d, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of ``norm`` applied to ``s = z.sum(1)`` (branches on dim 1), as the
    original module applies bn3 to the sum of its branches: in training, batch statistics of
    ``s`` (and the running statistics updated from them, as ``nn.BatchNorm2d`` does)."""
    if norm.training or not norm.track_running_stats:
        s = z.sum(1)
        dims = [0, *range(2, s.dim())]
        mean, var = s.mean(dims), s.var(dims, unbiased=False)
        if norm.training and norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
                n = s.numel() / s.shape[1]
                norm.running_mean.lerp_(mean, factor)
                norm.running_var.lerp_(var * n / max(n - 1, 1), factor)
    else:
        mean, var = norm.running_mean, norm.running_var
    scale = norm.weight * torch.rsqrt(var + norm.eps)
    return scale, norm.bias - mean * scale


class BranchedBottleneck(nn.Module):
    """A ResNeXt module whose C branches are residual blocks with inputs and outputs of their own.

    Branch ``j`` reads ``x_j`` and outputs ``u_j = x_j + C * F_j(x_j)``, where ``F_j`` is the
    branch's share of the original residual function (its conv3 rows, with bn3's scale and shift
    computed from the sum of all branches, as the original computes them). The next module's
    branch ``t`` reads ``relu(mean of K of the u_k)`` (``BranchGates``), a chain's end
    ``relu(mean of all u_k)``. So every branch keeps the original's identity path at any K, and
    with all C gates on (every ``x_j`` the same) the mean is the original module's output, in
    eval and in train mode.

    ``forward(x)`` takes the shared input ``(N, in, H, W)`` (``shared_input=True``: the first
    module of a chain, the only kind allowed a projection shortcut) or per-branch inputs
    ``(N, C, in, H, W)``, and returns per-branch outputs ``(N, C, out, H', W')``. The branches run
    as grouped convolutions.
    """

    def __init__(self, block: BottleneckParts, shared_input: bool) -> None:
        super().__init__()
        problem = block.problem()
        if problem is not None:
            raise ValueError(f"not a ResNeXt bottleneck: {problem}")
        if not shared_input and block.projection is not None:
            raise ValueError("a module with a projection shortcut must read the shared input")
        self.branches = c = block.conv2.groups
        self.scale = float(c)  # C: the original branch count, kept when pruning removes branches
        width, self.in_channels, self.out_channels = block.conv2.in_channels, block.conv1.in_channels, block.conv3.out_channels
        w, out = width // c, self.out_channels
        self.shared_input = shared_input
        if shared_input:
            self.conv1 = block.conv1
        else:  # branch j's conv1 rows see only branch j's input: the same weight as a grouped conv
            self.conv1 = _conv(block.conv1, c * self.in_channels, width, c, block.conv1.weight)
        self.bn1, self.conv2, self.bn2, self.relu = block.bn1, block.conv2, block.bn2, nn.ReLU()
        w3 = block.conv3.weight.view(out, c, w).permute(1, 0, 2).reshape(c * out, w, 1, 1)
        self.conv3 = _conv(block.conv3, width, c * out, c, w3)
        self.bn3 = block.bn3
        self.downsample = nn.Sequential(*block.projection) if block.projection is not None else None

    @torch.no_grad()
    def keep_branches(self, keep: list[int]) -> None:
        """Shrink to the branches in ``keep`` (in that order): fewer groups in every conv."""
        c, width = self.branches, self.conv2.in_channels
        w, out = width // c, self.out_channels
        rows = torch.cat([torch.arange(j * w, (j + 1) * w) for j in keep]).to(self.conv2.weight.device)
        rows3 = torch.cat([torch.arange(j * out, (j + 1) * out) for j in keep]).to(self.conv2.weight.device)
        n = len(keep)
        if self.shared_input:
            self.conv1 = _conv(self.conv1, self.in_channels, n * w, 1, self.conv1.weight[rows])
        else:
            self.conv1 = _conv(self.conv1, n * self.in_channels, n * w, n, self.conv1.weight[rows])
        self.bn1 = _slice_norm(self.bn1, rows)
        self.conv2 = _conv(self.conv2, n * w, n * w, n, self.conv2.weight[rows])
        self.bn2 = _slice_norm(self.bn2, rows)
        self.conv3 = _conv(self.conv3, n * w, n * out, n, self.conv3.weight[rows3])
        self.branches = n
        self.train(self.training)  # new layers start in train mode; match this module's mode

    def merged(self) -> "ResNeXtBlock":
        """The original module again, for when every branch reads the same input (all gates on)."""
        c, out = self.branches, self.out_channels
        w = self.conv2.in_channels // c
        conv1 = self.conv1 if self.shared_input else _conv(self.conv1, self.in_channels, c * w, 1, self.conv1.weight)
        w3 = self.conv3.weight.view(c, out, w).permute(1, 0, 2).reshape(out, c * w, 1, 1)
        conv3 = _conv(self.conv3, c * w, out, 1, w3)
        projection = tuple(self.downsample) if self.downsample is not None else None
        return ResNeXtBlock(BottleneckParts(conv1, self.bn1, self.conv2, self.bn2, conv3, self.bn3, projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:
            h = self.conv1(x)
            shortcut = (self.downsample(x) if self.downsample is not None else x).unsqueeze(1)
        else:
            h = self.conv1(x.flatten(1, 2))
            shortcut = x
        h = self.relu(self.bn1(h))
        h = self.relu(self.bn2(self.conv2(h)))
        z = self.conv3(h).unflatten(1, (self.branches, self.out_channels))
        scale, shift = summed_norm_affine(self.bn3, z)
        view = (-1,) + (1,) * (z.dim() - 3)  # per channel of each branch output
        return torch.addcmul(shortcut + shift.view(view), z, (self.scale * scale).view(view))

    def extra_repr(self) -> str:
        return f"branches={self.branches}, shared_input={self.shared_input}"


class ResNeXtBlock(nn.Module):
    """A plain ResNeXt module: ``relu(bn3(conv3(...(conv1(x)))) + shortcut(x))``. What
    ``collapse`` ships where learned connectivity kept every branch (K = C)."""

    def __init__(self, parts: BottleneckParts) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = parts.conv1, parts.bn1, parts.conv2, parts.bn2
        self.conv3, self.bn3, self.relu = parts.conv3, parts.bn3, nn.ReLU()
        self.downsample = nn.Sequential(*parts.projection) if parts.projection is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.bn3(self.conv3(h)) + shortcut)


class _GatedMean(torch.autograd.Function):
    """``x_t = mean of u_k over the K sources chosen[t]``, summing only those; the backward gives
    every gate entry its BinaryConnect gradient ``<dL/dx_t, u_k> / K`` (all C of them, as the
    paper's update needs) and routes ``dL/dx_t / K`` to the K sources."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, chosen: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(chosen, u)
        return gathered_mean(u, chosen)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        chosen, u = ctx.saved_tensors
        g = g / chosen.shape[1]
        grad_mask = torch.einsum("nt...,nk...->tk", g, u)
        grad_u = torch.zeros_like(u)
        for k in range(chosen.shape[1]):
            grad_u.index_add_(1, chosen[:, k], g)
        return grad_mask, None, grad_u


def gathered_mean(u: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``out[:, t] = mean of u[:, k] for k in chosen[t]``: a gather of the K inputs per target."""
    targets, k = chosen.shape
    picked = u.index_select(1, chosen.flatten())
    return picked.unflatten(1, (targets, k)).mean(2)


class BranchGates(KOfNMasks):
    """Inputs of the next module's branches: ``x_t = relu(mean of u_k over K gated k)`` (eq. 2,
    normalised by K so every branch's identity path keeps the original's scale).

    ``g`` is ``(targets, sources)``. Training sums only the K drawn sources of each target; the
    gradient reaches every gate entry (``_GatedMean``).
    """

    def __init__(self, targets: int, sources: int, fan_in: int) -> None:
        super().__init__((targets, sources), fan_in, "uniform")

    def chosen(self) -> torch.Tensor:
        """``(targets, K)`` source indices: drawn in training, the top K (or frozen) otherwise."""
        binary = self.sample() if self.training and not self.is_frozen else self.active()
        return binary.topk(self.fan_in, dim=1).indices

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        chosen = self.chosen()
        if self.training and not self.is_frozen:
            return torch.relu(_GatedMean.apply(self.mask, chosen, u))
        return torch.relu(gathered_mean(u, chosen))

    def extra_repr(self) -> str:
        return f"targets={self.mask.shape[0]}, sources={self.mask.shape[1]}, fan_in={self.fan_in}"


class BranchSum(nn.Module):
    """Deployed gates: ``x_t = relu(mean of u_k over the K fixed sources of t)``, by a gather."""

    def __init__(self, sources: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sources", sources.long())  # (targets, K)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.relu(gathered_mean(u, self.sources))
