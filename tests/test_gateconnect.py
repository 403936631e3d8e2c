"""GateConnect: ResNeXt branch gates (K of C), pretrained function at K = C, branch pruning."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.nn import BranchedBottleneck, BranchGates, MaskedConnection


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
    kept = [m.branches for m in pruned.modules() if isinstance(m, BranchedBottleneck)]
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
    kept = {n: m.branches for n, m in pruned.named_modules() if isinstance(m, BranchedBottleneck)}
    # Every module but the last of each stage keeps one branch: the one the next module reads.
    assert kept == {"gateconnect_layer1_0": 1, "gateconnect_layer1_1": 8, "gateconnect_layer2_0": 1,
                    "gateconnect_layer2_1": 1, "gateconnect_layer2_2": 8, "gateconnect_layer3_0": 1,
                    "gateconnect_layer3_1": 8, "gateconnect_layer4_0": 1, "gateconnect_layer4_1": 8}
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
