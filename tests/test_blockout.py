"""Blockout: eq. 4/5 expectations, eq. 9 gradients, shared draws, variants, collapse and prune."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import maskfx
from maskfx.nn import BlockoutClusters, BlockoutLinear, BlockSparseLinear
from models import MLPHead
from structure import hard_block_logits, random_logits


def test_mean_of_sampled_training_weights_approaches_the_expected_weight():
    torch.manual_seed(0)
    clusters = BlockoutClusters([7, 5], clusters=3).train()
    random_logits(clusters, 1.5)
    layer = BlockoutLinear(7, 5, clusters=3)
    samples = torch.stack([layer.masked_weight(*clusters()).detach() for _ in range(20000)])
    p_in, p_out = [p.detach() for p in clusters.probabilities()]
    paper_weight = 4.0 * layer.weight.detach()  # maskfx stores W~ / 4 (inverted scaling)
    expected = (1 / 3) * paper_weight * (p_out @ p_in.t())  # eq. 5
    standard_error = samples.std(0) / 20000 ** 0.5
    assert ((samples.mean(0) - expected).abs() <= 4 * standard_error + 1e-6).all()
    assert torch.allclose(samples.mean(0), expected, atol=0.02)


def test_cluster_gradient_is_eq_9_through_the_sigmoid():
    torch.manual_seed(1)
    clusters = BlockoutClusters([6, 4, 3], clusters=2).train()
    random_logits(clusters, 1.0)
    fc1, fc2 = BlockoutLinear(6, 4, 2), BlockoutLinear(4, 3, 2)
    x = torch.randn(8, 6)

    def loss_of(c):
        return fc2(torch.relu(fc1(x, c[0], c[1])), c[1], c[2]).square().sum()

    torch.manual_seed(5)
    draws = clusters()
    loss_of(draws).backward()
    leaves = [d.detach().clone().requires_grad_() for d in draws]  # the same draw, as plain inputs
    loss_of(leaves).backward()
    for phi, c in zip(clusters.logits, leaves):
        p = torch.sigmoid(phi.detach())
        torch.testing.assert_close(phi.grad, c.grad * c.detach() * p * (1 - p))  # dL/dP = dL/dC * C
    assert set(torch.cat([d.detach().flatten() for d in draws]).tolist()) <= {0.0, 1.0}


def test_one_draw_per_forward_is_shared_by_the_two_adjacent_layers():
    net = maskfx.transform(MLPHead(), blockout=True).train()
    calls, seen = [], {}
    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    clusters.register_forward_hook(lambda *_: calls.append(1))
    for name, m in net.named_modules():
        if isinstance(m, BlockoutLinear):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args))
    net(torch.randn(4, 3, 8, 8))
    layers = list(seen.values())
    assert len(calls) == 1 and len(layers) == 3
    for (_, _, c_out), (_, c_in, _) in zip(layers, layers[1:]):
        assert c_out is c_in


@pytest.mark.parametrize("variant", ["hard-learned", "hard-fixed", "soft-learned"])
def test_variants(variant):
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=3, variant=variant)).train()
    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    groups = maskfx.param_groups(net, lr=0.5, mask_lr=1.0)
    opt = torch.optim.SGD(groups, lr=0.5)
    before = [phi.detach().clone() for phi in clusters.logits]
    draws = [d.detach() for d in clusters()]
    draws_are_probabilities = all(torch.equal(d, p.detach()) for d, p in zip(draws, clusters.probabilities()))
    x = torch.randn(16, 3, 8, 8)
    F.cross_entropy(net(x), torch.randint(0, 5, (16,))).backward()
    opt.step()
    changed = any(not torch.equal(a, b.detach()) for a, b in zip(before, clusters.logits))
    if variant == "hard-fixed":
        assert len(groups) == 1 and not changed
        assert all(torch.equal(p, torch.full_like(p, 0.5)) for p in clusters.probabilities())
        assert set(torch.cat([d.flatten() for d in draws]).tolist()) == {0.0, 1.0} and not draws_are_probabilities
    elif variant == "hard-learned":
        assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0 and changed
        assert set(torch.cat([d.flatten() for d in draws]).tolist()) == {0.0, 1.0}
    else:
        assert changed and draws_are_probabilities
        net.train()
        torch.testing.assert_close(net(x), net(x))  # deterministic: C = P


def test_eval_output_equals_the_pretrained_head_and_dropouts_go():
    model = MLPHead().eval()
    net = maskfx.transform(model, blockout=True).eval()
    x = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-6)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    kept = maskfx.transform(model, blockout=maskfx.BlockoutConfig(keep_dropout=True))
    assert sum(isinstance(m, nn.Dropout) for m in kept.modules()) == 2


def test_hidden_layers_are_added_before_the_classifier():
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(hidden=(40, 20)))
    layers = [m for m in net.modules() if isinstance(m, BlockoutLinear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(24, 40), (40, 20), (20, 32), (32, 32), (32, 5)]
    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    assert [p.shape[0] for p in clusters.logits] == [24, 40, 20, 32, 32, 5]
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_jumpout_leaves_the_blockout_head_alone():
    net = maskfx.transform(MLPHead(), blockout=True, jumpout=True)
    assert [s.location for s in maskfx.summary(net).sites if s.technique == "jumpout"] == ["backbone.1"]


@pytest.mark.parametrize("block_ratio", [1.0, 0.0])
def test_prune_of_hard_clusters_is_exact_and_smaller(block_ratio):
    model = MLPHead(features=48, hidden=64, classes=6)
    config = maskfx.BlockoutConfig(clusters=4, block_ratio=block_ratio, min_clusters=0)  # nodes in no cluster go
    net = maskfx.transform(model, blockout=config).eval()
    hard_block_logits(next(m for m in net.modules() if isinstance(m, BlockoutClusters)), magnitude=40.0)
    x = torch.randn(5, 3, 8, 8)
    expected, pruned = maskfx.collapse(net, "expected"), maskfx.collapse(net, "prune")
    torch.testing.assert_close(expected(x), net(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(pruned(x), net(x), rtol=0, atol=1e-5)
    head = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("backbone"))
    uses_blocks = any(isinstance(m, BlockSparseLinear) for m in pruned.modules())
    assert uses_blocks == (block_ratio == 1.0)  # disjoint clusters: blocks beat dense; ratio 0 forbids them
    # Dense: the nodes in no cluster go. Blocks: also the zeros between the 4 disjoint clusters.
    assert head(pruned) < (head(expected) / 2 if uses_blocks else head(expected) * 0.9)
    assert "exact: the clusters are hard" in maskfx.summary(pruned).notes[-1]


def test_prune_of_soft_clusters_reports_how_far_it_moves():
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=3)).eval()
    random_logits(next(m for m in net.modules() if isinstance(m, BlockoutClusters)), 2.0)
    note = maskfx.summary(maskfx.collapse(net, "prune")).notes[-1]
    changes = [float(v.rstrip("%,")) for v in note.split("change the weights by ")[1].split(" (")[0].split()]
    assert len(changes) == 3 and all(0.0 < c < 100.0 for c in changes)


def test_freeze_fixes_hard_clusters_so_prune_is_the_trained_function():
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=3))
    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    random_logits(clusters, 2.0)
    maskfx.freeze(net)
    assert maskfx.param_groups(net, lr=0.1)[-1]["name"] == "weights"  # no structure left to learn
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.1), lr=0.1)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    net.train()
    first, second = net(x), net(x)
    torch.testing.assert_close(first, second)  # frozen: no more sampling
    F.cross_entropy(first, y).backward()
    opt.step()
    net.eval()
    pruned = maskfx.collapse(net, "prune")
    torch.testing.assert_close(pruned(x), net(x), rtol=0, atol=1e-5)
    assert "exact" in maskfx.summary(pruned).notes[-1]


def test_min_clusters_keeps_every_node_in_a_cluster_so_the_head_never_empties():
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=3)).eval()
    clusters = next(m for m in net.modules() if isinstance(m, BlockoutClusters))
    with torch.no_grad():
        for phi in clusters.logits:  # probabilities just below the threshold, as after a short run
            phi.copy_(-0.05 - 0.01 * torch.rand(phi.shape))
    assert all(torch.equal(c.sum(1), torch.ones(c.shape[0])) for c in clusters.hard())
    pruned = maskfx.collapse(net, "prune")
    assert any(isinstance(m, BlockSparseLinear) for m in pruned.modules())  # one cluster per node: k blocks
    plain = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=3, min_clusters=0)).eval()
    plain.load_state_dict(net.state_dict())
    head = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("backbone"))
    assert head(maskfx.collapse(plain, "prune")) < head(pruned)  # plain thresholding empties the head


def test_prune_and_expected_export_to_onnx(tmp_path):
    net = maskfx.transform(MLPHead(), blockout=maskfx.BlockoutConfig(clusters=4)).eval()
    hard_block_logits(next(m for m in net.modules() if isinstance(m, BlockoutClusters)), magnitude=3.0)
    x = torch.randn(4, 3, 8, 8)
    for mode in ("expected", "prune"):
        _, report = maskfx.export_onnx(maskfx.collapse(net, mode), tmp_path / f"{mode}.onnx", (x,))
        assert report.ok


def test_a_model_without_linear_head_is_reported_not_crashed_on():
    import torchvision
    with pytest.warns(UserWarning, match="blockout not applied: no Linear classifier head"):
        net = maskfx.transform(torchvision.models.squeezenet1_1(), blockout=True, jumpout=True)
    summary = maskfx.summary(net)
    assert summary.count("blockout") == 0 and summary.count("jumpout") > 0
    assert "no Linear classifier head" in str(summary)


@pytest.mark.parametrize("kwargs, field", [
    (dict(clusters=0), "clusters"), (dict(clusters=2.5), "clusters"), (dict(hidden=(0,)), "hidden"),
    (dict(hidden=(16, -1)), "hidden"), (dict(variant="soft-fixed"), "variant"),
    (dict(prune_threshold=1.0), "prune_threshold"), (dict(min_clusters=7), "min_clusters"),
])
def test_invalid_config_raises_value_error(kwargs, field):
    with pytest.raises(ValueError, match=field):
        maskfx.BlockoutConfig(**kwargs)


def test_frozen_clusters_survive_a_state_dict_round_trip():
    source = maskfx.transform(MLPHead(), blockout=True)
    random_logits(next(m for m in source.modules() if isinstance(m, BlockoutClusters)), 2.0)
    maskfx.freeze(source)
    target = maskfx.transform(MLPHead(), blockout=True)
    target.load_state_dict(source.state_dict())
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(target.train()(x), source.train()(x))
    assert maskfx.param_groups(target, lr=0.1)[-1]["name"] == "weights"
