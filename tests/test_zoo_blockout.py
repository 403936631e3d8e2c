"""Blockout over the torchvision classification zoo (weights=None, 10 classes).

A quick subset runs by default; the whole zoo is marked slow (``.ci/run`` runs it too)."""
import gc

import pytest
import torch
import torch.nn.functional as F
import torchvision

import maskfx
from maskfx.nn import BlockoutClusters, BlockoutLinear
from structure import hard_block_logits
from zoo import ALL_MODELS, GIANTS, first_tensor, input_size

NO_LINEAR_HEAD = {"squeezenet1_0", "squeezenet1_1"}
QUICK = ["resnet18", "mobilenet_v3_small", "alexnet"]


def head_parameters(gm: torch.fx.GraphModule) -> int:
    owned = [n.target for n in gm.graph.nodes if n.op == "call_module" and n.meta.get("maskfx_owner") == "blockout"]
    return sum(p.numel() for target in owned for p in gm.get_submodule(target).parameters())


def check_model(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, input_size(name), input_size(name))
    if name in NO_LINEAR_HEAD:
        with pytest.warns(UserWarning, match="no Linear classifier head"):
            maskfx.transform(model, blockout=True)
        return
    net = maskfx.transform(model, blockout=maskfx.BlockoutConfig(clusters=4))
    assert maskfx.summary(net).count("blockout") >= 1
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(net.eval()(x)), first_tensor(model(x)), rtol=1e-5, atol=1e-5)

    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    before = [phi.detach().clone() for phi in clusters.logits]
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.01, mask_lr=1.0))
    F.cross_entropy(first_tensor(net.train()(x)), torch.tensor([1, 2])).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, clusters.logits))

    hard_block_logits(clusters, magnitude=40.0)  # sparse, certain clusters: prune is exact
    net.eval()
    with torch.no_grad():
        reference = first_tensor(net(x))
        expected = maskfx.collapse(net, "expected")
        assert not any(isinstance(m, (BlockoutClusters, BlockoutLinear)) for m in expected.modules())
        torch.testing.assert_close(first_tensor(expected(x)), reference, rtol=1e-5, atol=1e-5)
        del expected
        pruned = maskfx.collapse(net, "prune")
        torch.testing.assert_close(first_tensor(pruned(x)), reference, rtol=1e-5, atol=1e-5)
    assert head_parameters(pruned) < head_parameters(net)
    if name not in GIANTS:
        _, report = maskfx.export_onnx(pruned, tmp_path / f"{name}.onnx", example_inputs=(x,))
        assert report.ok
        (tmp_path / f"{name}.onnx").unlink()
    del pruned, net, model
    gc.collect()


@pytest.mark.parametrize("name", QUICK)
def test_zoo_quick(name, tmp_path):
    check_model(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n not in QUICK])
def test_zoo_sweep(name, tmp_path):
    check_model(name, tmp_path)
