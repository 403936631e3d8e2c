"""What maskfx's graph modules guard: they pickle and load in a fresh process (train graph, node
marks and ``meta["maskfx"]`` included), their state_dict names the transform that made it and
refuses a net built with another one, bad ``example_inputs`` get one maskfx error, and a
parameter-free module whose train-mode trace fails is kept whole."""
import copy
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

import maskfx
import tiny_models
from maskfx.dual import DualGraphModule
from maskfx.graph_module import MaskfxGraphModule
from maskfx.record import RECORD_KEY, StateMismatchError, read_record
from models import MLPHead, ModeDependentResNet

X32 = torch.randn(2, 3, 32, 32)

# Loads every file named on the command line, in a process that never built the nets, and saves
# what the parent compares: eval outputs, train outputs under a fixed seed, summaries, graph code.
LOADER = """
import sys, torch, maskfx
inputs, results = torch.load(sys.argv[1]), {}
for name in sys.argv[2:]:
    net = torch.load(f"{name}.pt", weights_only=False)
    x = inputs[name]
    result = {"class": [c.__name__ for c in type(net).__mro__], "summary": str(maskfx.summary(net)),
              "code": net.eval().code, "eval": net(x)}
    if hasattr(net, "train_graph"):
        torch.manual_seed(3)
        result["train"] = net.train()(x)
        result["train_code"] = net.code
    results[name] = result
torch.save(results, "results.pt")
"""


