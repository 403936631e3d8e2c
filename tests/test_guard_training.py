"""Training stops at a non-finite loss before it reaches the weights or a checkpoint (or skips
the batch, opted in), on every rank alike; and every maskfx layer takes an empty batch."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.data import TensorDataset
from torchvision.models.resnet import Bottleneck, ResNet

import maskfx
from maskfx.nn import BlockSparseLinear
from maskfx.techniques.blockout.layers import MASK_SCALE, _ClusterSumLinear, _MaskedLinear
from maskfx.train import NonFiniteLossError, Phase, Recipe, fit
from maskfx.train.data import Data, digits_split
from maskfx.train.models import build_model

MODEL = "tiny_models:resnet"
CPU = torch.device("cpu")
TESTS = Path(__file__).parent


def digits(train_images: int | None = 256, nan_at: int | None = None) -> Data:
    """The digits at 16 px, the first ``train_images`` of the training split, one of them NaN if asked."""
    data = digits_split(image_size=16)
    images, labels = (t[:train_images].clone() for t in data.train.tensors)
    if nan_at is not None:
        images[nan_at] = float("nan")
    return Data(TensorDataset(images, labels), data.test, data.num_classes, data.input_shape)


def transformed(data: Data) -> tuple[torch.fx.GraphModule, Recipe]:
    """A small network with learned masks and clusters, which a NaN step would poison too."""
    torch.manual_seed(0)
    net = maskfx.transform(build_model(MODEL, 10), blockout=maskfx.BlockoutConfig(clusters=3),
                           maskconnect=maskfx.MaskConnectConfig(2, "uniform", "multinomial"),
                           example_inputs=(torch.zeros(2, *data.input_shape),))
    return net, Recipe.of(net, MODEL, 10, data.input_shape)


def nonfinite(net: torch.nn.Module, buffers: bool = True) -> list[str]:
    state = net.state_dict() if buffers else dict(net.named_parameters())
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def test_nan_batch_stops_before_its_step_and_leaves_the_last_checkpoint_untouched(tmp_path):
    data = digits()
    net, recipe = transformed(data)
    path, saved = tmp_path / "c.pt", {}

    def plant_nan_after_first_epoch(record):
        saved["bytes"] = path.read_bytes()
        data.train.tensors[0][7] = float("nan")

    phases = [Phase(1, lr=0.05, mask_lr=0.5), Phase(1, lr=0.05)]
    with pytest.raises(NonFiniteLossError, match=r"phase 2/2 epoch 1/1, step \d+.*learning rate.*skip_nonfinite"):
        fit(net, data, phases, device=CPU, batch_size=32, evaluate=False, recipe=recipe, checkpoint=path,
            on_epoch=plant_nan_after_first_epoch)
    assert path.read_bytes() == saved["bytes"]
    assert nonfinite(net, buffers=False) == []  # no optimizer step took the NaN gradients
    assert issubclass(NonFiniteLossError, ArithmeticError)


def test_skip_nonfinite_skips_the_nan_batch_without_a_trace():
    data = digits(nan_at=7)
    net, _ = transformed(data)
    history = fit(net, data, [Phase(1, lr=0.05, mask_lr=0.5), Phase(1, lr=0.05, freeze_first=True)], device=CPU,
                  batch_size=32, evaluate=False, skip_nonfinite=True)
    assert [record["skipped"] for record in history] == [1, 1]
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in history)
    assert nonfinite(net) == []  # weights, masks, clusters, and BatchNorm statistics the NaN forward updated
    with torch.no_grad():
        assert torch.isfinite(net.eval()(data.test.tensors[0][:16])).all()


@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_a_diverging_learning_rate_stops_instead_of_saving_nan(tmp_path, skip_nonfinite):
    data = digits(train_images=None)
    net, recipe = transformed(data)
    with pytest.raises(NonFiniteLossError, match="phase 1/1 epoch 1/1"):
        fit(net, data, [Phase(1, lr=1e6, mask_lr=1e6)], device=CPU, evaluate=False, recipe=recipe,
            checkpoint=tmp_path / "c.pt", skip_nonfinite=skip_nonfinite)
    assert not (tmp_path / "c.pt").exists()


def test_skipping_every_batch_of_an_epoch_stops():
    data = digits(train_images=64)
    data.train.tensors[0][:] = float("nan")
    net, _ = transformed(data)
    with pytest.raises(NonFiniteLossError, match="every batch"):
        fit(net, data, [Phase(1, lr=0.05, mask_lr=0.5)], device=CPU, batch_size=32, evaluate=False, skip_nonfinite=True)
    assert nonfinite(net) == []


DDP_SCRIPT = """
import sys

import torch
from maskfx.train import NonFiniteLossError, Phase, ddp, fit
from test_guard_training import digits, transformed

