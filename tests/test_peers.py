"""``maskfx.peers.torch_pruning``: Torch-Pruning's L2-magnitude channel pruning to a MACs target,
the iterative walk (the demo, the budget benchmark) and the bisection (width-latency, peer
benchmarks): at or under / from above the target, the output shape and the head kept, the
caller's model untouched, and a clear UserError without torch-pruning."""
import sys

import pytest
import torch
import torchvision
from torch import nn

from maskfx.errors import UserError
from maskfx.peers import torch_pruning as peer
from maskfx.report import count_macs

RESNET18_32PX_MACS = 37_016_576  # one 32x32 image, 10-class head


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def _head_kept(pruned: nn.Module, model: nn.Module) -> None:
    """The classifier's outputs untouched (its inputs narrow with the stream that feeds it)."""
    assert pruned.fc.out_features == model.fc.out_features == 10 and pruned.fc is not model.fc
    assert torch.equal(pruned.fc.bias, model.fc.bias)
    assert pruned.fc.in_features < model.fc.in_features == 512


def test_the_iterative_walk_lands_at_or_under_each_target(resnet18):
    example = torch.randn(2, 3, 32, 32)
    assert count_macs(resnet18, example) == RESNET18_32PX_MACS
    weights = {k: v.clone() for k, v in resnet18.state_dict().items()}
    targets = [int(0.5 * RESNET18_32PX_MACS), int(0.75 * RESNET18_32PX_MACS)]  # out of order on purpose
    half, most = peer.pruned_iteratively(resnet18, example, targets, round_to=8, steps=18)
    assert count_macs(most.model, example) == most.macs <= targets[1] < RESNET18_32PX_MACS
    assert count_macs(half.model, example) == half.macs <= targets[0] < most.macs
    assert 0 < most.steps < half.steps <= 18 and half.ratio == pytest.approx(peer.MAX_RATIO * half.steps / 18)
    assert all(m.out_channels % 8 == 0 for m in half.model.modules() if isinstance(m, nn.Conv2d))
    assert half.model(example).shape == resnet18(example).shape == (2, 10)
    _head_kept(half.model, resnet18)
    assert all(torch.equal(v, weights[k]) for k, v in resnet18.state_dict().items())  # the caller's model untouched
    assert resnet18.layer1[0].conv1.out_channels == 64


def test_the_walk_refuses_a_target_its_last_step_stays_above(resnet18):
    with pytest.raises(RuntimeError, match="reached ratio 0.1 above 1,000 MACs"):
        peer.pruned_iteratively(resnet18, torch.randn(1, 3, 32, 32), [1_000], steps=2, max_ratio=0.1)


def test_bisection_comes_to_the_target_from_above(resnet18):
    example = torch.randn(2, 3, 32, 32)
    target = RESNET18_32PX_MACS // 2
    got = peer.pruned_by_bisection(resnet18, example, target, round_to=None, steps=6)
    assert target <= got.macs == count_macs(got.model, example) <= 1.15 * target and 0 < got.ratio < 0.95
    assert got.model(example).shape == (2, 10)
    _head_kept(got.model, resnet18)
    unreachable = peer.pruned_by_bisection(resnet18, example, RESNET18_32PX_MACS + 1, steps=2)
    assert unreachable.model is not resnet18 and unreachable.macs == RESNET18_32PX_MACS and unreachable.ratio == 0.0


def test_the_head_is_the_last_linear_and_a_model_without_one_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert peer.head(model) is model[2]
    with pytest.raises(UserError, match="no nn.Linear"):
        peer.head(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_without_torch_pruning_it_says_how_to_install_it(monkeypatch, resnet18):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"pip install torch-pruning==1\.6\.1"):
        peer.pruned_iteratively(resnet18, torch.randn(1, 3, 32, 32), [RESNET18_32PX_MACS // 2])


def test_the_pinned_version_is_installed():
    assert peer.version() == peer.PINNED


class LoudButUnread(nn.Module):
    """16 channels between two convolutions: channels 8-15 have ten times the weights of 0-7 but
    the second convolution reads none of them (zero columns). L2 magnitude keeps the loud unread
    ones; Taylor importance (|weight x gradient|) sees that nothing downstream depends on them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            self.conv1.weight[8:] *= 10
            self.conv2.weight[:, 8:] = 0

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


@pytest.mark.parametrize("importance, unread_kept", [("l2", 8), ("taylor", 0)])
def test_taylor_importance_prunes_what_nothing_reads(importance, unread_kept):
    torch.manual_seed(0)
    model = LoudButUnread().eval()
    example = torch.randn(4, 3, 8, 8)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))) for _ in range(3)]
    (half,) = peer.pruned_iteratively(model, example, [int(0.3 * count_macs(model, example))], steps=10,
                                      max_ratio=0.5, importance=importance, batches=batches)
    assert half.model.conv1.out_channels == 8
    zero_columns = int((half.model.conv2.weight.abs().sum((0, 2, 3)) == 0).sum())
    assert zero_columns == unread_kept
    assert all(p.grad is None for p in half.model.parameters())


def test_taylor_importance_needs_batches_and_an_unknown_importance_is_refused(resnet18):
    with pytest.raises(UserError, match="needs batches"):
        peer.pruned_iteratively(resnet18, torch.randn(1, 3, 32, 32), [1], importance="taylor")
    with pytest.raises(UserError, match="importance must be one of"):
        peer.pruned_iteratively(resnet18, torch.randn(1, 3, 32, 32), [1], importance="random")
