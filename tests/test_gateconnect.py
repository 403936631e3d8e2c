"""GateConnect: ResNeXt branch gates (K of C), pretrained function at K = C, branch pruning."""
import copy

import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.export.onnx import op_histogram
from maskfx.nn import BranchedBottleneck, BranchGates, DeployedModule, MaskedConnection
from maskfx.techniques.gateconnect.kernels import POINTWISE_GEMM_MIN_PIXELS, grouped_pointwise, pointwise_and_identity
from maskfx.techniques.gateconnect.layers import DeployedBranches, DeployedEnd
from models import StyledResNeXt, calibrated


def small_resnext(groups: int = 8) -> torch.nn.Module:
    model = ResNet(Bottleneck, [2, 3, 2, 2], groups=groups, width_per_group=4, num_classes=10)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


def gates_of(net):
    return [m for m in net.modules() if isinstance(m, BranchGates)]


@pytest.mark.parametrize("name", ["small", "resnext50_32x4d"])
def test_all_gates_on_reproduce_the_original_network(name):
    torch.manual_seed(0)
    model = small_resnext() if name == "small" else torchvision.models.resnext50_32x4d(num_classes=10).eval()
    c = 8 if name == "small" else 32
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=c), example_inputs=(x,)).eval()
    summary = maskfx.summary(net)
    assert summary.count("gateconnect") == (5 if name == "small" else 12) and summary.count("maskconnect") == 0
    assert all(m.branches == c for m in net.modules() if isinstance(m, BranchedBottleneck))
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-4)


def test_exactly_k_active_gates_per_branch_in_training():
    torch.manual_seed(1)
    gates = BranchGates(8, 8, fan_in=3).train()
    with torch.no_grad():
        gates.mask.copy_(torch.rand(8, 8))
    for _ in range(100):
        g = gates.gates().detach()
        assert torch.equal(g.sum(1), torch.full((8,), 3.0)) and set(g.unique().tolist()) == {0.0, 1.0}


def test_gate_gradient_is_the_inner_product_with_each_branch_output():
    torch.manual_seed(2)
    gates = BranchGates(3, 4, fan_in=2).train()
    y = torch.randn(2, 4, 5, 6, 6, requires_grad=True)
    w = torch.randn(2, 3, 5, 6, 6)
    torch.manual_seed(3)
    out = gates(y)
    (w * out).sum().backward()
    torch.manual_seed(3)
    g = gates.gates().detach()
    pre = torch.einsum("tk,nk...->nt...", g, y.detach()) / 2  # the mean of the K = 2 drawn outputs
    torch.testing.assert_close(out, torch.relu(pre))
    upstream = w * (pre > 0) / 2  # through the ReLU and the mean
    torch.testing.assert_close(gates.mask.grad, torch.einsum("nt...,nk...->tk", upstream, y.detach()),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.grad, torch.einsum("tk,nt...->nk...", g, upstream), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [2, 5])  # 4 and 25 pixels: the conv and the GEMM path
@pytest.mark.parametrize("residual_groups", [None, 1, 3])  # 3: the output's full shape, the GEMM's accumulator
@pytest.mark.parametrize("with_bias", [False, True])
def test_grouped_pointwise_is_the_grouped_1x1_convolution(size, residual_groups, with_bias):
    assert 2 * 2 < POINTWISE_GEMM_MIN_PIXELS <= 5 * 5  # so the two sizes take the two paths
    torch.manual_seed(4)
    weight = torch.randn(3 * 7, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 4, size, size, dtype=torch.float64, requires_grad=True)
    residual = None if residual_groups is None else \
        torch.randn(2, residual_groups, 7, size, size, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True) if with_bias else None
    out = grouped_pointwise(weight, x, residual, bias)
    expected = F.conv2d(x.flatten(1, 2), weight, groups=3).unflatten(1, (3, 7))
    if residual is not None:
        expected = expected + residual
    if bias is not None:
        expected = expected + bias.view(-1, 1, 1)
    torch.testing.assert_close(out, expected)
    inputs = [t for t in (weight, x, residual, bias) if t is not None]
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, inputs, g), torch.autograd.grad(expected, inputs, g))