job = ddp.setup(torch.device("cpu"))
data = digits(train_images=64, nan_at=5)  # the NaN image lands on one rank only
net, _ = transformed(data)
history = fit(net, data, [Phase(1, lr=0.05, mask_lr=0.5)], device=torch.device("cpu"), batch_size=16, job=job,
              evaluate=False, skip_nonfinite=True)
ddp.check_replicas(net, job)  # raises where the ranks' states differ
sys.stdout.write(f"rank {job.rank} skipped {history[-1]['skipped']}\\n")  # one write: the ranks share the pipe
sys.stdout.flush()
try:
    fit(net, data, [Phase(1, lr=0.05)], device=torch.device("cpu"), batch_size=16, job=job, evaluate=False)
except NonFiniteLossError:
    sys.stdout.write(f"rank {job.rank} stopped\\n")
    sys.stdout.flush()
ddp.teardown(job)
"""


def test_ranks_agree_to_skip_or_stop_when_one_sees_a_nan_batch(tmp_path):
    script = tmp_path / "nan_rank.py"
    script.write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547", str(script)]
    env = {"PYTHONPATH": f"{TESTS.parent}:{TESTS}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=TESTS.parent, env=env)
    try:
        stdout, stderr = run.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # ranks that disagree wait in an all-reduce for good
        run.terminate()  # torchrun ends its workers on SIGTERM
        pytest.fail(f"the ranks hung: {run.communicate(timeout=60)[1][-3000:]}")
    assert run.returncode == 0, stderr[-3000:]
    lines = sorted(line for line in stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 skipped 1", "rank 0 stopped", "rank 1 skipped 1", "rank 1 stopped"]


def small_resnext() -> torch.nn.Module:
    model = ResNet(Bottleneck, [2, 3, 2, 2], groups=8, width_per_group=4, num_classes=10)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


TECHNIQUES = {
    "jumpout": dict(jumpout=True),
    "blockout": dict(blockout=True),
    "maskconnect": dict(maskconnect=True),
    "maskconnect-sampled": dict(maskconnect=maskfx.MaskConnectConfig(2, "uniform", "multinomial")),
    "gateconnect": dict(gateconnect=True),
}


def check_empty_batch(net: torch.nn.Module, expected: dict[bool, torch.Size], stage: str) -> None:
    """Forward and backward of a 0-image batch in both modes: the original's shape, zero (finite)
    gradients, and no state poisoned by the statistics of nothing."""
    for training in (True, False):
        net.train(training)
        net.zero_grad(set_to_none=True)
        y = net(torch.randn(0, 3, 32, 32))
        assert y.shape == expected[training], (stage, training)
        if y.requires_grad:
            y.sum().backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert all(bool((g == 0).all()) for g in grads), (stage, training)
        assert nonfinite(net) == [], (stage, training)


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_every_layer_takes_an_empty_batch(technique):
    torch.manual_seed(0)
    model = small_resnext() if technique == "gateconnect" else torchvision.models.resnet18(num_classes=10).eval()
    expected = {training: model.train(training)(torch.randn(0, 3, 32, 32)).shape for training in (True, False)}
    net = maskfx.transform(model.eval(), example_inputs=(torch.randn(2, 3, 32, 32),), **TECHNIQUES[technique])
    check_empty_batch(net, expected, "transformed")
    maskfx.freeze(net)
    check_empty_batch(net, expected, "frozen")
    for mode in ("expected", "prune"):
        check_empty_batch(maskfx.collapse(copy.deepcopy(net).eval(), mode), expected, mode)


@pytest.mark.parametrize("shape", [(0, 12), (3, 0, 12), (0, 4, 12)])
def test_blockout_kernels_take_an_empty_batch(shape):
    torch.manual_seed(0)
    weight, bias = torch.randn(5, 12, requires_grad=True), torch.randn(5, requires_grad=True)
    c_in, c_out = torch.rand(12, 3, requires_grad=True), torch.rand(5, 3, requires_grad=True)
    x, scale = torch.randn(shape, requires_grad=True), MASK_SCALE / 3
    for kernel, extra in ((_ClusterSumLinear, ()), (_MaskedLinear, (torch.empty(5, 12),))):
        y = kernel.apply(x, weight, bias, c_in, c_out, scale, *extra)
        assert y.shape == (*shape[:-1], 5)
        grads = torch.autograd.grad(y.sum(), (x, weight, bias, c_in, c_out))
        assert [g.shape for g in grads] == [t.shape for t in (x, weight, bias, c_in, c_out)]
        assert all(bool((g == 0).all()) for g in grads)
    sparse = BlockSparseLinear([(torch.arange(4), torch.arange(2), torch.randn(2, 4))], bias, 12, 5)
    assert sparse(x).shape == (*shape[:-1], 5)
