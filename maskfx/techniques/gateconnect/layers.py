"""GateConnect (Ahmed & Torresani, 2018) on ResNeXt modules: each branch reads K of the C
branch outputs of the previous module (eq. 2), every branch a residual block of its own.

A ResNeXt module computes ``relu(x + bn3(sum_j conv3_j(h_j)))``. ``BranchedBottleneck`` keeps the
branches apart as ``u_j = x_j + K * F_j(x_j)``; ``BranchGates`` gives branch ``t`` of the next
module ``relu(mean of K of the u_k) = relu(mean of K x_k + sum of K F_k)``: eq. 2's sum of the
K gated branch outputs, the identity paths averaged. ReLU's positive homogeneity and the mean
make this exact: with all gates on (K = C) it is the original network, in eval and in train mode,
and at any K each branch's identity path has the original's scale and its residual is the sum of
the K residual functions it reads, as the paper's ``x_j = sum_k g_jk y_k`` has it (a factor C in
place of K would multiply that residual by C / K: 8 times at K = 1 of C = 8, which broke training
from scratch at K < C).

The deployed layers are what ``collapse`` lowers a chain with fixed gates to (``deploy``):
``DeployedBranches`` for each module but the last, which return every kept branch's output, and
``DeployedEnd`` for the last, which returns the chain's output.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskfx.layers.kofn import KOfNMasks
from maskfx.techniques.gateconnect.kernels import RectifiedGatedMean, gathered_mean, grouped_pointwise, \
    pointwise_and_identity


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


def conv_like(reference: nn.Conv2d, in_channels: int, out_channels: int, groups: int, weight: torch.Tensor,
              bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A conv shaped like ``reference`` (kernel, stride, padding) with the given weight and bias."""
    conv = nn.Conv2d(in_channels, out_channels, reference.kernel_size, reference.stride, reference.padding,
                     reference.dilation, groups, bias=bias is not None).to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _affine(norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``norm(v) = scale * v + shift`` for statistics ``mean``, ``var``."""
    scale = norm.weight * torch.rsqrt(var + norm.eps)
    return scale, norm.bias - mean * scale


def uses_batch_statistics(norm: nn.BatchNorm2d) -> bool:
    """Whether ``norm`` normalises by the batch's own statistics (in training, or without running ones)."""
    return norm.training or not norm.track_running_stats


def norm_affine(norm: nn.BatchNorm2d, s: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with which ``norm`` maps ``s``, as ``nn.BatchNorm2d`` does: in training,
    batch statistics of ``s`` (and the running statistics updated from them), else the running ones
    (``s`` may then be None: it is not read)."""
    if not uses_batch_statistics(norm):
        return _affine(norm, norm.running_mean, norm.running_var)
    s = s.to(norm.running_mean.dtype)  # statistics in the norm's precision, as BatchNorm keeps them under autocast
    tracking = norm.training and norm.track_running_stats
    if tracking:
        norm.num_batches_tracked.add_(1)
    if s.numel() == 0:  # no statistics in an empty batch (their NaN would reach the gradients):
        return _affine(norm, norm.running_mean, norm.running_var)  # BatchNorm2d keeps the running ones
    dims = [0, *range(2, s.dim())]
    mean, var = s.mean(dims), s.var(dims, unbiased=False)
    if tracking:
        with torch.no_grad():
            factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            n = s.numel() / s.shape[1]
            norm.running_mean.lerp_(mean, factor)
            norm.running_var.lerp_(var * n / max(n - 1, 1), factor)
    return _affine(norm, mean, var)


class BranchedBottleneck(nn.Module):
    """A ResNeXt module whose C branches are residual blocks with inputs and outputs of their own.

    Branch ``j`` reads ``x_j`` and outputs ``u_j = x_j + read_by * F_j(x_j)``, where ``F_j`` is the
    branch's share of the original residual function (its conv3 rows, with bn3's scale and shift
    computed from the sum of all branches, as the original computes them) and ``read_by`` is how
    many of the ``u_k`` each reader averages: K where the next module's branch ``t`` reads
    ``relu(mean of K of the u_k)`` (``BranchGates``), C (the default) at a chain's end, which reads
    ``relu(mean of all u_k)``. So a reader gets the mean of its K identity paths plus the sum of
    their K residual functions: the original's identity path at any K, the paper's sum of branch
    outputs (eq. 2) for the residuals, and with all C gates on (every ``x_j`` the same) the
    original module's output, in eval and in train mode.

    ``forward(x)`` takes the shared input ``(N, in, H, W)`` (``shared_input=True``: the first
    module of a chain, the only kind allowed a projection shortcut) or per-branch inputs
    ``(N, C, in, H, W)``, and returns per-branch outputs ``(N, C, out, H', W')``. The branches run
    as grouped convolutions, their 1x1 ones as batched GEMMs (``grouped_pointwise``).
    """

    def __init__(self, block: BottleneckParts, shared_input: bool, read_by: int | None = None) -> None:
        super().__init__()
        problem = block.problem()
        if problem is not None:
            raise ValueError(f"not a ResNeXt bottleneck: {problem}")
        if not shared_input and block.projection is not None:
            raise ValueError("a module with a projection shortcut must read the shared input")
        self.branches = c = block.conv2.groups
        if read_by is not None and not 1 <= read_by <= c:
            raise ValueError(f"read_by must be between 1 and the {c} branches, got {read_by}")
        # Each branch's residual factor: the outputs its reader averages (K), so the mean of K
        # outputs carries the sum of their K residual functions (all C: the original module).
        self.scale = float(c if read_by is None else read_by)
        width, self.in_channels, self.out_channels = block.conv2.in_channels, block.conv1.in_channels, block.conv3.out_channels
        w, out = width // c, self.out_channels
        self.shared_input = shared_input
        if shared_input:
            self.conv1 = block.conv1
        else:  # branch j's conv1 rows see only branch j's input: the same weight as a grouped conv
            self.conv1 = conv_like(block.conv1, c * self.in_channels, width, c, block.conv1.weight)
        self.bn1, self.conv2, self.bn2, self.relu = block.bn1, block.conv2, block.bn2, nn.ReLU()
        w3 = block.conv3.weight.view(out, c, w).permute(1, 0, 2).reshape(c * out, w, 1, 1)
        self.conv3 = conv_like(block.conv3, width, c * out, c, w3)
        self.bn3 = block.bn3
        self.downsample = nn.Sequential(*block.projection) if block.projection is not None else None

    def dense_conv3_weight(self) -> torch.Tensor:
        """conv3 as the original's dense ``(out, C * width, 1, 1)`` weight: the sum of all branches."""
        c, out = self.branches, self.out_channels
        return self.conv3.weight.view(c, out, -1).permute(1, 0, 2).reshape(out, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:
            h = self.conv1(x)
            shortcut = (self.downsample(x) if self.downsample is not None else x).unsqueeze(1)
        else:
            h, shortcut = pointwise_and_identity(self.conv1.weight, x)
            h = h.flatten(1, 2)
        h = self.relu(self.bn1(h))
        h = self.relu(self.bn2(self.conv2(h)))
        # bn3 normalises the sum of the branches, as in the original: in training its statistics come
        # from that sum, computed as the original's dense conv3 (a C-th of the branch outputs' size).
        summed = F.conv2d(h, self.dense_conv3_weight()) if uses_batch_statistics(self.bn3) else None
        scale, shift = norm_affine(self.bn3, summed)
        # bn3's scale (times the residual factor) folded into the branch weights, so the C-fold branch
        # outputs take no multiply and no per-channel reduction in the backward.
        weight = self.conv3.weight.view(self.branches, self.out_channels, -1) * (self.scale * scale).view(1, -1, 1)
        return grouped_pointwise(weight, h.unflatten(1, (self.branches, -1)), shortcut, shift)

    def extra_repr(self) -> str:
        return f"branches={self.branches}, shared_input={self.shared_input}, read_by={self.scale:g}"


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


class BranchGates(KOfNMasks):
    """Inputs of the next module's branches: ``x_t = relu(mean of u_k over K gated k)`` (eq. 2,
    normalised by K so every branch's identity path keeps the original's scale).

    ``g`` is ``(targets, sources)``. Training reads the K drawn sources of each target; the
    gradient reaches every gate entry (``RectifiedGatedMean``).
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
            return RectifiedGatedMean.apply(self.mask, chosen, u)
        return torch.relu(gathered_mean(u, chosen))

    def extra_repr(self) -> str:
        return f"targets={self.mask.shape[0]}, sources={self.mask.shape[1]}, fan_in={self.fan_in}"


def _total(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of a list by chained adds (Python's ``sum`` would start with an add of 0)."""
    return functools.reduce(torch.add, tensors)


class DeployedModule(nn.Module):
    """What every lowered module of a chain computes first, for inference (BatchNorms folded into
    the convs; eval only): its inputs, and the branches' hidden maps ``h`` before conv3.

    The input is the chain's (``sets is None``: the first module), or input ``g`` is
    ``relu(sum of the previous module's outputs listed in sets[g]) * rescale``; at K = 1 that is one
    output, which the previous module already rectified, so no op at all. The means' factors (1/K,
    and each branch's residual factor) are folded into the weights as per-module scales (``plan``);
    ``rescale`` is 1, no Mul, but where the plan resets a module's scale. The branches reading input
    ``g`` are contiguous and their conv1 is one conv (branch ``p`` reads input ``readers[p]``);
    conv2 of every branch is one grouped conv.
    """

    def __init__(self, sets: list[list[int]] | None, rescale: float, readers: list[int], conv1: list[nn.Conv2d],
                 conv2: nn.Conv2d) -> None:
        super().__init__()
        self.sets, self.rescale, self.readers = sets, rescale, readers
        self.conv1, self.conv2 = nn.ModuleList(conv1), conv2

    def inputs(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        if self.sets is None:
            return [x]
        summed = [x[s[0]] if len(s) == 1 else torch.relu(_total([x[k] for k in s])) for s in self.sets]
        return summed if self.rescale == 1 else [v * self.rescale for v in summed]

    def hidden(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        parts = [torch.relu(conv(v)) for conv, v in zip(self.conv1, inputs)]
        return torch.relu(self.conv2(parts[0] if len(parts) == 1 else torch.cat(parts, 1)))

    def extra_repr(self) -> str:
        return f"branches={len(self.readers)}, inputs={len(self.conv1)}, rescale={self.rescale:g}"


class DeployedBranches(DeployedModule):
    """A module of a chain but its last, lowered: returns each kept branch's output
    ``conv3_p(h_p) + bias + its input`` (the first module's: its shortcut's), rectified at K = 1
    (``rectify``), as the next module's inputs read them."""

    def __init__(self, sets: list[list[int]] | None, rescale: float, readers: list[int], conv1: list[nn.Conv2d],
                 conv2: nn.Conv2d, conv3_weights: list[torch.Tensor], conv3_bias: torch.Tensor,
                 shortcut: nn.Module | None, rectify: bool) -> None:
        super().__init__(sets, rescale, readers, conv1, conv2)
        self.conv3_weights = nn.ParameterList(conv3_weights)
        self.conv3_bias = nn.Parameter(conv3_bias.clone())
        self.shortcut, self.rectify = shortcut, rectify
        self.width = conv2.in_channels // conv2.groups

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = self.inputs(x)
        identities = [self.shortcut(x)] if self.shortcut is not None else inputs
        outputs = []
        for piece, weight, g in zip(self.hidden(inputs).split(self.width, 1), self.conv3_weights, self.readers):
            u = F.conv2d(piece, weight, self.conv3_bias) + identities[g]
            outputs.append(torch.relu(u) if self.rectify else u)
        return outputs


class DeployedEnd(DeployedModule):
    """A chain's last module, lowered: the mean of its branch outputs,
    ``relu(conv3(h) + sum_g a_g * input_g)``, with all branches' conv3 as one dense conv and ``mix``
    listing ``(a, inputs)`` groups (no Mul where ``a = 1``)."""

    def __init__(self, sets: list[list[int]], rescale: float, readers: list[int], conv1: list[nn.Conv2d],
                 conv2: nn.Conv2d, conv3: nn.Conv2d, mix: list[tuple[float, list[int]]]) -> None:
        super().__init__(sets, rescale, readers, conv1, conv2)
        self.conv3, self.mix = conv3, mix

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        inputs = self.inputs(x)
        mixed = [_total([inputs[g] for g in members]) for _, members in self.mix]
        mixed = _total([v if a == 1 else v * a for (a, _), v in zip(self.mix, mixed)])
        return torch.relu(self.conv3(self.hidden(inputs)) + mixed)
