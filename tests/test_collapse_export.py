"""collapse() and export_onnx(): same function, no random op, ONNX Runtime parity, and what
each did as data (CollapseReport, ExportReport)."""
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import maskfx
import tiny_models
from maskfx.export import ExportVerificationError, open_session
from maskfx.export.onnx import RANDOM_OPS, op_histogram
from maskfx.nn import Jumpout
from models import EveryReluKind, RandomInEval, TwoInputs


@pytest.fixture()
def trained():
    net = maskfx.transform(EveryReluKind(), jumpout=True)
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.05), momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.randn(16, 16)), torch.randint(0, 3, (16,))).backward()
        opt.step()
    return net


@pytest.mark.parametrize("mode", ["expected", "prune"])
def test_collapse_removes_every_jumpout_and_keeps_the_eval_function(trained, mode):
    deploy = maskfx.collapse(trained, mode=mode)
    assert not any(isinstance(m, Jumpout) for m in deploy.modules())
    assert any(isinstance(m, Jumpout) for m in trained.modules())  # the trained net is untouched
    x = torch.randn(10, 16)
    torch.testing.assert_close(deploy(x), trained.eval()(x), rtol=0, atol=1e-5)
    assert not deploy.training
    summary = maskfx.summary(deploy)
    assert summary.collapsed == mode and summary.collapse.technique("jumpout").facts.removed == 8


def test_collapse_rejects_bad_mode_and_double_collapse(trained):
    with pytest.raises(ValueError, match="mode"):
        maskfx.collapse(trained, mode="dense")
    with pytest.raises(ValueError, match="already collapsed"):
        maskfx.collapse(maskfx.collapse(trained))


def test_export_is_checked_free_of_random_ops_and_matches_at_two_batch_sizes(trained, tmp_path):
    deploy = maskfx.collapse(trained)
    path, report = maskfx.export_onnx(deploy, tmp_path / "net.onnx", example_inputs=(torch.randn(4, 16),))
    assert path.exists() and report.ok and report.random_ops == []
    assert [c.batch for c in report.checks] == [1, 6] and all(c.max_abs_diff < 1e-5 for c in report.checks)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert not set(op_histogram(model)) & RANDOM_OPS
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert report.provider == open_session(path).provider


def test_export_of_a_batch_of_one_still_has_a_dynamic_batch(tmp_path):
    deploy = maskfx.collapse(maskfx.transform(EveryReluKind(), jumpout=True))
    path, report = maskfx.export_onnx(deploy, tmp_path / "one.onnx", example_inputs=(torch.randn(1, 16),))
    assert [c.batch for c in report.checks] == [1, 3] and report.ok


def test_export_refuses_a_graph_with_random_ops(tmp_path):
    with pytest.raises(ExportVerificationError) as caught:
        maskfx.export_onnx(RandomInEval(), tmp_path / "random.onnx", example_inputs=(torch.randn(2, 4),))
    assert caught.value.report.random_ops == ["RandomUniformLike"]
    assert "random ops: ['RandomUniformLike']" in str(caught.value)


def test_export_rejects_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="example_inputs"):
        maskfx.export_onnx(EveryReluKind(), tmp_path / "x.onnx", example_inputs=())


def test_runtime_session_reports_its_provider(trained, tmp_path):
    path, _ = maskfx.export_onnx(maskfx.collapse(trained), tmp_path / "net.onnx", example_inputs=(torch.randn(2, 16),))
    session = open_session(path, device="cpu")
    assert session.provider == "CPUExecutionProvider"
    assert session.run(torch.randn(3, 16))[0].shape == (3, 3)
    with pytest.raises(ValueError, match="device"):
        open_session(path, device="tpu")
    if not (torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()):
        with pytest.raises(RuntimeError, match="CUDA provider did not load"):
            open_session(path, device="cuda")
    else:
        assert open_session(path, device="auto").provider == "CUDAExecutionProvider"


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def _macs(module, x):
    """MACs of one row, counted here independently of maskfx.report."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x[:1])
    return counter.get_total_flops() // 2


@pytest.fixture()
def tiny_resnet():
    """Tiny ResNet (3 blocks, a 2-layer head) with all three ResNet techniques, a few steps
    trained so Blockout's clusters are soft, in eval mode, and its example inputs."""
    x = torch.randn(8, 3, 16, 16)
    net = maskfx.transform(tiny_models.resnet(), jumpout=True, blockout=True, example_inputs=(x,),
                           maskconnect=maskfx.MaskConnectConfig(fan_in=1))
    opt = torch.optim.SGD(maskfx.param_groups(net, lr=0.05, mask_lr=0.2), momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), torch.randint(0, 10, (8,))).backward()
        opt.step()
    return net.eval(), x


