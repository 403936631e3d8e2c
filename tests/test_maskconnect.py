"""MaskConnect: K-of-N sampling, BinaryConnect gradients, clipping, freeze, chains, pruning."""
import copy
import operator
from unittest import mock

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.data import TensorDataset

import maskfx
from maskfx.export.peepholes import apply_peepholes
from maskfx.graph.channel_pad import absorb_channel_pads, is_channel_pad
from maskfx.graph.surgery import finish
from maskfx.layers.adapt import adapt, pad_channels
from maskfx.layers.kofn import SWITCH_MARGIN
from maskfx.nn import MaskedConnection
from maskfx.train import Data, fit, maskconnect_recipe, preset
from models import HandResidual, TwoInputs


def decode(layer: MaskedConnection, n: int) -> list[int]:
    """Which candidates a forward used: candidate k is the constant 2**k, so the sum is a bitmask."""
    out = layer(*[torch.full((1, 1), float(2 ** k)) for k in range(n)])
    value = int(round(out.item()))
    return [k for k in range(n) if value >> k & 1]


def connection(n: int, fan_in: int) -> MaskedConnection:
    return MaskedConnection([(1, ())] * n, fan_in)


def test_exactly_k_distinct_candidates_per_training_forward():
    torch.manual_seed(0)
    layer = connection(6, 3).train()
    with torch.no_grad():
        layer.mask.copy_(torch.tensor([0.9, 0.05, 0.5, 0.0, 1.0, 0.3]))
    for _ in range(300):
        assert len(decode(layer, 6)) == 3
    assert connection(2, 5).fan_in == 2  # K = min(fan_in, candidates)


def test_k1_sampling_frequencies_follow_the_normalised_masks():
    torch.manual_seed(1)
    layer = connection(4, 1).train()
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    with torch.no_grad():
        layer.mask.copy_(probabilities)
    n = 20000
    counts = np.bincount([decode(layer, 4)[0] for _ in range(n)], minlength=4)
    standard_error = np.sqrt(probabilities.numpy() * (1 - probabilities.numpy()) / n)
    assert np.all(np.abs(counts / n - probabilities.numpy()) < 4 * standard_error)


def test_mask_gradient_is_the_inner_product_for_every_candidate():
    torch.manual_seed(2)
    shapes = [(2, 4, 8, 8), (2, 6, 8, 8), (2, 8, 4, 4)]  # subsampled and zero-padded, then identity
    layer = MaskedConnection([(8, (2, 2)), (8, (2, 2)), (8, (1, 1))], fan_in=1).train()
    ys = [torch.randn(s) for s in shapes]
    w = torch.randn(2, 8, 4, 4)
    (w * layer(*ys)).sum().backward()  # dL/dx = w
    for k, (y, (channels, strides)) in enumerate(zip(ys, layer.adapters)):
        assert layer.mask.grad[k].item() == pytest.approx((w * adapt(y, channels, strides)).sum().item(), rel=1e-5)
    assert adapt(ys[0], 8, (2, 2)).shape == (2, 8, 4, 4)


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_clipping_and_all_zero_guard_hold_after_optimizer_steps(optimizer):
    torch.manual_seed(3)
    layer = connection(4, 2).train()
    opt = optimizer(maskfx.param_groups(layer, lr=0.0, mask_lr=5.0))
    maskfx.clip_masks_after_steps(opt, layer)
    for direction in (1.0, -1.0, -1.0):
        opt.zero_grad()
        layer.mask.grad = torch.full((4,), direction)  # push every entry past a bound
        opt.step()
        assert ((layer.mask >= 0) & (layer.mask <= 1)).all() and layer.mask.sum() > 0


def test_freeze_is_deterministic_and_stops_learning():
    layer = connection(5, 2)
    with torch.no_grad():
        layer.mask.copy_(torch.tensor([0.5, 0.9, 0.5, 0.2, 0.5]))
    twins = [copy.deepcopy(layer) for _ in range(3)]
    for twin in twins:
        twin.freeze()
    assert all(torch.equal(t.frozen_mask, torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])) for t in twins)  # tie: later
    frozen = twins[0].train()
    assert {tuple(decode(frozen, 5)) for _ in range(50)} == {(1, 4)}
    assert not frozen.mask.requires_grad and maskfx.param_groups(frozen, lr=0.1)[-1]["name"] == "weights"


