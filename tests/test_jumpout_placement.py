"""JumpoutConfig.placement: after every rectifier (ReLU, ReLU6), or only in place of the model's
Dropouts after one; other activations are rejected by kind."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import maskfx
from maskfx.nn import Jumpout


class MixedDropouts(nn.Module):
    """Four ReLU sites; Dropouts after a ReLU (a module and a functional one), a Dropout after a
    Linear and a Dropout before a ReLU."""

    def __init__(self):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(16, 16) for _ in range(5))
        self.relu = nn.ReLU()
        self.drop_after_relu = nn.Dropout(0.3)
        self.drop_after_linear = nn.Dropout(0.2)
        self.drop_before_relu = nn.Dropout(0.1)

    def forward(self, x):
        f = self.fcs
        x = self.drop_after_relu(self.relu(f[0](x)))       # replaced by both placements
        x = F.dropout(F.relu(f[1](x)), 0.4, self.training)  # replaced by both placements
        x = self.drop_after_linear(f[2](x))                 # kept by both placements
        x = F.relu(self.drop_before_relu(f[3](x)))          # kept; "relu" adds a Jumpout after the ReLU
        return f[4](self.relu(x))                           # "relu" only


class BranchAfterDropout(nn.Module):
    """A ReLU read by a Dropout branch and by a plain branch."""

    def __init__(self):
        super().__init__()
        self.fc, self.dropped, self.plain = nn.Linear(16, 16), nn.Linear(16, 3), nn.Linear(16, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.dropped(self.drop(h)) + self.plain(h)


def jumpouts(net):
    return [m for m in net.modules() if isinstance(m, Jumpout)]


def dropouts(net):
    return sum(isinstance(m, nn.Dropout) for m in net.modules()) + sum(
        n.target is F.dropout for n in net.graph.nodes)


def test_relu_placement_puts_one_jumpout_after_each_relu_and_keeps_other_dropouts():
    net = maskfx.transform(MixedDropouts(), jumpout=maskfx.JumpoutConfig(placement="relu"))
    assert len(jumpouts(net)) == 4
    assert dropouts(net) == 2  # after the Linear, before the ReLU
    replaced = [s.detail for s in maskfx.summary(net).sites if s.detail]
    assert replaced == ["replaced Dropout 'drop_after_relu' (p=0.3)", "replaced Dropout (p=0.4)"]


def test_dropout_placement_replaces_only_dropouts_after_a_relu_and_notes_the_others():
    net = maskfx.transform(MixedDropouts(), jumpout=maskfx.JumpoutConfig(placement="dropout"))
    summary = maskfx.summary(net)
    assert len(jumpouts(net)) == 2
    assert [s.location for s in summary.sites] == ["relu", "relu_1"]
    assert all(s.detail.startswith("replaced Dropout") for s in summary.sites)
    assert dropouts(net) == 2
    kept = [n for n in summary.notes if "kept" in n]
    assert len(kept) == 2 and "drop_after_linear" in kept[0] and "drop_before_relu" in kept[1]


def test_dropout_placement_filters_by_the_relu_site_name():
    net = maskfx.transform(MixedDropouts(), jumpout=maskfx.JumpoutConfig(placement="dropout", exclude="relu"))
    assert [s.location for s in maskfx.summary(net).sites] == ["relu_1"]
    assert dropouts(net) == 3  # the excluded site keeps its Dropout


def test_dropout_placement_drops_only_the_dropout_branch():
    torch.manual_seed(0)
    model = BranchAfterDropout()
    nn.init.zeros_(model.dropped.weight)  # the output is then the plain branch's, if it is undropped
    x = torch.randn(64, 16)
    expected = model.eval()(x)
    by_dropout = maskfx.transform(model, jumpout=maskfx.JumpoutConfig(placement="dropout", sigma=0.3)).train()
    torch.testing.assert_close(by_dropout(x), expected)
    by_relu = maskfx.transform(model, jumpout=maskfx.JumpoutConfig(placement="relu", sigma=0.3)).train()
    assert (by_relu(x) - expected).abs().max() > 0.01


def test_dropout_placement_on_a_model_without_dropout_changes_nothing_and_says_so():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    net = maskfx.transform(model, jumpout=maskfx.JumpoutConfig(placement="dropout")).train()
    assert not jumpouts(net)
    assert any("found no Dropout after a ReLU" in n for n in maskfx.summary(net).notes)
    x = torch.randn(8, 16)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)


def test_config_switches_reach_every_layer():
    config = maskfx.JumpoutConfig(sample_rate=False, normalize_rate=False, damped_rescale=False)
    layers = jumpouts(maskfx.transform(MixedDropouts(), jumpout=config))
    assert layers and all(not (m.sample_rate or m.normalize_rate or m.damped_rescale) for m in layers)


@pytest.mark.parametrize("kwargs, field", [
    (dict(placement="everywhere"), "placement"), (dict(sample_rate="no"), "sample_rate"),
    (dict(normalize_rate=0), "normalize_rate"), (dict(damped_rescale=None), "damped_rescale"),
    (dict(placement="dropout", replace_dropout=False), "replace_dropout"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        maskfx.JumpoutConfig(**kwargs)


class EveryActivationSpelling(nn.Module):
    """Four ReLU6 spellings and a Hardtanh clipped at 0, then activations Jumpout leaves alone."""

    def __init__(self):
        super().__init__()
        self.relu6, self.clipped, self.hardtanh = nn.ReLU6(inplace=True), nn.Hardtanh(0.0, 6.0), nn.Hardtanh()
        self.silu, self.leaky, self.hardswish = nn.SiLU(), nn.LeakyReLU(0.1), nn.Hardswish()

    def forward(self, x):
        x = F.relu6(self.relu6(x)) + F.hardtanh(x, 0.0, 6.0) + F.hardtanh(x, min_val=0, max_val=3)
        x = F.hardtanh_(self.clipped(x), 0.0, 6.0)                             # five rectifier sites so far
        x = self.hardtanh(x) + F.hardtanh(x, -2.0, 2.0)                        # Hardtanh x2
        x = self.silu(x) + F.silu(x) + x.sigmoid() + torch.sigmoid(x)         # SiLU x2, Sigmoid x2
        return self.leaky(x) + torch.tanh(x) + F.gelu(x) + self.hardswish(x)  # one each


def rejected(net) -> dict[str, str]:
    """The summary's Jumpout rejections: location by kind (each reason names its kind)."""
    rejections = [r for r in maskfx.summary(net).rejected if r.technique == "jumpout"]
    assert all("is not a rectifier" in r.reason for r in rejections)
    return {r.reason.split()[0]: r.location for r in rejections}


