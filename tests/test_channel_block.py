"""round_to's default: the channel block of the kernels that will run the model, resolved on the
machine that transforms and kept with the config."""
import torch
from torch import nn

import maskfx
from maskfx.techniques.channels import config
from maskfx.train import Checkpoint, Recipe, load_checkpoint, save_checkpoint


def _machine(monkeypatch, capability: str, cuda: bool = False) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def test_the_default_multiple_is_onnx_runtimes_channel_block(monkeypatch):
    for capability, cuda, block in (("AVX512", False, 16), ("AVX2", False, 8), ("DEFAULT", False, 8),
                                    ("AVX512", True, 8)):
        _machine(monkeypatch, capability, cuda)
        assert config.deployment_channel_block() == block
        assert config.ort_cpu_channel_block() == (16 if capability == "AVX512" else 8)
        assert maskfx.ChannelConfig().round_to == block
        assert maskfx.ChannelConfig(round_to=4).round_to == 4


def test_a_checkpoint_keeps_the_multiple_it_was_transformed_with(monkeypatch, tmp_path):
    _machine(monkeypatch, "AVX2")
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 4))
    net = maskfx.transform(model, channels=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    recipe = Recipe.of(net, "unused:model", 4, (3, 8, 8))
    path = save_checkpoint(tmp_path / "c.pt", Checkpoint(recipe, net.state_dict()))
    _machine(monkeypatch, "AVX512")
    saved = load_checkpoint(path)
    assert saved.recipe.transform["channels"]["round_to"] == 8


def test_a_group_narrower_than_the_block_is_its_own_step():
    from maskfx.techniques.channels.layers import ChannelGate, ChannelSpace
    from maskfx.techniques.channels.rewrite import _step
    step = lambda unit, round_to: _step(ChannelGate(ChannelSpace("s", channels=unit * 8, unit=unit)), round_to)
    assert step(4, 16) == 4  # a ResNeXt branch of 4 channels: unblockable whatever the width, so one at a time
    assert step(24, 16) == 24  # per-group width off the block: the same
    assert step(32, 16) == 32 and step(1, 16) == 16 and step(1, 8) == 8  # blockable groups; depthwise; plain
    assert step(16, 8) == 16
