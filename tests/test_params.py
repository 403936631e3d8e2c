"""param_groups: structure parameters get their own group wherever they are registered."""
import torch

import maskfx
from maskfx.nn import MaskedConnection
from models import HandResidual


def group_ids(groups):
    return {g["name"]: {id(p) for p in g["params"]} for g in groups}


def test_a_bare_maskfx_layer_puts_its_mask_in_the_structure_group():
    layer = MaskedConnection([(4, (1, 1))] * 3, fan_in=2)
    groups = group_ids(maskfx.param_groups(layer, lr=0.1, mask_lr=0.3))
    assert groups["structure"] == {id(layer.mask)}
    assert id(layer.mask) not in groups["weights"]


def test_structure_group_has_mask_lr_and_no_weight_decay():
    net = maskfx.transform(HandResidual(), maskconnect=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    groups = {g["name"]: g for g in maskfx.param_groups(net, lr=0.1, mask_lr=0.3, weight_decay=1e-4)}
    masks = [m.mask for m in net.modules() if isinstance(m, MaskedConnection)]
    assert masks and {id(p) for p in groups["structure"]["params"]} == {id(p) for p in masks}
    assert groups["structure"]["lr"] == 0.3 and groups["structure"]["weight_decay"] == 0.0
    assert not {id(p) for p in masks} & {id(p) for p in groups["weights"]["params"]}