def test_untrained_uniform_masks_evaluate_as_the_original_chain():
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = resnet_inputs()[0]
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1), example_inputs=(x,)).eval()
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)


def test_eval_uses_the_top_k_before_freezing():
    layer = connection(4, 2).eval()
    with torch.no_grad():
        layer.mask.copy_(torch.tensor([0.1, 0.7, 0.2, 0.9]))
    assert decode(layer, 4) == [1, 3]


def resnet_inputs(size=64):
    return (torch.randn(2, 3, size, size),)


def test_chains_cover_every_block_of_torchvision_resnets():
    for name, blocks in (("resnet18", 8), ("resnet34", 16), ("resnet50", 16)):
        model = torchvision.models.get_model(name, num_classes=10)
        net = maskfx.transform(model, maskconnect=True, example_inputs=resnet_inputs())
        summary = maskfx.summary(net)
        assert summary.count("maskconnect") == blocks - 1, name
        assert [s.location for s in summary.sites][:2] == ["layer1.1", "layer1.2" if blocks == 16 else "layer2.0"]


def test_hand_written_residual_chain_and_non_residual_adds_left_alone():
    net = maskfx.transform(HandResidual(), maskconnect=maskfx.MaskConnectConfig(fan_in=2),
                           example_inputs=(torch.randn(2, 3, 8, 8),))
    layers = [m for m in net.modules() if isinstance(m, MaskedConnection)]
    assert [len(m.adapters) for m in layers] == [2, 3, 4]  # blocks 2..4 of one chain of 4
    assert "offset" in net.code and "mean" in net.code  # the broadcasting adds are still there
    with pytest.warns(UserWarning, match="maskconnect not applied"):
        two = maskfx.transform(TwoInputs(), maskconnect=True, example_inputs=(torch.randn(2, 4), torch.randn(2, 4)))
    assert "maskconnect not applied" in str(maskfx.summary(two))


def test_previous_init_at_k1_reproduces_the_original_network():
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = resnet_inputs()[0]
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1, init="previous"),
                           example_inputs=(x,)).eval()
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "hand"])
def test_train_freeze_collapse_and_export(name, tmp_path):
    torch.manual_seed(4)
    model = HandResidual() if name == "hand" else torchvision.models.get_model(name, num_classes=4)
    x = torch.randn(4, 3, 32, 32)
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(2, "uniform", "multinomial"),
                           example_inputs=(x,))
    masks = [m.mask for m in net.modules() if isinstance(m, MaskedConnection)]
    before = [m.detach().clone() for m in masks]
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.01, mask_lr=0.3, weight_decay=1e-4), momentum=0.9)
    maskfx.clip_masks_after_steps(opt, net)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net.train()(x), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, masks))
    assert all(((m >= 0) & (m <= 1)).all() for m in masks)
    maskfx.freeze(net)
    F.cross_entropy(net.train()(x), torch.tensor([0, 1, 2, 3])).backward()  # fine-tuning step works
    net.eval()
    deploy = maskfx.collapse(net)
    assert not any(isinstance(m, MaskedConnection) for m in deploy.modules())
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net(x), rtol=1e-5, atol=1e-5)
    _, report = maskfx.export_onnx(deploy, tmp_path / f"{name}.onnx", example_inputs=(x,))
    assert report.ok


def test_unused_blocks_are_removed_and_outputs_unchanged():
    torch.manual_seed(5)
    model = torchvision.models.resnet18(num_classes=10)
    x = resnet_inputs()[0]
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1), example_inputs=(x,)).eval()
    layers = {s.location: net.get_submodule(s.module) for s in maskfx.summary(net).sites}
    with torch.no_grad():
        for location, layer in layers.items():
            layer.mask.zero_()
            layer.mask[-1] = 1.0  # the previous block ...
        # ... except: layer2.0 reads the chain input and layer3.0 reads layer2.0, so layer1.0,
        # layer1.1, layer2.1 (no reader) go; layer1.0 and layer1.1 then feed nobody either.
        layers["layer2.0"].mask.zero_(); layers["layer2.0"].mask[0] = 1.0
        layers["layer3.0"].mask.zero_(); layers["layer3.0"].mask[3] = 1.0
    deploy = maskfx.collapse(net)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net(x), rtol=1e-5, atol=1e-5)
    code = deploy.code
    assert "layer1_0_conv1" not in code and "layer1_1_conv1" not in code and "layer2_1_conv1" not in code
    assert "layer2_0_conv1" in code and "layer3_0_conv1" in code
    removed = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("layer1.", "layer2.1.")))
    assert sum(p.numel() for p in deploy.parameters()) == sum(p.numel() for p in model.parameters()) - removed
    facts = maskfx.summary(deploy).collapse.technique("maskconnect").facts
    assert facts.removed_blocks == ("layer1.0", "layer1.1", "layer2.1")
    wiring = dict(facts.connections)
    assert wiring["layer2.0"] == ("chain input",) and wiring["layer3.0"] == ("layer2.0",)


