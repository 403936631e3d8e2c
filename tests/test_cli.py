"""The ``maskfx`` command: help everywhere, a transform -> train -> export -> summary round trip,
and every bad input ending in one error line, non-zero, without a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskfx.cli import COMMANDS, main

TESTS = Path(__file__).parent
TINY = ["tiny_models:resnet", "--image-size", "16", "--limit", "64"]


@pytest.fixture(autouse=True)
def _tiny_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def test_help_for_every_command(capsys):
    for command in [[], *([c.name] for c in COMMANDS)]:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0 and "usage: maskfx" in capsys.readouterr().out


def test_python_dash_m_maskfx_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "maskfx", "--help"], capture_output=True, text=True, cwd=TESTS.parent)
    assert done.returncode == 0 and all(c.name in done.stdout for c in COMMANDS)


def test_transform_train_export_summary(tmp_path, capsys):
    assert main(["transform", *TINY, "--jumpout", "--blockout", "--maskconnect", "--fan-in", "1",
                 "--out", str(tmp_path / "t.pt")]) == 0
    assert main(["train", "--checkpoint", str(tmp_path / "t.pt"), "--image-size", "16", "--limit", "64",
                 "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["summary", str(tmp_path / "run" / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "epoch 2 (phase 2)" in out and "verified" in out and (tmp_path / "m.onnx").is_file()
    assert "frozen" in out and "maskconnect" in out  # the summary shows the frozen learned structure


def test_resume_from_the_command_line_finishes_the_run(tmp_path, capsys):
    common = ["--image-size", "16", "--limit", "64", "--finetune-epochs", "0", "--batch-size", "32", "--out", str(tmp_path)]
    assert main(["train", "tiny_models:resnet", "--epochs", "1", *common]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["progress"] == {"phase": 0, "epoch": 1}
    capsys.readouterr()
    assert main(["train", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--resume", "--epochs", "2", *common]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["progress"] == {"phase": 0, "epoch": 2}
    out = capsys.readouterr().out
    assert "epoch 2 (phase 1)" in out and "epoch 1 " not in out  # only the missing epoch ran


def bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "corrupt.pt").write_bytes(b"garbage")
    (tmp / "empty").mkdir()
    torch.save({"weight": torch.zeros(1)}, tmp / "wrong_weights.pt")
    out = ["--out", str(tmp / "o.pt")]
    return [
        (["transform", "torchvision:resnet18", "--weights", str(tmp / "missing.pt"), *out], "no such file"),
        (["transform", "torchvision:no_such_net", *out], "torchvision has no model"),
        (["transform", "resnet18", *out], "expected 'torchvision:<name>'"),
        (["transform", "no_such_module:fn", *out], "cannot import"),
        (["transform", "tiny_models:not_a_model", *out], "not an nn.Module"),
        (["transform", *TINY, "--weights", str(tmp / "wrong_weights.pt"), *out], "do not fit"),
        (["transform", *TINY, "--weights", str(tmp / "corrupt.pt"), *out], "not a readable state_dict"),
        (["transform", *TINY, "--data", "imagefolder:" + str(tmp / "empty"), *out], "train/ and val/"),
        (["transform", *TINY, "--data", "cifar10:" + str(tmp / "empty"), *out], "cifar10"),
        (["transform", *TINY, "--data", "mnist", *out], "expected digits"),
        (["transform", *TINY, "--blockout", "--clusters", "0", *out], "--clusters"),
        (["train", *TINY, "--epochs", "-1", "--out", str(tmp)], "--epochs"),
        (["train", *TINY, "--lr", "fast", "--out", str(tmp)], "--lr"),
        (["train", "--checkpoint", str(tmp / "corrupt.pt"), "--out", str(tmp)], "corrupt"),
        (["train", "--resume", *TINY, "--out", str(tmp)], "--resume needs --checkpoint"),
        (["export", str(tmp / "missing.pt"), *out], "no such file"),
        (["export", str(tmp / "corrupt.pt"), *out], "corrupt"),
        (["export", str(tmp / "wrong_weights.pt"), *out], "not a maskfx checkpoint"),
        (["export", str(tmp / "corrupt.pt"), "--mode", "sparse", *out], "--mode"),
        (["summary", str(tmp / "corrupt.pt")], "corrupt"),
        (["bench", "--root", str(tmp)], "not found"),
        (["demo", "--epochs", "0"], "--epochs"),
        (["frobnicate"], "invalid choice"),
    ]


def test_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    for argv, message in bad_inputs(tmp_path):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse's own errors
            status = exit_.code
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert status != 0, argv
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err, (argv, captured.err)


def test_default_weights_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights: torchvision must download
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and cannot, even on a machine with network
    status = main(["transform", "torchvision:resnet18", "--weights", "DEFAULT", "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err.strip()
    assert status != 0 and len(err.splitlines()) == 1 and "DEFAULT weights" in err