def test_every_relu6_spelling_is_a_site_and_other_activations_are_rejected_by_kind():
    net = maskfx.transform(EveryActivationSpelling(), jumpout=True)
    assert [s.location for s in maskfx.summary(net).sites] == \
        ["relu6", "relu6_1", "hardtanh_1", "hardtanh_2", "clipped", "hardtanh_"]
    assert len(jumpouts(net)) == 6
    assert rejected(net) == {
        "Hardtanh": "2 Hardtanh call sites (hardtanh, hardtanh_3)", "SiLU": "2 SiLU call sites (silu, silu_1)",
        "Sigmoid": "2 Sigmoid call sites (sigmoid, sigmoid_1)", "LeakyReLU": "1 LeakyReLU call site (leaky)",
        "Tanh": "1 Tanh call site (tanh)", "GELU": "1 GELU call site (gelu)", "Hardswish": "1 Hardswish call site (hardswish)"}


def test_rejections_follow_the_site_selection():
    net = maskfx.transform(EveryActivationSpelling(), jumpout=maskfx.JumpoutConfig(exclude="silu*"))
    assert "SiLU" not in rejected(net) and "Sigmoid" in rejected(net)


def test_dropout_placement_replaces_a_dropout_after_relu6():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU6(), nn.Dropout(0.2), nn.Linear(16, 16), nn.SiLU(),
                          nn.Dropout(0.3), nn.Linear(16, 3))
    net = maskfx.transform(model, jumpout=maskfx.JumpoutConfig(placement="dropout"))
    assert [(s.location, s.detail) for s in maskfx.summary(net).sites] == [("1", "replaced Dropout '2' (p=0.2)")]
    assert any("kept Dropout '5' (p=0.3): its input is not a ReLU or ReLU6" in n for n in maskfx.summary(net).notes)


@pytest.fixture(scope="module")
def mobilenet_v2():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32))  # BatchNorm statistics from a batch, as a trained net has
    return model.eval()


def test_mobilenet_v2_gets_one_jumpout_per_relu6_and_keeps_its_eval_function(mobilenet_v2):
    relu6 = [name for name, m in mobilenet_v2.named_modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6) == 35
    net = maskfx.transform(mobilenet_v2, jumpout=True)
    summary = maskfx.summary(net)
    assert sorted(s.location for s in summary.sites) == sorted(relu6) and len(jumpouts(net)) == 35
    assert not summary.rejected and not summary.notes
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = mobilenet_v2(x)
        torch.testing.assert_close(net.eval()(x), reference, rtol=0, atol=1e-5)
        deploy = maskfx.collapse(net, "expected", example_inputs=(x,))
        assert not jumpouts(deploy) and maskfx.summary(deploy).collapse.exact
        torch.testing.assert_close(deploy(x), net(x), rtol=0, atol=1e-5)
        torch.manual_seed(1)
        original_train = copy.deepcopy(mobilenet_v2).train()(x)
        torch.manual_seed(1)
        assert (net.train()(x) - original_train).abs().max() > 1e-3  # the Jumpouts act in training


@pytest.mark.slow
def test_mobilenet_v2_with_jumpout_exports_without_random_ops(mobilenet_v2, tmp_path):
    deploy = maskfx.collapse(maskfx.transform(mobilenet_v2, jumpout=True))
    _, report = maskfx.export_onnx(deploy, tmp_path / "mobilenet_v2.onnx", example_inputs=(torch.randn(2, 3, 32, 32),))
    assert report.ok and report.random_ops == []


def test_efficientnet_b0_gets_no_jumpout_and_its_summary_says_why():
    model = torchvision.models.efficientnet_b0(weights=None, num_classes=10)
    net = maskfx.transform(model, jumpout=True)
    summary = maskfx.summary(net)
    assert summary.count("jumpout") == 0 and not jumpouts(net)
    silu = sum(isinstance(m, nn.SiLU) for m in model.modules())
    assert rejected(net)["SiLU"].startswith(f"{silu} SiLU call sites (features.0.2, ")
    text = str(summary)
    assert "SiLU is not a rectifier: Jumpout's rate normalisation counts the positive units" in text
    assert sum("rejected" in line for line in text.splitlines()) == 2  # one line per kind: SiLU, Sigmoid
    assert any("no ReLU or ReLU6 call site" in n for n in summary.notes)
