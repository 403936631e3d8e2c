"""What a new user breaks, on the checkpoint, configuration and command-line side: a corrupted
checkpoint, a save killed outright, bad config values, a failing model factory, weights for
another head, and options that would be silently ignored."""
import math
from pathlib import Path

import pytest
import torch

import maskfx
from maskfx.cli import main
from maskfx.train import Checkpoint, CheckpointError, Recipe, load_checkpoint, save_checkpoint
from maskfx.train.models import build_model

TESTS = Path(__file__).parent
TINY = ["tiny_models:resnet", "--image-size", "16", "--limit", "64"]


@pytest.fixture(autouse=True)
def _tiny_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def one_error_line(argv: list[str], capsys) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_a_checkpoint_with_flipped_bytes_in_its_tensors_is_refused(tmp_path, capsys):
    net = build_model("tiny_models:resnet", 10)
    path = save_checkpoint(tmp_path / "c.pt", Checkpoint(Recipe("tiny_models:resnet", 10, (3, 16, 16)), net.state_dict()))
    raw = bytearray(path.read_bytes())
    weight = net.state_dict()["3.conv1.weight"].numpy().tobytes()  # 2 KiB of one tensor's data in the file
    start = raw.find(weight)
    assert start > 0
    raw[start + 100:start + 164] = bytes(255 - b for b in raw[start + 100:start + 164])  # 64 bytes flipped
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # torch itself reads it without complaint
    with pytest.raises(CheckpointError, match="corrupt: its contents do not match"):
        load_checkpoint(path)
    assert "corrupt" in one_error_line(["summary", str(path)], capsys)


def test_a_temporary_left_by_a_killed_save_goes_at_the_next_save(tmp_path):
    net = build_model("tiny_models:resnet", 10)
    checkpoint = Checkpoint(Recipe("tiny_models:resnet", 10, (3, 16, 16)), net.state_dict())
    (tmp_path / ".c.pt.k1ll3d.tmp").write_bytes(b"PK half a zip")  # what SIGKILL mid-save leaves
    (tmp_path / ".other.pt.x.tmp").write_bytes(b"another file's save in progress")
    save_checkpoint(tmp_path / "c.pt", checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.x.tmp", "c.pt"]
    load_checkpoint(tmp_path / "c.pt").network()


@pytest.mark.parametrize("make", [
    lambda: maskfx.JumpoutConfig(include=None),
    lambda: maskfx.JumpoutConfig(exclude=3),
    lambda: maskfx.BlockoutConfig(init_spread=math.inf),
    lambda: maskfx.BlockoutConfig(init_spread=math.nan),
])
def test_bad_config_values_raise_value_error_naming_the_field(make):
    with pytest.raises(ValueError, match="include|exclude|init_spread"):
        make()


def test_a_factory_that_raises_is_one_line(tmp_path, capsys):
    line = one_error_line(["transform", "tiny_models:broken", "--out", str(tmp_path / "o.pt")], capsys)
    assert "the factory raised RuntimeError: the factory's own bug" in line


def test_weights_for_another_class_count_get_a_fresh_head(tmp_path, capsys):
    pretrained = build_model("tiny_models:resnet", 1000)
    torch.save(pretrained.state_dict(), tmp_path / "w.pt")
    assert main(["transform", *TINY, "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "o.pt")]) == 0
    assert "a fresh one with 10 replaces it" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "o.pt").state_dict
    assert torch.equal(state["3.conv1.weight"], pretrained.state_dict()["3.conv1.weight"])  # the body is the file's
    assert state["10.weight"].shape == (10, 16)


def test_weights_that_do_not_fit_name_the_key_and_shapes(tmp_path, capsys):
    other = build_model("tiny_models:resnet", 10)
    state = {**other.state_dict(), "3.conv1.weight": torch.zeros(8, 8, 5, 5)}
    torch.save(state, tmp_path / "w.pt")
    line = one_error_line(["transform", *TINY, "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "o.pt")], capsys)
    assert "3.conv1.weight is (8, 8, 5, 5) in the file and (8, 8, 3, 3) in the model" in line


@pytest.mark.parametrize("argv, message", [
    (["transform", *TINY, "--fan-in", "3"], "--fan-in configures --maskconnect or --gateconnect"),
    (["transform", *TINY, "--jumpout", "--clusters", "3"], "--clusters configures --blockout"),
    (["transform", *TINY, "--gateconnect", "--sampling", "multinomial"], "--sampling configures --maskconnect"),
])
def test_an_option_without_its_technique_is_refused(tmp_path, capsys, argv, message):
    assert message in one_error_line([*argv, "--out", str(tmp_path / "o.pt")], capsys)


def test_technique_flags_beside_a_checkpoint_are_refused(tmp_path, capsys):
    assert main(["transform", *TINY, "--maskconnect", "--out", str(tmp_path / "t.pt")]) == 0
    capsys.readouterr()
    line = one_error_line(["train", "--checkpoint", str(tmp_path / "t.pt"), "--blockout", "--image-size", "16",
                           "--out", str(tmp_path / "run")], capsys)
    assert "--blockout: a --checkpoint's recipe fixes its techniques" in line


def test_training_that_diverges_stops_with_one_line(tmp_path, capsys):
    line = one_error_line(["train", *TINY, "--maskconnect", "--lr", "1e6", "--batch-size", "8", "--epochs", "3",
                           "--finetune-epochs", "0", "--out", str(tmp_path / "run")], capsys)
    assert "training diverged; lower the learning rate" in line or "stopped before the optimizer step" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # no epoch ended well: nothing saved


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Only documented user errors become one line; a bug in maskfx (here any plain ValueError
    from inside a command) propagates, so its traceback can be reported."""
    def buggy(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr("maskfx.cli.train.load_data", buggy)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        main(["transform", *TINY, "--out", str(tmp_path / "o.pt")])