@pytest.mark.parametrize("size", [2, 5])  # the conv path (autograd's sum) and the fused backward GEMM
@pytest.mark.parametrize("uses", ["both", "conv1 only", "identity only"])
def test_pointwise_and_identity_gradients(size, uses):
    torch.manual_seed(5)
    weight = torch.randn(3 * 7, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 4, size, size, dtype=torch.float64, requires_grad=True)

    def f(weight, x):
        h, identity = pointwise_and_identity(weight, x)
        torch.testing.assert_close(h, grouped_pointwise(weight, x))
        assert torch.equal(identity, x)
        terms = {"both": [h.sum(2, keepdim=True), identity.square()], "conv1 only": [h],
                 "identity only": [identity.square()]}[uses]
        return sum(t.sum() for t in terms)
    assert torch.autograd.gradcheck(f, (weight, x))


@pytest.mark.parametrize("name", ["small", "resnext50_32x4d"])
def test_all_gates_on_reproduce_the_original_in_train_mode_too(name):
    torch.manual_seed(0)
    model = small_resnext() if name == "small" else torchvision.models.resnext50_32x4d(num_classes=10)
    c = 8 if name == "small" else 32
    x = torch.randn(4, 3, 32, 32)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=c), example_inputs=(x,))
    # In float64: batch statistics of 4 samples through 16 random-init modules turn fp32 summation
    # order (32 branch sums vs one conv) into 1e-3 differences; the formulation itself is exact.
    model, net, x = model.double(), net.double(), x.double()
    outputs = []
    for module in (model, net):
        outputs.append(module.train()(x))  # BatchNorm on batch statistics, running statistics updated
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-9)
    with torch.no_grad():  # the running statistics (bn3's from the sum of branches) moved as the original's
        torch.testing.assert_close(net.eval()(x), model.eval()(x), rtol=0, atol=1e-9)


def test_trains_under_bf16_autocast():
    """CUDA training runs under bf16 autocast (maskfx.train.loop); CPU autocast takes the same dtype
    paths: bf16 branch outputs, gates and their backward in the branches' dtype, bn3 statistics in
    fp32 (with bf16 statistics the running-statistics update raised a dtype error)."""
    torch.manual_seed(5)
    net = maskfx.transform(small_resnext(), gateconnect=maskfx.GateConnectConfig(fan_in=2)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(8, 3, 32, 32))
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(g.mask.grad is not None and torch.isfinite(g.mask.grad).all() and g.mask.grad.abs().sum() > 0
               for g in gates_of(net))
    blocks = [m for m in net.modules() if isinstance(m, BranchedBottleneck)]
    assert all(m.bn3.running_var.dtype == torch.float32 and torch.isfinite(m.bn3.running_var).all() for m in blocks)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for m in blocks for p in m.conv3.parameters())


def test_with_residual_functions_zeroed_every_k_keeps_the_identity_path():
    torch.manual_seed(6)
    model = small_resnext()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # F(x) = 0 in every module: the network is stem, shortcuts and head
        for name, m in model.named_modules():
            if name.endswith("bn3"):
                m.weight.zero_()
                m.bias.zero_()
    for k in (1, 3):
        net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=k), example_inputs=(x,)).eval()
        with torch.no_grad():
            for g in gates_of(net):
                g.mask.copy_(torch.rand_like(g.mask))  # any wiring
            torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


def test_train_freeze_and_prune_to_fewer_branches(tmp_path):
    torch.manual_seed(4)
    model = small_resnext()
    x = torch.randn(4, 3, 32, 32)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=1), example_inputs=(x,))
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.01, mask_lr=0.5), momentum=0.9)
    maskfx.clip_masks_after_steps(opt, net)
    before = [g.mask.detach().clone() for g in gates_of(net)]
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net.train()(x), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    assert any(not torch.equal(a, g.mask) for a, g in zip(before, gates_of(net)))
    maskfx.freeze(net)
    net.eval()
    pruned = maskfx.collapse(net, "prune")
    assert not any(isinstance(m, (BranchGates, MaskedConnection)) for m in pruned.modules())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), rtol=1e-5, atol=1e-5)
    kept = [len(m.readers) for m in pruned.modules() if isinstance(m, DeployedModule)]
    assert min(kept) < 8 and sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert "active branches" in str(maskfx.summary(pruned))
    _, report = maskfx.export_onnx(pruned, tmp_path / "resnext.onnx", example_inputs=(x,))
    assert report.ok