def test_collapse_report_expected_is_exact_with_costs_per_technique(tiny_resnet):
    net, x = tiny_resnet
    deploy = maskfx.collapse(net, "expected", example_inputs=(x,))
    report = maskfx.summary(deploy).collapse
    assert report.mode == "expected" and report.exact is True
    with torch.no_grad():
        moved = (deploy(x) - net(x)).abs().max().item()
    assert report.shift.max_abs_diff == pytest.approx(moved, abs=1e-9) and moved < 1e-5
    assert (report.before.parameters, report.after.parameters) == (_parameters(net), _parameters(deploy))
    assert (report.before.macs, report.after.macs) == (_macs(net, x), _macs(deploy, x))
    assert report.after.macs < report.before.macs  # no more mask products at inference
    steps = report.techniques
    assert [s.technique for s in steps] == ["jumpout", "blockout", "maskconnect"]  # the pipeline, reversed
    assert [s.layers for s in steps] == [7, 3, 2]  # 7 ReLU sites; clusters + 2 Linear layers; 2 masked sums
    assert steps[0].before == report.before and steps[-1].after == report.after
    assert all(a.after == b.before for a, b in zip(steps, steps[1:]))
    assert steps[0].after == steps[0].before  # Jumpout holds no parameters and costs no MACs at inference
    assert all(s.shift.exact for s in steps) and steps[0].facts.removed == 7


def test_collapse_report_says_by_how_much_prune_moved_unfrozen_blockout(tiny_resnet):
    net, x = tiny_resnet
    report = maskfx.summary(maskfx.collapse(net, "prune", example_inputs=(x,))).collapse
    assert report.exact is False
    blockout = report.technique("blockout")
    assert not blockout.shift.exact and blockout.shift.max_abs_diff > 1e-3  # soft clusters thresholded
    assert report.technique("jumpout").shift.max_abs_diff == 0 and report.technique("maskconnect").shift.exact
    assert report.shift.max_abs_diff >= blockout.shift.max_abs_diff - 1e-6
    assert "NOT the eval function" in str(report)
    with pytest.raises(KeyError, match="gateconnect"):
        report.technique("gateconnect")


def test_collapse_report_of_frozen_prune_counts_a_removed_block(tiny_resnet):
    net, x = tiny_resnet
    with torch.no_grad():  # block "5" reads block "3" (candidate 1), so nobody reads block "4"
        mask = net.get_submodule(next(s.module for s in maskfx.summary(net).sites if s.location == "5")).mask
        mask.copy_(torch.tensor([0.0, 1.0, 0.0]))
    maskfx.freeze(net)
    report = maskfx.summary(maskfx.collapse(net, "prune", example_inputs=(x,))).collapse
    assert report.exact is True  # frozen: discrete clusters and connectivity
    maskconnect = report.technique("maskconnect")
    block = _parameters(tiny_models.resnet()[4])
    assert maskconnect.before.parameters - maskconnect.after.parameters == block + 2 + 3  # the block, and both masks (2 and 3 candidates)
    assert maskconnect.after.macs < maskconnect.before.macs


def test_collapse_report_without_example_inputs_counts_parameters_only(tiny_resnet):
    net, _ = tiny_resnet
    deploy = maskfx.collapse(net, "prune")
    summary = maskfx.summary(deploy)
    report = summary.collapse
    assert report.after.parameters == _parameters(deploy) and report.before.parameters == _parameters(net)
    assert report.after.macs is None and report.shift is None and report.exact is None
    assert all(s.shift is None and s.before.macs is None for s in report.techniques)
    assert "exactness not measured" in str(summary) and maskfx.summary(net).collapse is None


def test_collapse_report_with_two_inputs_and_bad_example_inputs():
    net = maskfx.transform(TwoInputs(), jumpout=True)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    report = maskfx.summary(maskfx.collapse(net, example_inputs=(x, y))).collapse
    assert report.after.macs == 2 * 4 * 4 and report.exact  # two 4x4 Linear layers, one row
    with pytest.raises(ValueError, match="example_inputs"):
        maskfx.collapse(net, example_inputs=())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_collapse_report_on_cuda_takes_cpu_example_inputs(tiny_resnet):
    net, x = tiny_resnet
    report = maskfx.summary(maskfx.collapse(net.cuda(), "expected", example_inputs=(x,))).collapse
    assert report.exact and report.after.macs == _macs(maskfx.collapse(net.cpu(), "expected"), x)
