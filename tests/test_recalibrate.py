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


def test_fit_recalibrates_after_its_last_epoch_and_saves_that(tmp_path):
    """``fit(recalibrate_batches=N)`` ends with the statistics ``recalibrate`` gives over N seeded
    training batches, in the returned net and in the last checkpoint, and records the accuracy."""
    from torch.utils.data import DataLoader

    from maskfx.train import Phase, Recipe, fit, load_checkpoint, load_data

    data = load_data("digits", 8, limit=256)
    nets = [maskfx.transform(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)),
                             jumpout=True) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    recipe = Recipe("test", 10, (3, 8, 8))
    history = fit(nets[0], data, [Phase(1, lr=0.05)], device=torch.device("cpu"), recalibrate_batches=3,
                  recipe=recipe, checkpoint=tmp_path / "c.pt")
    fit(nets[1], data, [Phase(1, lr=0.05)], device=torch.device("cpu"))
    norm = nets[1].get_submodule("1")
    trained_mean = norm.running_mean.clone()
    maskfx.recalibrate(nets[1], DataLoader(data.train, batch_size=64, shuffle=True,
                                           generator=torch.Generator().manual_seed(0)), batches=3)
    assert not torch.allclose(trained_mean, norm.running_mean)  # training's statistics were not the eval ones
    torch.testing.assert_close(nets[0].get_submodule("1").running_mean, norm.running_mean)
    torch.testing.assert_close(load_checkpoint(tmp_path / "c.pt").state_dict["1.running_mean"], norm.running_mean)
    assert 0.0 <= history[-1]["recalibrated_test_accuracy"] <= 1.0
    with pytest.raises(maskfx.UserError, match="recalibrate_batches"):
        fit(nets[1], data, [Phase(1, lr=0.05)], device=torch.device("cpu"), recalibrate_batches=-1)
