"""``maskfx.recalibrate``: BatchNorm statistics recomputed for the eval function, exactly."""
import copy

import pytest
import torch
from torch import nn

import maskfx


def conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def batch_statistics(model: nn.Sequential, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The BatchNorm input's per-channel mean and unbiased variance, computed by hand."""
    with torch.no_grad():
        features = model[:3].eval()(images)
    return features.mean((0, 2, 3)), features.transpose(0, 1).flatten(1).var(1, unbiased=True)


def test_statistics_are_those_of_the_data_and_settings_are_restored():
    model, images = conv_bn(), torch.randn(64, 3, 8, 8) * 3 + 1
    norm = model[3]
    norm.running_mean.fill_(100.0)
    norm.running_var.fill_(1e-3)  # stale, far from the data
    model.train()
    maskfx.recalibrate(model, [(images, torch.zeros(64))])
    mean, var = batch_statistics(model, images)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-5, atol=1e-5)
    assert norm.momentum == 0.1 and model.training and norm.training


def test_batches_limits_the_average_to_the_first_batches():
    model, first, second = conv_bn(), torch.randn(32, 3, 8, 8), torch.randn(32, 3, 8, 8) + 5
    maskfx.recalibrate(model, [first, second], batches=1)
    torch.testing.assert_close(model[3].running_mean, batch_statistics(model, first)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        maskfx.recalibrate(model, [first], batches=0)


def test_jumpout_is_the_identity_while_statistics_are_gathered():
    images = torch.randn(64, 3, 8, 8)
    plain = conv_bn()
    net = maskfx.transform(copy.deepcopy(plain), jumpout=maskfx.JumpoutConfig(sigma=0.5))
    norm = net.get_submodule("3")
    norm.reset_running_stats()
    norm.momentum = None
    with torch.no_grad():
        net.train()(images)  # what the statistics would be with Jumpout on: its noise shifts them
    noisy = norm.running_var.clone()
    norm.momentum = 0.1
    maskfx.recalibrate(net, [images])
    maskfx.recalibrate(plain, [images])
    torch.testing.assert_close(norm.running_var, plain[3].running_var, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(noisy, plain[3].running_var, rtol=0.05)  # the noise did shift them
    assert net.training
