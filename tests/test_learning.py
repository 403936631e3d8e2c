"""Learned connectivity finds a planted answer: the mask/gate update the papers prescribe
(BinaryConnect gradients on real masks, K-of-N sampling, clipping) recovers the one right input."""
import torch

import maskfx
from maskfx.nn import BranchGates, MaskedConnection


def test_maskconnect_mask_finds_the_planted_input():
    torch.manual_seed(0)
    candidates = [torch.randn(16, 8, 4, 4) for _ in range(5)]
    target = candidates[2]  # the block should read candidate 2 alone
    layer = MaskedConnection([(8, (1, 1))] * 5, fan_in=1).train()
    optimizer = torch.optim.SGD([layer.mask], lr=0.02)
    maskfx.clip_masks_after_steps(optimizer, layer)
    for _ in range(150):
        optimizer.zero_grad()
        (layer(*candidates) - target).square().mean().backward()
        optimizer.step()
    assert layer.active().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert layer.mask[2] - layer.mask[[0, 1, 3, 4]].max() > 0.5  # by a wide margin, not a tie-break


def test_gateconnect_gates_find_each_branchs_planted_source():
    torch.manual_seed(1)
    u = torch.randn(16, 6, 4, 5, 5)  # 6 source branches
    planted = torch.tensor([[0, 3], [1, 4], [2, 5], [0, 5]])  # each of 4 targets reads 2 of 6
    target = torch.relu(u[:, planted].mean(2))
    gates = BranchGates(4, 6, fan_in=2).train()
    optimizer = torch.optim.SGD([gates.mask], lr=0.05)
    maskfx.clip_masks_after_steps(optimizer, gates)
    for _ in range(300):
        optimizer.zero_grad()
        (gates(u) - target).square().mean().backward()
        optimizer.step()
    expected = torch.zeros(4, 6).scatter_(1, planted, 1.0)
    assert torch.equal(gates.active(), expected)