def test_maskconnect_needs_example_inputs_and_validates_its_config():
    with pytest.raises(ValueError, match="example_inputs"):
        maskfx.transform(HandResidual(), maskconnect=True)
    with pytest.raises(ValueError, match="fan_in"):
        maskfx.MaskConnectConfig(fan_in=0)
    with pytest.raises(ValueError, match="init"):
        maskfx.MaskConnectConfig(init="random")


def test_phase_recipe_runs_joint_then_frozen_phases():
    phases = maskconnect_recipe(lr=0.05, mask_lr=0.2, epochs=(1, 1, 1, 0))
    assert [(p.lr, p.mask_lr, p.freeze_first) for p in phases] == [
        (0.05, 0.2, False), (0.05, 0.0, True), (0.005, 0.0, False), (0.0005, 0.0, False)]
    net = maskfx.transform(HandResidual(), maskconnect=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    train = TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
    history = fit(net, Data(train, train, 4, (3, 8, 8)), phases, device=torch.device("cpu"), batch_size=8,
                  evaluate=False)
    losses = [record["loss"] for record in history]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert all(m.frozen for m in net.modules() if isinstance(m, MaskedConnection))
    with pytest.raises(ValueError, match="epochs"):
        maskconnect_recipe(epochs=(1, 2))


def test_presets_are_the_papers_recipes():
    from maskfx.train import PRESETS
    phases = lambda name: [(p.epochs, p.lr, p.mask_lr, p.freeze_first) for p in preset(name).phases]
    resnet = preset("maskconnect-resnet")  # MaskConnect A.6, CIFAR-100 ResNet
    assert phases("maskconnect-resnet") == [(30, 0.1, 0.3, False), (30, 0.1, 0.0, True), (10, 0.01, 0.0, False),
                                            (10, 0.001, 0.0, False)]
    assert (resnet.batch_size, resnet.momentum, resnet.weight_decay, resnet.fan_in) == (128, 0.9, 1e-4, 10)
    assert phases("maskconnect-resnet-imagenet") == [(30, 0.1, 0.3, False), (30, 0.1, 0.0, True),
                                                     (30, 0.01, 0.0, False), (30, 0.001, 0.0, False)]
    assert phases("gateconnect") == [(30, 0.1, 0.2, False), (30, 0.1, 0.0, True), (30, 0.01, 0.0, False),
                                     (30, 0.001, 0.0, False)]  # GateConnect E.2: gates at 0.2, 4 x 30 epochs
    assert phases("gateconnect-cifar") == [(120, 0.1, 0.2, False), (100, 0.1, 0.0, True), (50, 0.01, 0.0, False),
                                           (50, 0.001, 0.0, False)]
    assert preset("maskconnect-resnext") is preset("gateconnect-cifar") and preset("gateconnect-cifar").weight_decay == 5e-4
    assert preset("maskconnect-resnet").phases == tuple(maskconnect_recipe())
    with pytest.raises(ValueError, match="maskconnect-resnet-imagenet"):
        preset("maskconnect-resnet50")
    assert len(PRESETS) == 6
    from argparse import Namespace
    from maskfx.cli.train import phases as cli_phases, sgd_settings
    args = Namespace(preset="gateconnect-cifar", batch_size=64)
    assert cli_phases(args, transformed=True) == list(preset("gateconnect-cifar").phases)
    assert not any(p.freeze_first or p.mask_lr for p in cli_phases(args, transformed=False))  # a plain model trains on
    assert sgd_settings(args) == {"batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4}


def test_masks_take_plain_gradient_steps_while_weights_and_clusters_keep_momentum():
    from maskfx.nn import BlockoutClusters
    net = maskfx.transform(HandResidual(), maskconnect=maskfx.MaskConnectConfig(fan_in=2), blockout=True,
                           example_inputs=(torch.randn(2, 3, 8, 8),))
    groups = maskfx.param_groups(net, lr=0.01, mask_lr=0.01)
    assert [g["name"] for g in groups] == ["weights", "structure", "clusters"]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    mask = next(m.mask for m in net.modules() if isinstance(m, MaskedConnection))
    logits = next(m.logits[0] for m in net.modules() if isinstance(m, BlockoutClusters))
    weight = net.get_submodule("stem").weight
    with torch.no_grad():
        mask.fill_(0.5)
    steps = []
    for _ in range(2):  # the same gradient twice: momentum makes the second step 1.9x the first
        before = [p.detach().clone() for p in (mask, logits, weight)]
        for p in (mask, logits, weight):
            p.grad = torch.full_like(p, 0.5)
        opt.step()
        steps.append([(b - p.detach()).abs().max().item() for b, p in zip(before, (mask, logits, weight))])
    assert steps[1][0] == pytest.approx(steps[0][0]) and steps[0][0] == pytest.approx(0.005)  # m - lr * g
    assert steps[1][1] == pytest.approx(1.9 * steps[0][1]) and steps[1][2] == pytest.approx(1.9 * steps[0][2])
    legacy = {g["name"]: g for g in maskfx.param_groups(net, lr=0.01, mask_momentum=None)}
    assert "momentum" not in legacy["structure"]  # None: the optimizer's momentum


def test_frozen_state_survives_a_state_dict_round_trip():
    x = torch.randn(2, 3, 8, 8)
    config = maskfx.MaskConnectConfig(fan_in=1)
    source = maskfx.transform(HandResidual(), maskconnect=config, example_inputs=(x,))
    for m in source.modules():
        if isinstance(m, MaskedConnection):
            with torch.no_grad():
                m.mask.copy_(torch.rand(m.mask.shape))
    maskfx.freeze(source)
    target = maskfx.transform(HandResidual(), maskconnect=config, example_inputs=(x,))
    target.load_state_dict(source.state_dict())
    for a, b in zip(*[[m for m in net.modules() if isinstance(m, MaskedConnection)] for net in (source, target)]):
        assert torch.equal(a.active(), b.active()) and not b.mask.requires_grad
    torch.testing.assert_close(target.train()(x), source.train()(x))  # frozen: no sampling either side


def test_candidate_gradients_match_the_dense_masked_sum():
    torch.manual_seed(6)
    shapes = [(2, 4, 8, 8), (2, 6, 8, 8), (2, 8, 4, 4)]
    adapters = [(8, (2, 2)), (8, (2, 2)), (8, (1, 1))]
    layer = MaskedConnection(adapters, fan_in=2).train()
    ys = [torch.randn(s, requires_grad=True) for s in shapes]
    w = torch.randn(2, 8, 4, 4)
    torch.manual_seed(7)
    (w * layer(*ys)).sum().backward()
    torch.manual_seed(7)
    binary = layer.sample()  # the same draw
    dense = [y.detach().clone().requires_grad_() for y in ys]
    (w * sum(binary[k] * adapt(y, *a) for k, (y, a) in enumerate(zip(dense, adapters)))).sum().backward()
    for k, (sparse, reference) in enumerate(zip(ys, dense)):
        if binary[k]:
            torch.testing.assert_close(sparse.grad, reference.grad)
        else:
            assert sparse.grad is None or not sparse.grad.any()


@pytest.mark.parametrize("optimizer, lr", [(torch.optim.SGD, 5.0), (torch.optim.SGD, 1e4), (torch.optim.Adam, 5.0),
                                           (torch.optim.Adam, 1e4)])
def test_no_mask_row_is_ever_all_zero_after_an_optimizer_step(optimizer, lr):
    """Regression: the all-zero guard summed the whole tensor, so one row of a (T, N) mask could be
    clipped to zeros while the other rows kept the sum positive."""
    from maskfx.layers.kofn import KOfNMasks
    torch.manual_seed(8)
    masks = KOfNMasks((3, 4), fan_in=2)
    opt = optimizer([masks.mask], lr=lr)  # not param_groups: this test must not depend on its grouping
    maskfx.clip_masks_after_steps(opt, masks)
    for step in range(6):
        opt.zero_grad()
        grad = torch.full((3, 4), 1.0)  # push rows 0 and 1 below zero ...
        grad[2] = -1.0                   # ... while row 2 stays positive, so the tensor never sums to zero
        grad[1, step % 4] = -1.0         # row 1 keeps one entry moving up, then down again
        masks.mask.grad = grad
        opt.step()
        assert ((masks.mask >= 0) & (masks.mask <= 1)).all()
        assert (masks.mask.sum(-1) > 0).all(), masks.mask


# Target (2, 8, 4, 4); candidates: two full width, one narrow, one narrow and strided, one full and strided.
KERNEL_SHAPES = [(2, 8, 4, 4), (2, 8, 4, 4), (2, 6, 4, 4), (2, 4, 8, 8), (2, 8, 8, 8)]
KERNEL_ADAPTERS = [(8, (1, 1)), (8, (1, 1)), (8, (1, 1)), (8, (2, 2)), (8, (2, 2))]


@pytest.mark.parametrize("active", [[0, 1, 2, 3, 4], [0], [3], [2, 3], [4, 2], [0, 2], [1, 0, 4]])
@pytest.mark.parametrize("learn_mask", [True, False])
@pytest.mark.parametrize("strided_grad", [False, True])
def test_masked_sum_kernel_matches_the_straightforward_formula(active, learn_mask, strided_grad):
    """Every path of the in-place sum (two full-width terms, one, none; padded and subsampled
    adapters) and of its backward (fused dot or product, views or scatter; a non-contiguous
    incoming gradient) against ``sum_k m_k * adapt(y_k)`` under autograd."""
    from maskfx.techniques.maskconnect.layers import _MaskedSum
    torch.manual_seed(9)
    ys = [torch.randn(s, requires_grad=True) for s in KERNEL_SHAPES]
    mask = torch.rand(len(ys), requires_grad=learn_mask)
    binary = torch.zeros(len(ys)).index_fill_(0, torch.tensor(active), 1.0)
    w = torch.randn(2, 8, 4, 4)

    def loss(out):
        return (w.transpose(2, 3) * out.transpose(2, 3)).sum() if strided_grad else (w * out).sum()

    out = _MaskedSum.apply(mask if learn_mask else None, active, KERNEL_ADAPTERS, *ys)
    loss(out).backward()
    dense_ys = [y.detach().clone().requires_grad_() for y in ys]
    dense_mask = mask.detach().clone().requires_grad_()
    gates = binary + (dense_mask - dense_mask.detach())
    reference = sum(gates[k] * adapt(y, *a) for k, (y, a) in enumerate(zip(dense_ys, KERNEL_ADAPTERS)))
    loss(reference).backward()
    torch.testing.assert_close(out, reference)
    if learn_mask:
        torch.testing.assert_close(mask.grad, dense_mask.grad)
    for k, (y, dense) in enumerate(zip(ys, dense_ys)):
        if k in active:
            torch.testing.assert_close(y.grad, dense.grad)
        else:
            assert y.grad is None


def test_frozen_and_eval_forwards_learn_no_mask():
    torch.manual_seed(10)
    layer = MaskedConnection(KERNEL_ADAPTERS, fan_in=2)
    ys = [torch.randn(s, requires_grad=True) for s in KERNEL_SHAPES]
    layer.eval()(*ys).sum().backward()
    assert layer.mask.grad is None
    layer.freeze()
    frozen = layer.train()(*ys)
    torch.testing.assert_close(frozen, sum(adapt(ys[k], *KERNEL_ADAPTERS[k]) for k in layer._frozen_indices))


def test_top_k_sampling_trains_on_the_current_top_k_and_still_learns_every_mask():
    torch.manual_seed(0)
    layer = MaskedConnection([(1, ())] * 5, fan_in=2, sampling="top-k").train()
    with torch.no_grad():
        layer.mask.copy_(torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3]))
    assert all(decode(layer, 5) == [0, 2] for _ in range(20))  # no draws: always the top 2
    ys = [torch.randn(3, 4, requires_grad=True) for _ in range(5)]
    g = torch.randn(3, 4)
    (layer(*ys) * g).sum().backward()
    expected = torch.stack([(g * y).sum() for y in ys])  # BinaryConnect: every entry, drawn or not
    torch.testing.assert_close(layer.mask.grad, expected)
    with torch.no_grad():
        layer.mask[3] = 1.0  # a learned entry passes a selected one, but by less than the margin
    assert decode(layer, 5) == [0, 2] and layer.eval().active().tolist() == [1, 0, 1, 0, 0]
    with torch.no_grad():
        layer.mask[2] = 1.0 - SWITCH_MARGIN - 0.01  # now by more: the wiring follows, eval with it
    assert decode(layer.train(), 5) == [0, 3] and layer.eval().active().tolist() == [1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="sampling"):
        maskfx.MaskConnectConfig(sampling="greedy")


