"""GateConnect's kernels: the gated mean of branch outputs and the grouped 1x1 convolutions of a
branched module, as batched GEMMs with hand-written backwards (measured faster on CPU than the
gathers and grouped convolutions autograd would run)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class RectifiedGatedMean(torch.autograd.Function):
    """``x_t = relu(mean of u_k over the K sources chosen[t])`` (``gathered_mean``), the ReLU in place;
    the backward gives every gate entry its BinaryConnect gradient ``<dL/dmean_t, u_k> / K`` (all C
    of them, as the paper's update needs) and routes ``dL/dmean_t / K`` to the K sources."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, chosen: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        with torch.autocast(u.device.type, enabled=False):  # in u's dtype, which the backward's products share
            x = gathered_mean(u, chosen).clamp_min_(0)
        ctx.save_for_backward(chosen, u, x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        # Batched matrix products over (batch, branch, features) views: no permuted copies, and the
        # routing to the sources runs as one GEMM with the K-hot matrix (CPU index_add_ along the
        # branch dim was a third of a train step). 1/K is applied to the small matrices, not to g.
        chosen, u, x = ctx.saved_tensors
        flat_g, flat_u = torch.ops.aten.threshold_backward(g, x, 0).flatten(2), u.flatten(2)  # ReLU backward
        grad_mask = torch.matmul(flat_g, flat_u.transpose(1, 2)).sum(0) / chosen.shape[1]
        grad_u = torch.matmul(routing(chosen, u.shape[1], g).t(), flat_g).view_as(u)
        return grad_mask, None, grad_u


def routing(chosen: torch.Tensor, sources: int, like: torch.Tensor) -> torch.Tensor:
    """``(targets, sources)`` matrix with ``1/K`` at each target's K ``chosen`` sources."""
    route = torch.zeros(chosen.shape[0], sources, dtype=like.dtype, device=like.device)
    return route.scatter_(1, chosen, 1.0 / chosen.shape[1])


def gathered_mean(u: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``out[:, t] = mean of u[:, k] for k in chosen[t]``, as one GEMM with the K-hot routing matrix.

    Measured on CPU at resnext50 shapes (C = 32, K = 4, b8 64 px): 5-15x faster than gathering the
    K inputs (``index_select`` along the branch dim, then a mean), which was a fifth of a train step.
    """
    return torch.matmul(routing(chosen, u.shape[1], u), u.flatten(2)).view(u.shape[0], chosen.shape[0], *u.shape[2:])


# Below this many pixels per map a grouped 1x1 conv runs as the conv (many tiny GEMMs lose to it).
POINTWISE_GEMM_MIN_PIXELS = 16


def _group_rows(t: torch.Tensor) -> torch.Tensor:
    """Per-group maps ``(N, G, channels, H, W)`` as ``(N * G, channels, H * W)`` matrices for batched
    GEMMs (no size inferred, which an empty batch would leave ambiguous)."""
    return t.flatten(3).flatten(0, 1)


def grouped_pointwise(weight: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """A grouped 1x1 convolution (stride 1) with ``weight`` ``(G * out, in, 1, 1)`` or ``(G, out, in)``
    of per-group inputs ``x`` ``(N, G, in, H, W)``, returned per group ``(N, G, out, H, W)``, plus
    ``residual`` (broadcast to that shape) and the per-channel ``bias`` ``(out,)`` if given.

    As one batched GEMM of the weight against every sample's groups: forward and backward measured
    1.6-3.5x faster than the CPU grouped convolution at resnext50's branch shapes (4 -> 256 .. 2048
    channels per group, 16x16 to 4x4 maps); on 2x2 maps the convolution wins and runs instead.
    The bias and a residual of the output's full shape enter the GEMM itself (a row of ones, and
    ``baddbmm``'s accumulator, which CPU BLAS fills by copying the residual in), so the C-fold
    output takes no separate add, forward or backward (5-8% faster per call than adding them
    afterwards). Any other residual is added in place into the GEMM's result before it is viewed as
    maps (in place on the view would cost autograd a copy of the gradient).
    """
    n, groups, _, height, width = x.shape
    weight = weight.reshape(groups, -1, x.shape[2])
    out_shape = (n, groups, weight.shape[1], height, width)
    if height * width < POINTWISE_GEMM_MIN_PIXELS:
        conv_bias = None if bias is None else bias.repeat(groups)
        z = F.conv2d(x.flatten(1, 2), weight.flatten(0, 1)[..., None, None], conv_bias, groups=groups)
        z = z.unflatten(1, (groups, -1))
        return z if residual is None else z + residual
    if bias is not None:  # one more input channel of ones: the GEMM adds the bias, no pass over its output
        x = torch.cat([x, x.new_ones(n, groups, 1, height, width)], dim=2)
        weight = torch.cat([weight, bias.view(1, -1, 1).expand(groups, -1, 1)], dim=2)
    if residual is not None and residual.shape == out_shape:
        z = torch.baddbmm(_group_rows(residual), weight.expand(n, *weight.shape).flatten(0, 1), _group_rows(x))
        return z.view(out_shape)
    z = torch.matmul(weight, x.flatten(3))
    if residual is not None:
        z.add_(residual.flatten(3))
    return z.view(out_shape)


def pointwise_and_identity(weight: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grouped_pointwise(weight, x), x)`` for a module's per-branch inputs, which feed both its
    conv1 and its residual. Autograd would sum the two gradients of ``x`` in one more pass over a
    C-fold tensor; ``_PointwiseWithIdentity``'s backward GEMM takes the residual's gradient as its
    accumulator instead (the conv path of small maps keeps autograd's sum)."""
    if x.shape[-1] * x.shape[-2] < POINTWISE_GEMM_MIN_PIXELS:
        return grouped_pointwise(weight, x), x
    return _PointwiseWithIdentity.apply(weight, x)


class _PointwiseWithIdentity(torch.autograd.Function):
    """``pointwise_and_identity`` on the GEMM path, in ``x``'s dtype (as autocast would run it)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, x: torch.Tensor):
        with torch.autocast(x.device.type, enabled=False):
            h = grouped_pointwise(weight.to(x.dtype), x)
        ctx.save_for_backward(weight, x)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a C-fold zero tensor
        return h, x.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor | None, grad_x: torch.Tensor | None):
        if grad_h is None:
            return None, grad_x
        weight, x = ctx.saved_tensors
        n, groups, width = x.shape[:3]
        w = weight.to(x.dtype).reshape(groups, -1, width)
        g = _group_rows(grad_h.to(x.dtype))  # the forward's dtype (autocast may differ)
        w_t = w.transpose(1, 2).expand(n, -1, -1, -1).flatten(0, 1)
        if grad_x is None:
            dx = torch.bmm(w_t, g)
        else:
            dx = torch.baddbmm(_group_rows(grad_x.to(x.dtype)), w_t, g)
        dw = torch.bmm(g, _group_rows(x).transpose(1, 2)).unflatten(0, (n, groups))
        return dw.sum(0, dtype=weight.dtype).reshape(weight.shape), dx.view_as(x)
