"""collapse() and export_onnx(): same function, no random op, ONNX Runtime parity."""
import onnx
import onnxruntime as ort
import pytest
import torch

import maskfx
from maskfx.export import ExportVerificationError, open_session
from maskfx.export.onnx import RANDOM_OPS, op_histogram
from maskfx.nn import Jumpout
from models import EveryReluKind, RandomInEval


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
    assert summary.collapsed == mode and "removed 8 layers" in summary.notes[0]


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