def test_top_k_from_the_previous_start_trains_the_original_network():
    """On a trained network, ``init="previous", sampling="top-k"`` trains on the original chain
    (every train-mode forward is the original's) while every mask entry still gets its gradient."""
    torch.manual_seed(0)
    model, x = HandResidual(), torch.randn(4, 3, 8, 8)
    config = maskfx.MaskConnectConfig(fan_in=1, init="previous", sampling="top-k")
    net = maskfx.transform(copy.deepcopy(model), maskconnect=config, example_inputs=(x,)).train()
    for _ in range(5):  # BatchNorm in train mode: batch statistics, as the original computes them
        torch.testing.assert_close(net(x), model.train()(x), rtol=0, atol=1e-6)
    net(x).sum().backward()
    masks = [m.mask for m in net.modules() if isinstance(m, MaskedConnection)]
    assert masks and all(m.grad is not None and (m.grad != 0).sum() > 1 for m in masks)


def _switches(layer: MaskedConnection, candidates, target, steps: int = 60) -> tuple[int, list[int]]:
    """Train ``layer``'s mask towards ``target``; how often its training wiring changed, and where it ends."""
    optimizer = torch.optim.SGD([layer.mask], lr=0.1)
    maskfx.clip_masks_after_steps(optimizer, layer)
    wirings = []
    for _ in range(steps):
        optimizer.zero_grad()
        (layer(*candidates) - target).square().mean().backward()
        optimizer.step()
        wirings.append(layer.selected.tolist())
    return sum(a != b for a, b in zip(wirings, wirings[1:])), layer.eval().active().nonzero().flatten().tolist()