def test_gates_set_by_hand_remove_the_branches_nobody_reads():
    model = small_resnext()
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=1), example_inputs=(x,)).eval()
    with torch.no_grad():
        for g in gates_of(net):
            g.mask.zero_()
            g.mask[:, :2] = torch.tensor([1.0, 0.5])  # every branch reads branch 0 of the previous module
    expected, pruned = maskfx.collapse(net, "expected"), maskfx.collapse(net, "prune")
    with torch.no_grad():
        torch.testing.assert_close(expected(x), net(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(pruned(x), net(x), rtol=1e-5, atol=1e-5)
    chains = [m for m in pruned.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], DeployedModule)]
    # Every module but the last of each stage keeps one branch: the one the next module reads.
    assert [[len(m.readers) for m in chain] for chain in chains] == [[1, 8], [1, 1, 8], [1, 8], [1, 8]]
    # Branches that read the same source are one conv1; so is the first module's (all read its input).
    assert all(len(m.conv1) == 1 for chain in chains for m in chain)
    assert sum(p.numel() for p in pruned.parameters()) < 0.9 * sum(p.numel() for p in expected.parameters())


def test_gateconnect_and_maskconnect_are_separate_techniques():
    x = torch.randn(2, 3, 32, 32)
    blocks_only = maskfx.transform(small_resnext(), example_inputs=(x,), maskconnect=maskfx.MaskConnectConfig(fan_in=2))
    summary = maskfx.summary(blocks_only)
    assert summary.count("gateconnect") == 0 and summary.count("maskconnect") == 8  # one chain of 9 modules
    with pytest.warns(UserWarning, match="maskconnect not applied"):
        both = maskfx.summary(maskfx.transform(small_resnext(), example_inputs=(x,), maskconnect=True, gateconnect=True))
    assert both.count("gateconnect") == 5 and both.count("maskconnect") == 0  # GateConnect takes the ResNeXt modules
    with pytest.warns(UserWarning, match="gateconnect not applied"):
        resnet = maskfx.transform(torchvision.models.resnet18(num_classes=10), gateconnect=True)
    assert "gateconnect not applied" in str(maskfx.summary(resnet))  # no ResNeXt module in a resnet18


def test_all_gates_on_collapse_to_the_original_modules(tmp_path):
    model = small_resnext()
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=8), example_inputs=(x,)).eval()
    deploy = maskfx.collapse(net, "prune")
    assert not any(isinstance(m, BranchedBottleneck) for m in deploy.modules())
    assert sum(p.numel() for p in deploy.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-5, atol=1e-5)
    _, ours = maskfx.export_onnx(deploy, tmp_path / "ours.onnx", example_inputs=(x,))
    _, theirs = maskfx.export_onnx(model, tmp_path / "theirs.onnx", example_inputs=(x,))
    assert ours.ok and ours.node_count == theirs.node_count and ours.op_counts == theirs.op_counts


