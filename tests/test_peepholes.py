"""Backend peepholes: chosen by the ONNX Runtime provider, applied to a copy, exact."""
import operator

import torch
import torch.fx as fx
from torch import nn

from maskfx.export.peepholes import apply_peepholes
from maskfx.graph.channel_pad import is_channel_pad
from maskfx.layers.adapt import pad_channels

NARROW, WIDE = 4, 8


def _padded_block() -> fx.GraphModule:
    """A residual block reading a zero-padded input twice: ``bn(conv2(relu(conv1(p)))) + p``."""
    root = nn.Module()
    root.conv1 = nn.Conv2d(WIDE, WIDE, 3, padding=1)
    root.conv2 = nn.Conv2d(WIDE, WIDE, 3, padding=1)
    root.bn = nn.BatchNorm2d(WIDE)
    with torch.no_grad():
        root.bn.running_mean.normal_()
        root.bn.running_var.uniform_(0.5, 2.0)
    graph = fx.Graph()
    padded = graph.call_function(pad_channels, (graph.placeholder("t"), WIDE))
    body = graph.call_module("conv1", (padded,))
    body = graph.call_module("bn", (graph.call_module("conv2", (graph.call_function(torch.relu, (body,)),)),))
    graph.output(graph.call_function(operator.add, (body, padded)))
    return fx.GraphModule(root, graph).eval()


def test_the_cpu_peephole_rewrites_a_copy_exactly():
    gm, x = _padded_block(), torch.randn(2, NARROW, 6, 6)
    code, conv1 = gm.code, gm.conv1.weight.detach().clone()
    rewritten, rewrites = apply_peepholes(gm, "CPUExecutionProvider", (x,))
    assert rewrites == {"channel_pad": 1} and rewritten is not gm
    assert not any(map(is_channel_pad, rewritten.graph.nodes))
    assert sum(p.numel() for p in rewritten.parameters()) == \
        sum(p.numel() for p in gm.parameters()) - conv1[:, NARROW:].numel()
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), gm(x), rtol=1e-5, atol=1e-5)
    assert gm.code == code and torch.equal(gm.conv1.weight, conv1)
    assert sum(map(is_channel_pad, gm.graph.nodes)) == 1


def test_cuda_gets_no_peephole_and_nothing_is_copied():
    gm = _padded_block()
    assert apply_peepholes(gm, "CUDAExecutionProvider", (torch.randn(2, NARROW, 6, 6),)) == (gm, {})


def test_a_module_with_nothing_to_rewrite_is_exported_as_it_is():
    linear = nn.Linear(4, 3)
    assert apply_peepholes(linear, "CPUExecutionProvider", (torch.randn(2, 4),)) == (linear, {"channel_pad": 0})
    traced = fx.symbolic_trace(linear)
    assert apply_peepholes(traced, "CPUExecutionProvider", (torch.randn(2, 4),)) == (traced, {"channel_pad": 0})
