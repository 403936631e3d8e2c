"""maskfx.structure: the learned values per site, as tensors, and what freeze/prune keep."""
import torch

import maskfx
from models import HandResidual, MLPHead, ModeDependentResNet, StyledResNeXt, calibrated


def test_blockout_layers_report_probabilities_and_hard_clusters():
    net = maskfx.transform(MLPHead(features=24, hidden=32, classes=5), blockout=maskfx.BlockoutConfig(clusters=3))
    sites = maskfx.structure(net)
    assert [s.location for s in sites] == ["blockout_classifier_0 inputs", "blockout_classifier_0 outputs",
                                           "blockout_classifier_3 outputs", "blockout_classifier_6 outputs"]
    assert [tuple(s.values.shape) for s in sites] == [(24, 3), (32, 3), (32, 3), (5, 3)]
    for site in sites:
        assert site.technique == "blockout" and not site.frozen and site.keep.dtype == torch.bool
        assert ((site.values >= 0) & (site.values <= 1)).all()
        # P > 0.5, plus each node's most probable cluster (min_clusters=1)
        top = torch.zeros_like(site.keep).scatter_(1, site.values.argmax(1, keepdim=True), True)
        assert torch.equal(site.keep, (site.values > 0.5) | top)
    maskfx.freeze(net)
    assert all(s.frozen and torch.equal(s.values, s.keep.float()) for s in maskfx.structure(net))


def test_maskconnect_blocks_report_masks_sources_and_the_k_kept():
    net = maskfx.transform(HandResidual(), maskconnect=maskfx.MaskConnectConfig(fan_in=2),
                           example_inputs=(torch.randn(2, 3, 8, 8),))
    sites = maskfx.structure(net)
    assert [s.location for s in sites] == [s.location for s in maskfx.summary(net).sites]
    for j, site in enumerate(sites, start=1):
        assert site.values.shape == (j + 1,) and len(site.sources) == j + 1 and site.sources[0] == "chain input"
        assert site.keep.sum() == min(2, j + 1) and site.keep[-1]  # uniform masks: ties to the latest
    with torch.no_grad():
        net.get_submodule(maskfx.summary(net).sites[-1].module).mask.copy_(torch.tensor([1.0, 0.2, 0.9, 0.1]))
    assert maskfx.structure(net)[-1].keep.tolist() == [True, False, True, False]
    assert maskfx.structure(net)[-1].values is not maskfx.structure(net)[-1].values  # copies, read-only view


def test_maskconnect_sources_are_named_through_the_jumpouts_after_block_outputs():
    net = maskfx.transform(HandResidual(), maskconnect=True, jumpout=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert [s.sources for s in maskfx.structure(net) if s.technique == "maskconnect"][-1] == \
        ("chain input", "f1", "f2", "f3")


def test_gateconnect_modules_report_branch_gates():
    net = maskfx.transform(calibrated(StyledResNeXt("modules", groups=4), (4, 3, 16, 16)),
                           gateconnect=maskfx.GateConnectConfig(fan_in=2))
    sites = maskfx.structure(net)
    assert [s.technique for s in sites] == ["gateconnect", "gateconnect"]
    assert all(s.values.shape == (4, 4) and torch.equal(s.keep.sum(1), torch.full((4,), 2)) for s in sites)


def test_a_two_graph_model_reports_its_sites_once():
    net = maskfx.transform(ModeDependentResNet("aux"), maskconnect=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert [s.location for s in maskfx.structure(net)] == ["blocks.1", "blocks.2"]
