"""One meaning per collapse mode, held technique by technique (``maskfx.collapse``'s docstring):
"expected" is the eval function with every unit the structure learns over kept (the original's
parameter count), "prune" also removes what the learned structure leaves unread; both are the eval
function once the structure is frozen. The two stated exceptions: MaskConnect removes the blocks
nobody reads in both modes, and GateConnect's chains lower to plain convolutions with BatchNorm
folded in (fewer parameters; "expected" keeps every branch)."""
import pytest
import torch
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.nn import BlockoutClusters, BranchGates, MaskedConnection
from maskfx.techniques.channels.layers import ChannelGate
from models import MLPHead, calibrated
from structure import random_logits
from tiny_models import resnet


def _uniform_masks(layer_type):
    def randomise(net: torch.nn.Module, generator: torch.Generator) -> None:
        for layer in (m for m in net.modules() if isinstance(m, layer_type)):
            layer.mask.copy_(torch.rand(layer.mask.shape, generator=generator))
    return randomise


def _read_past_the_first_blocks(net: torch.nn.Module, generator: torch.Generator) -> None:
    """The last block reads the chain input and the middle one the first: the first two are unread."""
    first, *_, last = (m for m in net.modules() if isinstance(m, MaskedConnection))
    for layer, source in ((first, -1), (last, 0)):
        layer.mask.zero_()
        layer.mask[source] = 1.0


def _random_clusters(net: torch.nn.Module, generator: torch.Generator) -> None:
    random_logits(next(m for m in net.modules() if isinstance(m, BlockoutClusters)), 2.0)


def _random_gates(net: torch.nn.Module, generator: torch.Generator) -> None:
    for gate in (m for m in net.modules() if isinstance(m, ChannelGate)):
        gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=generator) * 3)


def _small_resnext() -> torch.nn.Module:
    return calibrated(ResNet(Bottleneck, [2, 2, 2, 2], groups=8, width_per_group=4, num_classes=10), (8, 3, 32, 32))


# technique -> (model, input shape, its config, how to give it a random learned structure)
CASES = {
    "jumpout": (lambda: calibrated(resnet(), (8, 3, 16, 16)), (2, 3, 16, 16), True, None),
    "blockout": (lambda: MLPHead().eval(), (2, 3, 8, 8), maskfx.BlockoutConfig(clusters=3, min_clusters=0),
                 _random_clusters),
    "maskconnect": (lambda: calibrated(resnet(), (8, 3, 16, 16)), (2, 3, 16, 16),
                    maskfx.MaskConnectConfig(fan_in=1), _read_past_the_first_blocks),
    "gateconnect": (_small_resnext, (2, 3, 32, 32), maskfx.GateConnectConfig(fan_in=2), _uniform_masks(BranchGates)),
    "channels": (lambda: calibrated(resnet(), (8, 3, 16, 16)), (2, 3, 16, 16), maskfx.ChannelConfig(round_to=1),
                 _random_gates),
}


@pytest.mark.parametrize("technique", list(CASES))
def test_each_mode_means_one_thing(technique):
    build, shape, config, randomise = CASES[technique]
    torch.manual_seed(0)
    x = torch.randn(shape)
    net = maskfx.transform(build(), example_inputs=(x,), **{technique: config}).eval()
    if randomise is not None:
        with torch.no_grad():
            randomise(net, torch.Generator().manual_seed(0))
    maskfx.freeze(net)
    original = maskfx.summary(net).params_original
    expected, pruned = (maskfx.summary(maskfx.collapse(net, mode, example_inputs=(x,))).collapse
                        for mode in ("expected", "prune"))
    assert expected.exact and pruned.exact  # frozen structure: both are the eval function
    if technique == "maskconnect":  # the stated exception: unread blocks go in both modes
        assert expected.after.parameters == pruned.after.parameters < original
    elif technique == "jumpout":  # nothing learned, nothing to prune
        assert expected.after.parameters == pruned.after.parameters == original
    elif technique == "gateconnect":  # the stated exception: BatchNorm folds in; "expected" keeps every branch
        kept = {mode: [(kept, branches) for chain in report.technique(technique).facts.chains
                       for _, kept, branches in chain.modules] for mode, report in (("expected", expected),
                                                                                   ("prune", pruned))}
        assert all(k == b for k, b in kept["expected"]) and any(k < b for k, b in kept["prune"])
        assert pruned.after.parameters < expected.after.parameters
    else:
        assert expected.after.parameters == original
        assert pruned.after.parameters < expected.after.parameters
