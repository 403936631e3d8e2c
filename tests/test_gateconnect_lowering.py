"""GateConnect's lowering: the chain plan's per-module scales (a long chain at K = 16 runs in bfloat16
and float16), and the rewrite's record, which collapse and structure read in the eval graph."""
import copy
from fractions import Fraction

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

import maskfx
from maskfx.dual import DualGraphModule, eval_module
from maskfx.export.onnx import op_histogram
from maskfx.nn import DeployedModule
from maskfx.state import get_state
from maskfx.techniques.gateconnect.layers import DeployedEnd
from maskfx.techniques.gateconnect.plan import SCALE_RANGE, module_scales
from maskfx.techniques.gateconnect.record import chains_of
from models import calibrated

C, K, MODULES = 32, 16, 23  # resnext101_32x8d's third stage: 23 modules of 32 branches; K = C/2 (the paper's)


def resnext101_stage() -> nn.Module:
    """A stem, then 23 ResNeXt modules of 32 branches (the first with a stride-2 projection), at
    2 channels per branch and 64 out: resnext101_32x8d's third stage, narrow enough for CPU."""
    torch.manual_seed(0)
    projection = nn.Sequential(nn.Conv2d(32, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))
    blocks = [Bottleneck(32, 16, stride=2, downsample=projection, groups=C, base_width=8)]
    blocks += [Bottleneck(64, 16, groups=C, base_width=8) for _ in range(MODULES - 1)]
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), *blocks,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    return calibrated(model, (8, 3, 8, 8))


def test_a_resnext101_stage_at_k16_runs_in_bfloat16_and_float16():
    model = resnext101_stage()
    x = torch.randn(2, 3, 8, 8)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=K), example_inputs=(x,))
    (chain,) = chains_of(net)
    assert len(chain.modules) == MODULES
    with torch.no_grad():  # random gates: 32 distinct sets of 16 per module, the widest range of scales
        for module in chain.modules[1:]:
            gates = net.get_submodule(module.gates)
            gates.mask.copy_(torch.rand_like(gates.mask))
    net = maskfx.freeze(net).eval()
    deploy = maskfx.collapse(net, "prune")
    deployed = [m for m in deploy.modules() if isinstance(m, DeployedModule)]
    assert len(deployed) == MODULES
    # Each module's scale stays within SCALE_RANGE of the end's (1/32 here): the sums are rescaled
    # every other module (11 of 23). Grown as K^i instead, the scales reached 1e-28 at the start,
    # folded into weights from 2e-29 to 9e25, beyond float16 (6e-8 to 65504): its output was NaN.
    assert sum(m.rescale != 1 for m in deployed) == (MODULES - 1) // 2
    largest = [p.detach().abs().max() for p in deploy.parameters() if p.dim() > 1]  # per conv weight
    assert 1e-3 < min(largest) and max(largest) < 1e3
    with torch.no_grad():
        reference = deploy(x)
        torch.testing.assert_close(reference, net(x), rtol=0, atol=1e-5)  # collapse is exact in float32
        scale = reference.abs().max()
        # Through 23 modules, each of 3 convolutions and a sum of 16, rounding errors add up as a
        # random walk of about sqrt(23 * 20) ~ 21 steps of the format's precision (2^-8 for
        # bfloat16, 2^-11 for float16) relative to the output's scale: 8% and 1% leave room for
        # that (measured: 0.5% and 0.08%); an underflow or overflow gives inf, NaN or 100%.
        for dtype, tolerance in ((torch.bfloat16, 0.08), (torch.float16, 0.01)):
            out = copy.deepcopy(deploy).to(dtype)(x.to(dtype))
            assert out.dtype == dtype and torch.isfinite(out).all()
            assert (out.float() - reference).abs().max() <= tolerance * scale, dtype


@pytest.mark.parametrize("fan_in", [1, 2, 4, 16])
@pytest.mark.parametrize("end", [None, Fraction(11, 32)])
def test_module_scales_stay_within_range_of_the_anchor(fan_in, end):
    scales = module_scales(MODULES, fan_in, end)
    anchor = Fraction(1) if end is None else end
    assert (scales[0] == 1) if end is None else (scales[-1] == end)
    assert all(anchor / SCALE_RANGE <= s <= anchor * SCALE_RANGE for s in scales)
    resets = sum(b != a * fan_in for a, b in zip(scales, scales[1:]))
    # A reset (a Mul per sum) only where one more K-fold step would leave the range: at K = 1 never.
    assert resets == {1: 0, 2: 4, 4: 7, 16: 11}[fan_in]
    assert module_scales(3, 2, end) == ([1, 2, 4] if end is None else [end / 4, end / 2, end])  # short: no reset


class DroppedHeadResNeXt(nn.Module):
    """Four ResNeXt modules of 8 branches and a head whose dropout depends on ``self.training``: a
    model maskfx traces twice and rewrites as two graphs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(*[Bottleneck(32, 8, groups=8, base_width=8) for _ in range(4)])
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        h = self.blocks(self.stem(x)).mean((2, 3))
        return self.fc(F.dropout(h, 0.5, training=self.training))


def test_the_record_names_nodes_of_the_eval_graph_that_collapse_copies(tmp_path):
    torch.manual_seed(3)
    model = calibrated(DroppedHeadResNeXt(), (8, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=4), jumpout=True, example_inputs=(x,))
    assert isinstance(net, DualGraphModule)
    (chain,) = get_state(net).records["gateconnect"]
    names = [chain.mean, chain.relu] + [n for m in chain.modules for n in (m.node, m.gates_node) if n]
    copied = copy.deepcopy(eval_module(net))  # what collapse lowers
    for graph in (net.eval_graph, copied.graph):
        nodes = {n.name: n for n in graph.nodes}
        assert set(names) <= set(nodes)
        assert [nodes[m.node].target for m in chain.modules] == [m.module for m in chain.modules]
        assert nodes[chain.mean].args[0] is nodes[chain.modules[-1].node]
        assert nodes[chain.relu].args == (nodes[chain.mean],)
    gated = [s.location for s in maskfx.structure(net) if s.technique == "gateconnect"]
    assert gated == [m.gates for m in chain.modules[1:]]
    with torch.no_grad():
        for module in chain.modules[1:]:
            gates = net.get_submodule(module.gates)
            gates.mask.copy_(torch.rand_like(gates.mask))
    net = maskfx.freeze(net).eval()
    for mode in ("expected", "prune"):
        deploy = maskfx.collapse(net, mode)
        with torch.no_grad():
            torch.testing.assert_close(deploy(x), net(x), rtol=0, atol=1e-5)
        (lowered,) = maskfx.summary(deploy).collapse.technique("gateconnect").facts.chains
        assert [name for name, _, _ in lowered.modules] == [m.module for m in chain.modules]
        assert not [s for s in maskfx.structure(deploy) if s.technique == "gateconnect"]  # lowered: no gates left
    _, report = maskfx.export_onnx(deploy, tmp_path / "pruned.onnx", example_inputs=(x,))
    assert report.ok
    # At K = 4 the scales of an identity start grow 1, 4, 16; the fourth module's sums are rescaled
    # (a Mul each), and so are the end's mean coefficients other than 1.
    deployed = [m for m in deploy.modules() if isinstance(m, DeployedModule)]
    assert [m.rescale != 1 for m in deployed] == [False, False, False, True]
    mixes = sum(a != 1 for m in deployed if isinstance(m, DeployedEnd) for a, _ in m.mix)
    assert op_histogram(onnx.load(report.path)).get("Mul", 0) == len(deployed[-1].sets) + mixes
