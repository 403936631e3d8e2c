"""Residual blocks and ResNeXt modules are found by the shape of the graph, however the model's
forward is written; every candidate a pass rejects is reported with its reason."""
import pytest
import torch

import maskfx
from maskfx.nn import BranchedBottleneck
from models import StyledResNeXt, calibrated

SPLITTABLE = ("modules", "functional", "shortcut-left")


def rewritten(style: str, **techniques):
    torch.manual_seed(0)
    model = calibrated(StyledResNeXt(style), (8, 3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    net = maskfx.transform(model, example_inputs=(x,), **techniques)
    return model, net.eval(), x


@pytest.mark.parametrize("style", SPLITTABLE)
def test_gateconnect_finds_resnext_modules_in_every_style(style):
    model, net, x = rewritten(style, gateconnect=maskfx.GateConnectConfig(fan_in=4))
    summary = maskfx.summary(net)
    assert summary.count("gateconnect") == 2  # one gate layer per chain of two modules
    assert sum(isinstance(m, BranchedBottleneck) for m in net.modules()) == 4
    assert not [r for r in summary.rejected if r.technique == "gateconnect"]
    with torch.no_grad():  # K = C: the original network
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("style, why", [("se", "mul"), ("drop-path", "drop_path")])
def test_gateconnect_rejects_modules_it_cannot_split_and_says_why(style, why):
    with pytest.warns(UserWarning, match="gateconnect not applied"):
        _, net, _ = rewritten(style, gateconnect=maskfx.GateConnectConfig(fan_in=4))
    summary = maskfx.summary(net)
    assert summary.count("gateconnect") == 0
    rejected = [r for r in summary.rejected if r.technique == "gateconnect"]
    assert [r.location for r in rejected] == [f"stages.{i}" for i in range(4)]
    assert all(why in r.reason and "cannot be split into branches" in r.reason for r in rejected)
    assert "rejected stages.0" in str(summary)


@pytest.mark.parametrize("style", StyledResNeXt.STYLES)
def test_maskconnect_finds_residual_blocks_in_every_style(style):
    model, net, x = rewritten(style, maskconnect=maskfx.MaskConnectConfig(fan_in=1, init="previous"))
    summary = maskfx.summary(net)
    assert [s.location for s in summary.sites] == ["stages.1", "stages.2", "stages.3"]
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-5)


def test_rejected_adds_name_the_reason():
    from models import HandResidual
    net = maskfx.transform(HandResidual(), maskconnect=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    reasons = [r.reason for r in maskfx.summary(net).rejected if r.technique == "maskconnect"]
    assert sum("broadcasting add" in r for r in reasons) == 2  # the offset and the mean
