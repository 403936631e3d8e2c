"""JumpoutConfig.placement: after every ReLU, or only in place of the model's Dropouts after a ReLU."""
import pytest
import torch
import torch.nn.functional as F
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
