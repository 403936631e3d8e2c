"""GateConnect (Ahmed & Torresani, 2018) on ResNeXt modules: each branch reads K of the C
branch outputs of the previous module.

A torchvision ResNeXt bottleneck computes its C branches as one grouped convolution and sums
them before the shortcut and the ReLU. ``BranchedBottleneck`` keeps the branches apart: branch
``j`` outputs ``y_j = bn3_j(conv3_j(h_j)) + shortcut / C`` where ``bn3_j`` has bn3's scale and
variance and a C-th of its bias and mean, so ``relu(sum_j y_j)`` is exactly the original module
output in eval. The next module's branch ``t`` then reads ``relu(sum_k g_tk y_k)`` (``BranchGates``);
with all gates on (K = C) the network is the original one.
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


def _split_norm(norm: nn.BatchNorm2d, branches: int) -> nn.BatchNorm2d:
    """bn3 for C branch outputs side by side: scale and variance tiled, bias and mean divided by C."""
    split = nn.BatchNorm2d(norm.num_features * branches, norm.eps, norm.momentum).to(norm.weight.device)
    with torch.no_grad():
        split.weight.copy_(norm.weight.repeat(branches))
        split.bias.copy_(norm.bias.repeat(branches) / branches)
        split.running_mean.copy_(norm.running_mean.repeat(branches) / branches)
        split.running_var.copy_(norm.running_var.repeat(branches))
        split.num_batches_tracked.copy_(norm.num_batches_tracked)
    return split


def _slice_norm(norm: nn.BatchNorm2d, channels: torch.Tensor) -> nn.BatchNorm2d:
    sliced = nn.BatchNorm2d(len(channels), norm.eps, norm.momentum).to(norm.weight.device)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(sliced, name).copy_(getattr(norm, name)[channels])
        sliced.num_batches_tracked.copy_(norm.num_batches_tracked)
    return sliced


class BranchedBottleneck(nn.Module):
    """A ResNeXt bottleneck with separate branch inputs and outputs, computed as grouped convs.

    ``forward(x)`` takes the shared input ``(N, in, H, W)`` (``shared_input=True``: the first
    module of a chain, the only kind allowed a projection shortcut, applied once) or per-branch
    inputs ``(N, C, in, H, W)``, and returns per-branch outputs ``(N, C, out, H', W')``.
    """

    def __init__(self, block: BottleneckParts, shared_input: bool) -> None:
        super().__init__()
        problem = block.problem()
        if problem is not None:
            raise ValueError(f"not a ResNeXt bottleneck: {problem}")
        if not shared_input and block.projection is not None:
            raise ValueError("a module with a projection shortcut must read the shared input")
        self.branches = c = block.conv2.groups
        width, self.in_channels, self.out_channels = block.conv2.in_channels, block.conv1.in_channels, block.conv3.out_channels
        w, out = width // c, self.out_channels
        self.shared_input = shared_input
        self.shortcut_share = 1.0 / c  # each branch's share of the shortcut; pruning keeps it
        if shared_input:
            self.conv1 = block.conv1
        else:  # branch j's conv1 rows see only branch j's input: the same weight as a grouped conv
            self.conv1 = _conv(block.conv1, c * self.in_channels, width, c, block.conv1.weight)
        self.bn1, self.conv2, self.bn2, self.relu = block.bn1, block.conv2, block.bn2, nn.ReLU()
        w3 = block.conv3.weight.view(out, c, w).permute(1, 0, 2).reshape(c * out, w, 1, 1)
        self.conv3 = _conv(block.conv3, width, c * out, c, w3)
        self.bn3 = _split_norm(block.bn3, c)
        self.downsample = nn.Sequential(*block.projection) if block.projection is not None else None

    @torch.no_grad()
    def keep_branches(self, keep: list[int]) -> None:
        """Shrink to the branches in ``keep`` (in that order): fewer groups in every conv."""
        c, width = self.branches, self.conv2.in_channels
        w, out = width // c, self.out_channels
        rows = torch.cat([torch.arange(j * w, (j + 1) * w) for j in keep])
        rows3 = torch.cat([torch.arange(j * out, (j + 1) * out) for j in keep])
        n = len(keep)
        if self.shared_input:
            self.conv1 = _conv(self.conv1, self.in_channels, n * w, 1, self.conv1.weight[rows])
        else:
            self.conv1 = _conv(self.conv1, n * self.in_channels, n * w, n, self.conv1.weight[rows])
        self.bn1 = _slice_norm(self.bn1, rows)
        self.conv2 = _conv(self.conv2, n * w, n * w, n, self.conv2.weight[rows])
        self.bn2 = _slice_norm(self.bn2, rows)
        self.conv3 = _conv(self.conv3, n * w, n * out, n, self.conv3.weight[rows3])
        self.bn3 = _slice_norm(self.bn3, rows3)
        self.branches = n
        self.train(self.training)  # new layers start in train mode; match this module's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:
            h = self.conv1(x)
            shortcut = (self.downsample(x) if self.downsample is not None else x).unsqueeze(1) * self.shortcut_share
        else:
            h = self.conv1(x.flatten(1, 2))
            shortcut = x * self.shortcut_share
        h = self.relu(self.bn1(h))
        h = self.relu(self.bn2(self.conv2(h)))
        z = self.bn3(self.conv3(h))
        return z.unflatten(1, (self.branches, self.out_channels)) + shortcut

    def extra_repr(self) -> str:
        return f"branches={self.branches}, shared_input={self.shared_input}"


class BranchGates(KOfNMasks):
    """Inputs of the next module's branches: ``x_t = relu(sum_k g_tk y_k)``, K of C per branch.

    ``g`` is ``(targets, sources)``; one einsum computes every gated sum, and its backward gives
    ``dL/dg_tk = <dL/dx_t, y_k>`` for every pair, as MaskConnect's gradient requires.
    """

    def __init__(self, targets: int, sources: int, fan_in: int) -> None:
        super().__init__((targets, sources), fan_in, "uniform")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        g = self.gates().to(y.dtype)
        return torch.relu(torch.einsum("tk,nk...->nt...", g, y))

    def extra_repr(self) -> str:
        return f"targets={self.mask.shape[0]}, sources={self.mask.shape[1]}, fan_in={self.fan_in}"


class BranchSum(nn.Module):
    """Deployed gates: ``x_t = relu(sum of y_k over the K fixed sources of t)``, by gathers."""

    def __init__(self, sources: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sources", sources.long())  # (targets, K)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        targets, k = self.sources.shape
        picked = y.index_select(1, self.sources.flatten())
        return torch.relu(picked.unflatten(1, (targets, k)).sum(2))