def loaded_in_fresh_process(tmp_path, nets: dict[str, nn.Module], inputs: dict[str, torch.Tensor]) -> dict:
    for name, net in nets.items():
        torch.save(net, tmp_path / f"{name}.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    done = subprocess.run([sys.executable, "-c", LOADER, "inputs.pt", *nets], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "results.pt")


def test_transformed_dual_and_collapsed_nets_load_in_a_fresh_process(tmp_path):
    resnet = maskfx.transform(torchvision.models.resnet18(weights=None, num_classes=10).eval(), jumpout=True,
                              blockout=True, maskconnect=True, example_inputs=(X32,))
    dual = maskfx.transform(ModeDependentResNet("functional-dropout").eval(), jumpout=True,
                            maskconnect=maskfx.MaskConnectConfig(2, "uniform"), example_inputs=(X32,))
    assert isinstance(dual, DualGraphModule)
    frozen = copy.deepcopy(dual)
    maskfx.freeze(frozen)
    nets = {"resnet": resnet, "dual": dual, "frozen": frozen, "pruned": maskfx.collapse(frozen, "prune"),
            "expected": maskfx.collapse(resnet, "expected")}
    inputs = {name: X32 for name in nets}
    results = loaded_in_fresh_process(tmp_path, nets, inputs)
    for name, net in nets.items():
        result = results[name]
        assert result["summary"] == str(maskfx.summary(net)), name
        assert result["code"] == net.eval().code, name  # the same graph, node names included
        assert torch.equal(result["eval"], net(X32)), name
    for name in ("dual", "frozen"):
        assert "DualGraphModule" in results[name]["class"]
        eval_code = nets[name].eval().code
        torch.manual_seed(3)
        expected = nets[name].train()(X32)
        assert results[name]["train_code"] == nets[name].code != eval_code
        assert torch.equal(results[name]["train"], expected), name  # the train graph, its dropout included


def test_a_loaded_net_keeps_its_node_marks_so_it_collapses_as_the_original(tmp_path):
    net = maskfx.transform(tiny_models.resnet(), maskconnect=maskfx.MaskConnectConfig(2, "uniform"),
                           example_inputs=(X32,)).eval()
    loaded = pickle.loads(pickle.dumps(net))
    assert isinstance(loaded, MaskfxGraphModule) and not isinstance(loaded, DualGraphModule)
    original, again = (maskfx.collapse(n, "prune", example_inputs=(X32,)) for n in (net, loaded))
    assert again.code == original.code
    assert maskfx.summary(again).notes == maskfx.summary(original).notes
    assert torch.equal(again(X32), original(X32))
    assert [s.location for s in maskfx.structure(loaded)] == [s.location for s in maskfx.structure(net)]


# --- the state_dict names the transform that made it -------------------------------------------

def tiny(**techniques) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return maskfx.transform(tiny_models.resnet(), example_inputs=(X32,), **techniques)


def head(**techniques) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return maskfx.transform(MLPHead(), **techniques)


@pytest.mark.parametrize("build, saved, other, differs", [
    (tiny, dict(maskconnect=maskfx.MaskConnectConfig(1)), dict(maskconnect=maskfx.MaskConnectConfig(2)),
     r"maskconnect=MaskConnectConfig\(fan_in=1, init='previous', sampling='top-k'\), this net has fan_in=2"),
    (tiny, dict(maskconnect=maskfx.MaskConnectConfig(2, "uniform")), dict(maskconnect=maskfx.MaskConnectConfig(2)),
     r"this net has init='previous'"),
    (head, dict(blockout=maskfx.BlockoutConfig(variant="hard-learned")), dict(blockout=True),
     r"blockout=BlockoutConfig\(clusters=6, .*variant='hard-learned'.*\), this net has variant='soft-learned'"),
    (head, dict(jumpout=maskfx.JumpoutConfig(sigma=0.02)), dict(jumpout=maskfx.JumpoutConfig(sigma=0.1)),
     r"this net has sigma=0.1"),
    (head, dict(jumpout=True, blockout=True), dict(jumpout=True),
     r"blockout=BlockoutConfig\(.*\), this net has no blockout"),
])
def test_a_state_dict_refuses_a_net_built_with_another_config(build, saved, other, differs):
    source = build(**saved)
    maskfx.freeze(source)
    state = source.state_dict()
    with pytest.raises(StateMismatchError, match="^this state_dict was saved from a net transformed with .*"
                       + differs + ".*: rebuild it with the same transform call$") as caught:
        build(**other).load_state_dict(state)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    same = build(**saved)
    same.load_state_dict(state)  # the same config loads, frozen structure included
    x = X32 if build is tiny else torch.randn(2, 3, 8, 8)
    assert torch.equal(same.eval()(x), source.eval()(x))


def test_frozen_maskconnect_state_cannot_run_the_old_wiring_under_a_new_fan_in():
    source = maskfx.freeze(tiny(maskconnect=maskfx.MaskConnectConfig(1)))
    target = tiny(maskconnect=maskfx.MaskConnectConfig(2))
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(StateMismatchError):
        target.load_state_dict(source.state_dict())
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing was loaded


def test_how_to_ship_a_state_may_differ_from_how_it_was_trained():
    source = head(blockout=maskfx.BlockoutConfig(clusters=3))
    target = head(blockout=maskfx.BlockoutConfig(clusters=3, min_clusters=0, prune_threshold=0.7, block_min_macs=0))
    target.load_state_dict(source.state_dict())  # collapse one trained state with another policy


def test_the_record_is_data_and_survives_copies_pickles_devices_and_weights_only_files(tmp_path):
    net = tiny(jumpout=True, maskconnect=maskfx.MaskConnectConfig(2, "uniform"))
    record = read_record(net.state_dict()[RECORD_KEY])
    assert record["configs"]["maskconnect"] == {"config": "MaskConnectConfig",
                                                "fields": {"fan_in": 2, "init": "uniform", "sampling": "top-k"}}
    assert record["collapsed"] is None and len(record["sites"]) == 64
    assert isinstance(net.state_dict()[RECORD_KEY], torch.Tensor)  # every state_dict value stays a tensor
    torch.save(net.state_dict(), tmp_path / "s.pt")
    from_file = torch.load(tmp_path / "s.pt", weights_only=True)
    assert read_record(from_file[RECORD_KEY]) == record
    for copied in (copy.deepcopy(net), pickle.loads(pickle.dumps(net)), net.to(torch.float64).to(torch.float32)):
        assert read_record(copied.state_dict()[RECORD_KEY]) == record
        copied.load_state_dict(from_file)
    with pytest.raises(StateMismatchError, match="this net has fan_in=1"):
        tiny(jumpout=True, maskconnect=maskfx.MaskConnectConfig(1, "uniform")).load_state_dict(from_file)


def test_the_record_travels_under_ddp(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(tiny(maskconnect=maskfx.MaskConnectConfig(1)))
        state = wrapped.state_dict()
        assert read_record(state["module." + RECORD_KEY])["configs"]["maskconnect"]["fields"]["fan_in"] == 1
        DistributedDataParallel(tiny(maskconnect=maskfx.MaskConnectConfig(1))).load_state_dict(state)
        with pytest.raises(StateMismatchError, match="this net has fan_in=2"):
            DistributedDataParallel(tiny(maskconnect=maskfx.MaskConnectConfig(2))).load_state_dict(state)
    finally:
        dist.destroy_process_group()


def test_collapsed_nets_record_their_mode():
    source = maskfx.freeze(tiny(maskconnect=maskfx.MaskConnectConfig(2, "uniform")))
    expected, pruned = maskfx.collapse(source, "expected"), maskfx.collapse(source, "prune")
    assert read_record(pruned.state_dict()[RECORD_KEY])["collapsed"] == "prune"
    copy.deepcopy(pruned).load_state_dict(pruned.state_dict())
    with pytest.raises(StateMismatchError,
                       match="collapsed with mode='prune', this net is collapsed with mode='expected'"):
        expected.load_state_dict(pruned.state_dict(), strict=False)


def test_a_state_dict_without_a_record_loads_only_when_not_strict():
    net = tiny(maskconnect=True)
    state = {k: v for k, v in net.state_dict().items() if k != RECORD_KEY}
    with pytest.raises(RuntimeError, match=f'Missing key\\(s\\) in state_dict: "{RECORD_KEY}"'):
        tiny(maskconnect=True).load_state_dict(state)
    assert tiny(maskconnect=True).load_state_dict(state, strict=False).missing_keys == [RECORD_KEY]


# --- example_inputs are checked where they enter -----------------------------------------------

def test_a_bare_tensor_as_example_inputs_says_what_form_is_expected():
    with pytest.raises(TypeError, match=r"^example_inputs must be a tuple of tensors, e.g. \(x,\), got Tensor$"):
        maskfx.transform(tiny_models.resnet(), maskconnect=True, example_inputs=X32)
    with pytest.raises(TypeError, match="example_inputs must be a tuple of tensors"):
        maskfx.transform(tiny_models.resnet(), maskconnect=True, example_inputs=(X32, 3))


@pytest.mark.parametrize("x, described", [
    (torch.randn(2, 1, 32, 32), r"shape \(2, 1, 32, 32\), float32"),
    (torch.randn(2, 3, 32, 32, dtype=torch.float64), r"shape \(2, 3, 32, 32\), float64"),
])
def test_example_inputs_the_model_cannot_run_on_get_one_maskfx_error(x, described):
    for techniques in (dict(maskconnect=True), dict(jumpout=True)):
        expected = f"^the model could not run on example_inputs \\({described}\\): "
        with pytest.raises(ValueError, match=expected) as caught:
            maskfx.transform(tiny_models.resnet(), example_inputs=(x,), **techniques)
        assert "\n" not in str(caught.value) and caught.value.__cause__ is None


def test_collapse_checks_its_example_inputs_the_same_way():
    net = tiny(jumpout=True)
    with pytest.raises(TypeError, match="example_inputs must be a tuple of tensors"):
        maskfx.collapse(net, example_inputs=X32)
    with pytest.raises(ValueError, match=r"could not run on example_inputs \(shape \(2, 1, 32, 32\), float32\)"):
        maskfx.collapse(net, example_inputs=(torch.randn(2, 1, 32, 32),))


# --- a parameter-free module whose train-mode trace fails is kept whole ------------------------

class DataDependentDropPath(nn.Module):
    """Drop-path that keeps the batch when the draw dropped every sample: data-dependent control
    flow, which torch.fx cannot trace, in train mode only."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        keep = (torch.rand(x.shape[0], 1, device=x.device) > self.p).to(x.dtype)
        if keep.sum() == 0:
            return x
        return x * keep / (1 - self.p)


class DropPathNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.branch, self.drop_path = nn.Linear(8, 8), nn.Linear(8, 8), DataDependentDropPath(0.5)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.fc(x) + self.drop_path(self.branch(x)))


def test_a_parameter_free_module_whose_train_trace_fails_is_kept_whole():
    model = DropPathNet()
    assert isinstance(maskfx.transform(model, jumpout=True).get_submodule("drop_path"), DataDependentDropPath)
    net = maskfx.transform(model)
    assert any(n.startswith("kept whole") and n.endswith(": drop_path") for n in maskfx.summary(net).notes)
    x = torch.randn(2000, 8)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model.eval()(x))
        outputs = []
        for module in (net, model):
            torch.manual_seed(5)
            outputs.append(module.train()(x))
        without_branch = model.head(model.fc(x))
    assert torch.equal(*outputs)  # the same draws drop the same samples
    dropped = (outputs[0] == without_branch).all(1).float().mean().item()
    assert 0.45 < dropped < 0.55  # p = 0.5 of the samples lose the branch in train mode


def test_a_module_with_parameters_whose_train_trace_fails_still_names_the_remedy():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = self.fc(x)
            return y if not self.training or y.sum() > 0 else -y

    model = nn.Sequential(nn.Linear(8, 8), Gated(), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(maskfx.TraceError, match=r"submodule '1' \(Gated\) in train mode.*leaf_modules=\['1'\]"):
        maskfx.transform(model, jumpout=True)