def test_top_k_switches_stick_instead_of_flipping_back():
    """K = 1 between two inputs whose mean is the target: whichever is read, the gradient favours the
    other. Without the margin the wiring flips at almost every step (as it did on a trained
    resnet18); with it, it switches rarely; and a candidate that really is the answer still takes over."""
    torch.manual_seed(0)
    candidates = [torch.randn(16, 8) for _ in range(3)]
    layer = MaskedConnection([(8, ())] * 3, fan_in=1, init="previous", sampling="top-k").train()
    flips, _ = _switches(layer, candidates, (candidates[1] + candidates[2]) / 2)
    assert flips <= 15
    with mock.patch("maskfx.layers.kofn.SWITCH_MARGIN", 0.0):
        layer = MaskedConnection([(8, ())] * 3, fan_in=1, init="previous", sampling="top-k").train()
        flips_without, _ = _switches(layer, candidates, (candidates[1] + candidates[2]) / 2)
    assert flips_without >= 40  # of 59 steps
    layer = MaskedConnection([(8, ())] * 3, fan_in=1, init="previous", sampling="top-k").train()
    flips, ends = _switches(layer, candidates, candidates[0])
    assert flips == 1 and ends == [0]
    layer.freeze()
    assert layer.frozen_mask.tolist() == [1, 0, 0]


