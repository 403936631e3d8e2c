"""The lifecycle on a GPU: layers, training with bf16 autocast, freeze, collapse and export of a model
that lives on CUDA. CI has no GPU, so these run where one exists (``pytest tests/test_cuda.py``)."""
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import maskfx
from maskfx.techniques.jumpout.layers import Jumpout
from maskfx.train.loop import train_one_epoch
from models import StyledResNeXt, calibrated

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would make GPU fp32 products differ from CPU ones by ~1e-3: compare true fp32."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _on_device(module: torch.nn.Module) -> bool:
    return all(t.device.type == "cuda" for t in [*module.parameters(), *module.buffers()])


def _train_a_little(net: torch.nn.Module, shape: tuple[int, ...], classes: int, steps: int = 4) -> list[float]:
    images, labels = torch.randn(steps * 8, *shape), torch.randint(0, classes, (steps * 8,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    optimizer = torch.optim.SGD(maskfx.param_groups(net, lr=0.01, mask_lr=0.1), lr=0.01, momentum=0.9)
    losses = [train_one_epoch(net, loader, optimizer, torch.device("cuda"), amp=True, show=False) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    return losses


def test_resnet_lifecycle_on_gpu(tmp_path):
    x = torch.randn(4, 3, 32, 32, device="cuda")
    model = calibrated(torchvision.models.resnet18(num_classes=10), (8, 3, 32, 32)).cuda()
    net = maskfx.transform(model, jumpout=True, blockout=True, maskconnect=True, example_inputs=(x,))
    assert _on_device(net)
    _train_a_little(net, (3, 32, 32), 10)
    assert _on_device(net)
    net.eval()
    with torch.no_grad():
        on_gpu = net(x)
        torch.testing.assert_close(maskfx.collapse(net, "expected")(x), on_gpu, rtol=1e-5, atol=1e-5)
        maskfx.freeze(net)
        frozen = net(x)
        pruned = maskfx.collapse(net, "prune")
        assert _on_device(pruned)
        torch.testing.assert_close(pruned(x), frozen, rtol=1e-5, atol=1e-5)
        # the same model on the CPU computes the same function
        torch.testing.assert_close(pruned.cpu()(x.cpu()), frozen.cpu(), rtol=1e-4, atol=1e-4)
    _, report = maskfx.export_onnx(pruned.cuda(), tmp_path / "pruned.onnx", example_inputs=(x,))
    assert report.ok, str(report)


def test_gateconnect_trains_and_prunes_on_gpu():
    model = calibrated(StyledResNeXt("modules", groups=4), (8, 3, 16, 16)).cuda()
    net = maskfx.transform(model, gateconnect=maskfx.GateConnectConfig(fan_in=2))
    _train_a_little(net, (3, 16, 16), 5)
    gates = [p for name, p in net.named_parameters() if "gate" in name]
    assert gates and all(g.grad is not None and torch.isfinite(g.grad).all() for g in gates)
    x = torch.randn(4, 3, 16, 16, device="cuda")
    net.eval()
    maskfx.freeze(net)
    with torch.no_grad():
        torch.testing.assert_close(maskfx.collapse(net, "prune")(x), net(x), rtol=1e-5, atol=1e-5)


def test_jumpout_drops_its_expected_share_on_gpu():
    layer = Jumpout(sigma=0.1, per_sample=True).cuda().train()
    h = torch.ones(4000, 256, device="cuda")  # every unit active: the rate is not renormalised
    dropped = (layer(h) == 0).float().mean().item()
    assert layer(h).device.type == "cuda"
    # one rate per sample, 4000 samples: the dropped share's standard error is ~1e-3
    assert abs(dropped - layer.expected_rate()) < 5e-3
