"""Jumpout over the torchvision classification zoo (weights=None).

A quick subset runs by default; the whole zoo is marked slow (``.ci/run`` runs it too)."""
import gc

import pytest
import torch
import torchvision

import maskfx
from maskfx.nn import Jumpout
from zoo import ALL_MODELS, GIANTS, count_relu_calls, first_tensor, input_size

QUICK = ["resnet18", "densenet121", "mobilenet_v3_small", "alexnet", "squeezenet1_1"]


def check_model(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(2, 3, input_size(name), input_size(name))
    with torch.no_grad():
        reference = first_tensor(model(x))
    relu_sites = count_relu_calls(model, x)

    net = maskfx.transform(model, jumpout=True)
    assert sum(isinstance(m, Jumpout) for m in net.modules()) == relu_sites == maskfx.summary(net).count("jumpout")
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(net.eval()(x)), reference, rtol=0, atol=1e-5)

    deploy = maskfx.collapse(net)
    assert not any(isinstance(m, Jumpout) for m in deploy.modules())
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(deploy(x)), reference, rtol=0, atol=1e-5)
    if name not in GIANTS:
        _, report = maskfx.export_onnx(deploy, tmp_path / f"{name}.onnx", example_inputs=(x,))
        assert report.ok and not report.random_ops
        (tmp_path / f"{name}.onnx").unlink()
    del deploy

    torch.manual_seed(1)
    original_train = first_tensor(model.train()(x))
    torch.manual_seed(1)
    out = first_tensor(net.train()(x))
    if relu_sites:
        assert not torch.allclose(out, original_train)
    out.float().square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    del net, model
    gc.collect()


@pytest.mark.parametrize("name", QUICK)
def test_zoo_quick(name, tmp_path):
    check_model(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n not in QUICK])
def test_zoo_sweep(name, tmp_path):
    check_model(name, tmp_path)