def test_a_state_dict_from_before_the_selection_loads_as_its_top_k():
    layer = MaskedConnection([(1, ())] * 3, fan_in=1, sampling="top-k")
    state = {k: v for k, v in layer.state_dict().items() if k != "selected"}
    state["mask"] = torch.tensor([0.2, 0.9, 0.1])
    fresh = MaskedConnection([(1, ())] * 3, fan_in=1, sampling="top-k")
    fresh.load_state_dict(state)
    assert fresh.eval().active().tolist() == [0, 1, 0]


def _read_two_back(net, location: str) -> None:
    """The block at ``location`` reads the block before its previous one (its previous is bypassed)."""
    layer = net.get_submodule(next(s.module for s in maskfx.summary(net).sites if s.location == location))
    with torch.no_grad():
        layer.mask.zero_()
        layer.mask[-2] = 1.0


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_bypassed_downsampling_block_deploys_without_a_pad(name, tmp_path):
    """layer2.1 reads layer1's output (subsampled, zero-padded) once layer2.0 is bypassed: the pruned
    graph pads it, exactly. Exported for ONNX Runtime's CPU provider (whose layout has no Pad),
    layer2.1's first conv reads the narrow tensor and the residual adds it to the leading channels
    only, so no Pad is left, the output is the same, and the deploy module is left as it was."""
    torch.manual_seed(6)
    model = torchvision.models.get_model(name, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1, init="previous"), example_inputs=(x,))
    _read_two_back(net, "layer2.1")
    net = maskfx.freeze(net).eval()
    deploy = maskfx.collapse(net, "prune")
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net(x), rtol=1e-5, atol=1e-5)
    assert sum(map(is_channel_pad, deploy.graph.nodes)) == 1
    bypassed = sum(p.numel() for p in model.layer2[0].parameters())
    assert sum(p.numel() for p in deploy.parameters()) == sum(p.numel() for p in model.parameters()) - bypassed
    conv1 = model.layer2[1].conv1
    narrow = model.layer1[-1].conv1.in_channels if name == "resnet18" else model.layer1[-1].conv3.out_channels
    rewritten, _ = apply_peepholes(deploy, "CPUExecutionProvider", (x,))
    assert sum(p.numel() for p in rewritten.parameters()) == \
        sum(p.numel() for p in deploy.parameters()) - conv1.weight[:, narrow:].numel()
    code, state = deploy.code, copy.deepcopy(deploy.state_dict())
    path, report = maskfx.export_onnx(deploy, tmp_path / "pruned.onnx", example_inputs=(x,), device="cpu")
    proto = onnx.load(path)
    ops = [n.op_type for n in proto.graph.node] + [n.op_type for f in proto.functions for n in f.node]
    assert report.ok and report.peepholes == {"channel_pad": 1}
    assert "Pad" not in ops and ops.count("Concat") == 1
    assert deploy.code == code and not deploy.training and deploy.state_dict().keys() == state.keys()
    assert all(torch.equal(deploy.state_dict()[key], value) for key, value in state.items())


