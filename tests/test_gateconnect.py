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
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=c), example_inputs=(x,)).eval()
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
    y = torch.randn(2, 4, 5, 6, 6)
    w = torch.randn(2, 3, 5, 6, 6)
    torch.manual_seed(3)
    out = gates(y)
    (w * out).sum().backward()
    torch.manual_seed(3)
    g = gates.gates().detach()
    pre = torch.einsum("tk,nk...->nt...", g, y)
    upstream = w * (pre > 0)  # through the ReLU after the gated sum
    expected = torch.einsum("nt...,nk...->tk", upstream, y)
    torch.testing.assert_close(gates.mask.grad, expected, rtol=1e-4, atol=1e-4)


def test_train_freeze_and_prune_to_fewer_branches(tmp_path):
    torch.manual_seed(4)
    model = small_resnext()
    x = torch.randn(4, 3, 32, 32)
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1), example_inputs=(x,))
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
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1), example_inputs=(x,)).eval()
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


def test_blocks_and_branches_choose_the_kind_of_connectivity():
    x = torch.randn(2, 3, 32, 32)
    blocks_only = maskfx.transform(small_resnext(), example_inputs=(x,),
                                   maskconnect=maskfx.MaskConnectConfig(fan_in=2, branches=False))
    summary = maskfx.summary(blocks_only)
    assert summary.count("gateconnect") == 0 and summary.count("maskconnect") == 8  # one chain of 9 modules
    with pytest.warns(UserWarning, match="maskconnect not applied"):
        resnet = maskfx.transform(torchvision.models.resnet18(num_classes=10), example_inputs=(x,),
                                  maskconnect=maskfx.MaskConnectConfig(fan_in=2, blocks=False))
    assert "maskconnect not applied" in str(maskfx.summary(resnet))  # no ResNeXt module in a resnet18
    with pytest.raises(ValueError, match="blocks and branches"):
        maskfx.MaskConnectConfig(blocks=False, branches=False)
