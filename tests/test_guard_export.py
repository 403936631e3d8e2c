"""export_onnx's guards: a NaN or an infinity on either side of the ONNX Runtime parity check
fails it, and a net that still holds learned maskfx structure is refused before the exporter runs."""
import math

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
import tiny_models
from maskfx.export import ExportVerificationError, RuntimeSession
from maskfx.collapse_report import _shift
from models import EveryReluKind


def _linear(weight: float = 0.5, bias: float = 0.0) -> nn.Module:
    """A 4 -> 3 Linear layer with constant weights and bias."""
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return layer


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_pytorch_output_fails_verification(value, tmp_path):
    with pytest.raises(ExportVerificationError) as caught:
        maskfx.export_onnx(_linear(bias=value), tmp_path / "net.onnx", example_inputs=(torch.randn(2, 4),))
    message, checks = str(caught.value), caught.value.report.checks
    assert "\n" not in message and "batch 1: non-finite output from PyTorch" in message
    assert [c.batch for c in checks] == [1, 4] and all("PyTorch" in c.non_finite and not c.ok for c in checks)
    assert not caught.value.report.ok


@pytest.fixture()
def corrupt_ort(monkeypatch):
    """Adds ``value`` to the first ONNX Runtime output element at batch size ``batch``."""
    def corrupt(value: float, batch: int) -> None:
        run = RuntimeSession.run

        def corrupted(self, *inputs):
            outputs = run(self, *inputs)
            if inputs[0].shape[0] == batch:
                outputs[0].flat[0] += value
            return outputs

        monkeypatch.setattr(RuntimeSession, "run", corrupted)
    return corrupt


def test_an_error_injected_into_onnx_runtime_fails_verification_nan_too(corrupt_ort, tmp_path):
    x = torch.randn(2, 4)
    _, clean = maskfx.export_onnx(_linear(), tmp_path / "clean.onnx", example_inputs=(x,))
    assert clean.ok
    corrupt_ort(100.0, batch=4)  # the second check (2 + 2 rows)
    with pytest.raises(ExportVerificationError) as wrong:
        maskfx.export_onnx(_linear(), tmp_path / "wrong.onnx", example_inputs=(x,))
    assert [c.ok for c in wrong.value.report.checks] == [True, False]
    assert wrong.value.report.checks[1].max_abs_diff == pytest.approx(100.0, abs=1.0)
    corrupt_ort(math.nan, batch=4)
    with pytest.raises(ExportVerificationError) as nan:
        maskfx.export_onnx(_linear(), tmp_path / "nan.onnx", example_inputs=(x,))
    checks = nan.value.report.checks
    assert [c.non_finite for c in checks] == [[], ["ONNX Runtime"]] and [c.ok for c in checks] == [True, False]
    assert math.isnan(checks[1].max_abs_diff)  # reported as it is, not as 0
    assert "batch 4: non-finite output from ONNX Runtime" in str(nan.value) and "\n" not in str(nan.value)


def _tiny_resnet(**techniques):
    x = torch.randn(2, 3, 16, 16)
    return maskfx.transform(tiny_models.resnet(), jumpout=True, example_inputs=(x,), **techniques), x


def _tiny_resnext(**techniques):
    x = torch.randn(2, 3, 32, 32)
    model = ResNet(Bottleneck, [2, 1, 1, 1], groups=8, width_per_group=4, num_classes=10).eval()
    return maskfx.transform(model, jumpout=True, example_inputs=(x,), **techniques), x


UNCOLLAPSED = {  # techniques -> their net, with Jumpout too, and the layers the refusal names
    "maskconnect": (lambda: _tiny_resnet(maskconnect=True),
                    "MaskedConnection at 'maskconnect_4', MaskedConnection at 'maskconnect_5'"),
    "gateconnect": (lambda: _tiny_resnext(gateconnect=True),
                    "BranchedBottleneck at 'gateconnect_layer1_0', BranchGates at 'gateconnect_gates_layer1_1', "
                    "BranchedBottleneck at 'gateconnect_layer1_1'"),
    "blockout": (lambda: _tiny_resnet(blockout=True), "BlockoutLinear at 'blockout__8', BlockoutLinear at 'blockout__10'"),
    "maskconnect+blockout": (lambda: _tiny_resnet(maskconnect=True, blockout=True),
                             "MaskedConnection at 'maskconnect_4', MaskedConnection at 'maskconnect_5', "
                             "BlockoutLinear at 'blockout__8' and 1 more"),
}


class ExporterReached(Exception):
    """Raised in place of running torch's ONNX exporter."""


@pytest.fixture()
def no_exporter(monkeypatch):
    def reached(*args, **kwargs):
        raise ExporterReached

    monkeypatch.setattr(torch.onnx, "export", reached)


@pytest.mark.parametrize("techniques", sorted(UNCOLLAPSED))
@pytest.mark.parametrize("frozen", [False, True])
def test_export_refuses_an_uncollapsed_net_before_the_exporter(techniques, frozen, no_exporter, tmp_path):
    make, layers = UNCOLLAPSED[techniques]
    net, x = make()
    if frozen:
        maskfx.freeze(net)
    with pytest.raises(ValueError) as caught:
        maskfx.export_onnx(net, tmp_path / "out" / "net.onnx", example_inputs=(x,))
    message = str(caught.value)
    assert message.startswith(f"this network still holds maskfx layers ({layers}): ")
    assert message.endswith("collapse it first: deploy = maskfx.collapse(net, mode='expected' or 'prune')")
    assert "Jumpout" not in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ExporterReached):  # collapsed, it goes on to the exporter
        maskfx.export_onnx(maskfx.collapse(net), tmp_path / "out" / "net.onnx", example_inputs=(x,))


def test_a_jumpout_only_net_still_exports_uncollapsed(tmp_path):
    """Jumpout learns no structure and is the identity in eval mode: its export is the collapsed one's."""
    net, x = maskfx.transform(EveryReluKind(), jumpout=True), torch.randn(3, 16)
    _, uncollapsed = maskfx.export_onnx(net, tmp_path / "net.onnx", example_inputs=(x,))
    _, collapsed = maskfx.export_onnx(maskfx.collapse(net), tmp_path / "deploy.onnx", example_inputs=(x,))
    assert uncollapsed.ok and uncollapsed.op_counts == collapsed.op_counts



@pytest.mark.parametrize("reference, output", [
    ([torch.zeros(3), torch.tensor([math.nan])], [torch.zeros(3), torch.tensor([math.nan])]),  # NaN not first
    ([torch.tensor([math.inf])], [torch.tensor([1.0])]),  # an infinite output makes any tolerance infinite
])
def test_a_non_finite_collapse_is_never_reported_exact(reference, output):
    shift = _shift(reference, output)
    assert shift.exact is False and math.isnan(shift.max_abs_diff)


def test_a_collapse_of_a_nan_net_says_so():
    x = torch.randn(8, 3, 16, 16)
    net = maskfx.transform(tiny_models.resnet(), blockout=True, example_inputs=(x,)).eval()
    with torch.no_grad():
        net.get_parameter(next(n for n, _ in net.named_parameters() if n.endswith("bias"))).fill_(math.nan)
    assert maskfx.summary(maskfx.collapse(net, "expected", example_inputs=(x,))).collapse.exact is False