def test_a_pad_summed_with_another_candidate_is_kept_and_exact():
    """At K = 2 layer2.1 reads layer2.0 plus layer1.1 padded: the add is not a conv's, so the CPU
    peephole keeps the pad."""
    torch.manual_seed(7)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=2, init="previous"), example_inputs=(x,))
    for site in maskfx.summary(net).sites:
        with torch.no_grad():
            mask = net.get_submodule(site.module).mask
            mask.zero_()
            mask[-2:] = 1.0
    deploy = maskfx.collapse(maskfx.freeze(net).eval(), "prune")
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net(x), rtol=1e-5, atol=1e-5)
    rewritten, rewrites = apply_peepholes(deploy, "CPUExecutionProvider", (x,))
    assert rewrites == {"channel_pad": 0}
    assert sum(map(is_channel_pad, rewritten.graph.nodes)) == 3  # layer2.1, layer3.1, layer4.1
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), net(x), rtol=1e-5, atol=1e-5)


def test_channel_pad_lowering_leaves_a_shared_convolution_alone():
    """A convolution called twice (weights tied) is not copied: the pad stays, nothing is added."""
    root = torch.nn.Module()
    root.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    graph = torch.fx.Graph()
    t = graph.placeholder("t")
    padded = graph.call_function(pad_channels, (t, 8))
    twice = graph.call_module("conv", (graph.call_module("conv", (padded,)),))
    graph.output(graph.call_function(operator.add, (twice, padded)))
    gm = torch.fx.GraphModule(root, graph)
    x = torch.randn(2, 4, 5, 5)
    ShapeProp(gm).propagate(x)
    with torch.no_grad():
        before = gm(x)
    assert absorb_channel_pads(gm) == 0
    finish(gm)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), before, rtol=0, atol=0)
    assert sum(p.numel() for p in gm.parameters()) == sum(p.numel() for p in root.conv.parameters())