def identity_start_chain() -> nn.Module:
    """Three ResNeXt modules (C = 4) after a stem, the first with an identity shortcut: no
    projection to carry a scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          *[Bottleneck(32, 8, groups=4, base_width=16) for _ in range(3)],
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    return calibrated(model, (8, 3, 16, 16))


@pytest.mark.parametrize("name, k", [("projection start", 1), ("projection start", 2), ("identity start", 2)])
def test_pruned_deploy_graph(tmp_path, name, k):
    torch.manual_seed(7)
    model = calibrated(StyledResNeXt("modules"), (8, 3, 16, 16)) if name == "projection start" else identity_start_chain()
    x = torch.randn(3, 3, 16, 16)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=k), example_inputs=(x,))
    with torch.no_grad():
        for g in gates_of(net):
            g.mask.copy_(torch.rand_like(g.mask))  # any wiring
    net = maskfx.freeze(net).eval()
    pruned = maskfx.collapse(net, "prune")
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) <= sum(p.numel() for p in model.parameters())
    deployed = [m for m in pruned.modules() if isinstance(m, DeployedModule)]
    gates = [g.active() for g in gates_of(net)]
    # conv1 once per distinct source set: branches that read the same source share one conv.
    for module, g in zip((m for m in deployed if m.sets is not None), gates):
        assert len(module.conv1) == len({tuple(s) for s in module.sets})
        assert len(module.conv1) <= len({tuple(row.nonzero().flatten().tolist()) for row in g})
    _, report = maskfx.export_onnx(pruned, tmp_path / "pruned.onnx", example_inputs=(x,))
    assert report.ok
    ops = op_histogram(onnx.load(report.path))
    assert not {"Gather", "GatherElements", "GatherND", "ReduceSum"} & set(ops)
    assert ops.get("ReduceMean", 0) == 1  # the head's pooling only
    # Mul only for the chain ends' mean coefficients that no rescaling can absorb (chains this
    # short rescale no module's sums).
    assert all(m.rescale == 1 for m in deployed)
    assert ops.get("Mul", 0) == sum(a != 1 for m in deployed if isinstance(m, DeployedEnd) for a, _ in m.mix)
    convs = sum(isinstance(m, nn.Conv2d) for m in pruned.modules())
    assert ops["Conv"] == convs + sum(len(m.conv3_weights) for m in deployed if isinstance(m, DeployedBranches))
    if k == 1:  # inputs are the previous outputs themselves: no add or ReLU between modules
        assert ops.get("Sum", 0) == 0 and all(len(s) == 1 for m in deployed if m.sets for s in m.sets)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_branch_reads_the_original_module_pruned_to_its_k_sources(k):
    """Eq. 2 with y_k = x_k + F_k: the input a gated branch reads is the sum of its K sources'
    residual functions on the original's identity path, i.e. the original module with every other
    branch's conv3 columns zeroed (a factor C in place of K would scale that residual by C / K)."""
    model = identity_start_chain()  # C = 4
    x = torch.randn(3, 3, 16, 16)
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=k), example_inputs=(x,)).eval()
    first = next(m for m in net.modules() if isinstance(m, BranchedBottleneck))
    gates = gates_of(net)[0]  # the second module's: it reads the first module's branches
    sources = [[(t + j) % 4 for j in range(k)] for t in range(4)]
    with torch.no_grad():
        gates.mask.zero_()
        for t, s in enumerate(sources):
            gates.mask[t, s] = 1.0
        stem = model[:3](x)
        read = gates(first(stem))
        width = model[3].conv3.in_channels // 4
        for t, s in enumerate(sources):
            pruned = copy.deepcopy(model[3])
            keep = torch.zeros(4, dtype=torch.bool)
            keep[s] = True
            pruned.conv3.weight.mul_(keep.repeat_interleave(width).view(1, -1, 1, 1))
            torch.testing.assert_close(read[:, t], pruned(stem), rtol=1e-5, atol=1e-5)


def test_gated_inputs_keep_the_original_scale_from_scratch():
    """From a fresh initialisation (train mode, batch statistics), every gated branch's input has
    about the rms it has at K = C at any K: at K = 1 of C = 8 a C-scaled residual made it 2.5x."""
    def input_rms(k):
        torch.manual_seed(0)
        model = ResNet(Bottleneck, [2, 3, 2, 2], groups=8, width_per_group=4, num_classes=10)
        x = torch.randn(16, 3, 32, 32)
        net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=k), example_inputs=(x,)).train()
        rms = []
        for g in gates_of(net):
            g.register_forward_hook(lambda m, i, out: rms.append(out.pow(2).mean().sqrt().item()))
        torch.manual_seed(1)
        with torch.no_grad():
            net(x)
        return torch.tensor(rms)
    full = input_rms(8)
    for k in (1, 2, 4):
        ratio = input_rms(k) / full
        assert len(ratio) == 5 and ((ratio > 2 / 3) & (ratio < 1.5)).all(), (k, ratio)
