"""K-of-N masks are clipped where the user asks, never process-wide: by ``clip_masks`` or by the
hook ``clip_masks_after_steps`` puts on one optimizer (``fit`` puts it on its own)."""
from unittest import mock

import torch
from torch.utils.data import TensorDataset

import maskfx
from maskfx.layers.kofn import ALL_ZERO_FLOOR, KOfNMasks
from maskfx.nn import MaskedConnection
from maskfx.train import Data, Phase, fit
from models import HandResidual

# One step at lr 5 from masks of ones: row 0 ends at -4 (all zero once clipped), row 1 at 6.
PUSH = torch.tensor([[1.0] * 4, [-1.0] * 4])
UNCLIPPED = torch.tensor([[-4.0] * 4, [6.0] * 4])
CLIPPED = torch.tensor([[ALL_ZERO_FLOOR] * 4, [1.0] * 4])


def pushed(masks: KOfNMasks, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The mask after one optimizer step that pushes both rows past their bounds."""
    optimizer.zero_grad()
    masks.mask.grad = PUSH.clone()
    optimizer.step()
    return masks.mask.detach().clone()


def test_the_hook_clips_its_optimizers_masks_and_no_other_optimizer_clips_anything():
    mine, other = KOfNMasks((2, 4), fan_in=2), KOfNMasks((2, 4), fan_in=2)
    mine_opt, other_opt = (torch.optim.SGD([m.mask], lr=5.0) for m in (mine, other))
    handle = maskfx.clip_masks_after_steps(mine_opt, mine)
    assert torch.equal(pushed(mine, mine_opt), CLIPPED)  # the all-zero row lifted, the other capped at 1
    assert torch.equal(pushed(other, other_opt), UNCLIPPED)  # an unrelated optimizer on another model
    handle.remove()
    with torch.no_grad():
        mine.mask.fill_(1.0)
    assert torch.equal(pushed(mine, mine_opt), UNCLIPPED)


def test_clip_masks_clips_every_mask_of_a_net_once_called():
    net = maskfx.transform(HandResidual(), maskconnect=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    masks = [m.mask for m in net.modules() if isinstance(m, MaskedConnection)]
    with torch.no_grad():
        for mask in masks:
            mask.copy_(torch.linspace(-2.0, 2.0, mask.numel()).reshape(mask.shape))
        masks[0].fill_(-1.0)
    maskfx.clip_masks(net)
    assert len(masks) > 1 and all(((m >= 0) & (m <= 1)).all() and m.max() == 1.0 for m in masks[1:])
    assert torch.equal(masks[0], torch.full_like(masks[0], ALL_ZERO_FLOOR))


def test_fit_clips_the_masks_after_its_steps():
    """Top-k sampling clips nothing itself, so masks stepped at a huge lr leave [0, 1] unless ``fit``
    clips them (shown by taking its hook away)."""
    train = TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
    data, phases = Data(train, train, 4, (3, 8, 8)), [Phase(1, lr=0.01, mask_lr=1e4)]

    def masks_after_fit() -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = maskfx.transform(HandResidual(), maskconnect=maskfx.MaskConnectConfig(fan_in=2, sampling="top-k"),
                               example_inputs=(torch.randn(2, 3, 8, 8),))
        fit(net, data, phases, device=torch.device("cpu"), batch_size=8, evaluate=False, amp=False)
        return [m.mask.detach() for m in net.modules() if isinstance(m, MaskedConnection)]

    assert all(((m >= 0) & (m <= 1)).all() for m in masks_after_fit())
    with mock.patch("maskfx.train.fit.clip_masks_after_steps"):
        assert not all(((m >= 0) & (m <= 1)).all() for m in masks_after_fit())
