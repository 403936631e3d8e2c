"""The ``maskfx`` command: help everywhere, a transform -> train -> export -> summary round trip,
and every bad input ending in one error line, non-zero, without a traceback."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import maskfx
from maskfx.cli import COMMANDS, main
from maskfx.cli.options import add_techniques, technique_configs
from maskfx.train.checkpoint import DIGEST_KEY, load_checkpoint, payload_digest

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
    out = capsys.readouterr().out
    assert "epoch 2 (phase 2)" in out and "BatchNorm recalibrated (up to 20 training batches): test accuracy" in out
    assert main(["export", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and (tmp_path / "m.onnx").is_file()
    assert "collapse (prune):" in out and "; exact: max |diff|" in out  # frozen by fine-tuning: prune is exact
    assert main(["summary", str(tmp_path / "run" / "checkpoint.pt"), "--collapse", "expected"]) == 0
    out = capsys.readouterr().out
    assert "frozen" in out and "maskconnect" in out  # the summary shows the frozen learned structure
    assert "collapse (expected):" in out and "jumpout: 7 layers lowered" in out


def test_a_budget_from_the_command_line_ships_a_model_under_it(tmp_path, capsys):
    """``--budget`` turns on the channel gates, the checkpoint keeps the budget, and the export of
    its pruned collapse lands under it."""
    common = ["--image-size", "16", "--limit", "64", "--out", str(tmp_path / "run")]
    assert main(["train", "torchvision:resnet18", "--budget", "0.5", "--epochs", "1", "--finetune-epochs", "1",
                 *common]) == 0
    assert main(["export", str(tmp_path / "run" / "checkpoint.pt"), "--mode", "prune",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    said = capsys.readouterr().out
    achieved = float(said.split("budget: 0.5 of the original's")[1].split("achieved ")[1].split()[0])
    assert 0.5 * 0.97 <= achieved <= 0.5 and "verified" in said


def test_a_parameters_budget_from_the_command_line_is_met_beside_the_macs_one(tmp_path, capsys):
    """``--budget-params`` alone turns on the channel gates too; beside ``--budget`` both are met by
    the pruned export (freeze, at the start of the fine-tuning phase, selects under both targets)."""
    common = ["--image-size", "16", "--limit", "64", "--epochs", "0", "--finetune-epochs", "1", "--out", str(tmp_path)]
    assert main(["train", "torchvision:resnet18", "--budget", "0.6", "--budget-params", "0.4", *common]) == 0
    assert main(["export", str(tmp_path / "checkpoint.pt"), "--mode", "prune", "--out", str(tmp_path / "m.onnx")]) == 0
    said = capsys.readouterr().out
    macs = float(said.split("budget: 0.6 of the original's")[1].split("achieved ")[1].split()[0])
    params = float(said.split("budget: 0.4 of the original's")[1].split("achieved ")[1].split()[0])
    assert macs <= 0.6 and 0.4 * 0.97 <= params <= 0.4 and "verified" in said
    assert main(["transform", *TINY, "--budget-params", "0.5", "--out", str(tmp_path / "p.pt")]) == 0
    assert "channels" in capsys.readouterr().out
    assert main(["transform", *TINY, "--budget-params", "0.5", "--budget-multiplier", "3",
                 "--out", str(tmp_path / "m.pt")]) == 0
    assert load_checkpoint(tmp_path / "m.pt").recipe.budget == {"macs": None, "warmup": 0.5, "params": 0.5,
                                                                "initial_multiplier": 3.0}


def test_resume_from_the_command_line_finishes_the_run(tmp_path, capsys):
    common = ["--image-size", "16", "--limit", "64", "--finetune-epochs", "0", "--batch-size", "32", "--out", str(tmp_path)]
    assert main(["train", "tiny_models:resnet", "--epochs", "1", *common]) == 0
    progress = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["progress"]
    assert (progress["phase"], progress["epoch"]) == (0, 1)
    capsys.readouterr()
    assert main(["train", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--resume", "--epochs", "2", *common]) == 0
    progress = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["progress"]
    assert (progress["phase"], progress["epoch"]) == (0, 2)  # the run extended by an epoch
    out = capsys.readouterr().out
    assert "epoch 2 (phase 1)" in out and "epoch 1 " not in out  # only the missing epoch ran


def sealed(payload: dict) -> dict:
    """An edited checkpoint payload with its digest renewed, so that loading gets past the
    checksum to the check under test."""
    content = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    return {**content, DIGEST_KEY: payload_digest(content)}


def bad_inputs(tmp: Path, good: Path) -> list[tuple[list[str], str]]:
    """Every command's bad input and the words its one error line must hold. ``good`` is a valid
    checkpoint of ``TINY``; the broken ones below are made from it."""
    (tmp / "corrupt.pt").write_bytes(b"garbage")
    (tmp / "empty").mkdir()
    for split in ("train", "val"):  # class folders without images; class folders with a broken image
        (tmp / "no_images" / split / "a").mkdir(parents=True)
        (tmp / "broken_image" / split / "a").mkdir(parents=True)
        (tmp / "broken_image" / split / "a" / "x.png").write_bytes(b"not a png")
    torch.save({"weight": torch.zeros(1)}, tmp / "wrong_weights.pt")
    payload = torch.load(good, weights_only=True)
    torch.save(sealed({**payload, "state_dict": dict(list(payload["state_dict"].items())[1:])}), tmp / "misfit.pt")
    torch.save(sealed({**payload, "recipe": {**payload["recipe"], "transform": {"dropconnect": {}}}}), tmp / "unknown.pt")
    torch.save(sealed({k: v for k, v in payload.items() if k != "recipe"}), tmp / "incomplete.pt")
    out, run = ["--out", str(tmp / "o.pt")], ["--out", str(tmp / "run")]
    no_gpu = not torch.cuda.is_available()
    return [
        (["transform", "torchvision:resnet18", "--weights", str(tmp / "missing.pt"), *out], "no such file"),
        (["transform", "torchvision:no_such_net", *out], "torchvision has no model"),
        (["transform", "resnet18", *out], "expected 'torchvision:<name>'"),
        (["transform", "no_such_module:fn", *out], "cannot import"),
        (["transform", "tiny_models:not_a_model", *out], "not an nn.Module"),
        (["transform", *TINY, "--weights", str(tmp / "wrong_weights.pt"), *out], "do not fit"),
        (["transform", *TINY, "--weights", str(tmp / "corrupt.pt"), *out], "not a readable state_dict"),
        (["transform", *TINY, "--data", "imagefolder:" + str(tmp / "empty"), *out], "train/ and val/"),
        (["transform", *TINY, "--data", "imagefolder:" + str(tmp / "no_images"), *out], "not readable as an ImageFolder"),
        (["transform", *TINY, "--data", "cifar10:" + str(tmp / "empty"), *out], "cifar10"),
        (["transform", *TINY, "--data", "svhn", *out], "expected digits"),
        (["transform", *TINY, "--blockout", "--clusters", "0", *out], "--clusters"),
        (["transform", *TINY, "--maskconnect", "--fan-in", "0", *out], "--fan-in"),
        (["transform", *TINY, "--image-size", "0", *out], "--image-size"),
        (["transform", *TINY, "--budget", "0", *out], "--budget"),
        (["transform", *TINY, "--budget", "1.5", *out], "--budget"),
        (["transform", *TINY, "--budget", "0.01", "--channels", "--round-to", "8", *out],
         "unreachable: removing everything removable leaves 0.0594"),
        (["transform", *TINY, "--budget", "0.5", "--maskconnect", *out], "channels combines with jumpout only"),
        (["train", "--checkpoint", str(good), "--budget", "0.5", *run], "--budget: a --checkpoint's recipe"),
        (["transform", *TINY, "--budget-params", "0", *out], "--budget-params"),
        (["train", "--checkpoint", str(good), "--budget-params", "0.5", *run], "--budget-params: a --checkpoint's"),
        (["transform", *TINY, "--budget-multiplier", "3", *out], "give --budget or --budget-params with it"),
        (["transform", *TINY, "--budget", "0.5", "--budget-multiplier", "0", *out], "--budget-multiplier"),
        (["transform", *TINY, "--budget", "0.5", "--budget-multiplier", "nan", *out], "--budget-multiplier"),
        (["train", "--checkpoint", str(good), "--budget-multiplier", "3", *run],
         "--budget-multiplier: a --checkpoint's"),
        (["transform", *TINY], "required: --out"),
        (["train", *TINY, "--epochs", "-1", *run], "--epochs"),
        (["train", *TINY, "--lr", "fast", *run], "--lr"),
        (["train", *TINY, "--batch-size", "0", *run], "--batch-size"),
        (["train", *TINY, "--epochs", "0", "--finetune-epochs", "0", *run], "nothing to train"),
        (["train", *TINY, "--epochs", "2", "--structure-epochs", "3", *run], "--structure-epochs 3 counts among"),
        (["train", *TINY, "--preset", "gateconnect", "--structure-epochs", "1", *run], "no meaning with --preset"),
        (["train", *TINY, "--structure-epochs", "1", *run], "--structure-epochs: the model has no learned structure"),
        (["train", *TINY, "--data", "imagefolder:" + str(tmp / "broken_image"), "--epochs", "1", *run],
         "cannot identify image file"),
        (["train", "--checkpoint", str(tmp / "corrupt.pt"), *run], "corrupt"),
        (["train", "--resume", *TINY, *run], "--resume needs --checkpoint"),
        (["train", *TINY, "--checkpoint", str(good), *run], "not both"),
        (["train", *run], "not both"),
        (["train", "--checkpoint", str(good), "--image-size", "32", *run], "was made for 10 classes of (3, 16, 16)"),
        (["export", str(tmp / "missing.pt"), *out], "no such file"),
        (["export", str(tmp / "corrupt.pt"), *out], "corrupt"),
        (["export", str(tmp / "wrong_weights.pt"), *out], "not a maskfx checkpoint"),
        (["export", str(tmp / "misfit.pt"), *out], "do not fit its recipe"),
        (["export", str(tmp / "unknown.pt"), *out], "unknown technique(s) ['dropconnect']"),
        (["export", str(tmp / "incomplete.pt"), *out], "incomplete"),
        (["export", str(tmp / "corrupt.pt"), "--mode", "sparse", *out], "--mode"),
        (["export", str(good), "--batch", "0", *out], "--batch"),
        (["export", str(good)], "required: --out"),
        (["summary", str(tmp / "corrupt.pt")], "corrupt"),
        (["summary", str(tmp / "missing.pt")], "no such file"),
        (["summary", str(tmp / "misfit.pt")], "do not fit its recipe"),
        (["summary", str(good), "--collapse", "sparse"], "--collapse"),
        (["bench", "--root", str(tmp)], "not found"),
        (["demo", "--epochs", "0"], "--epochs"),
        (["demo", "--model", "vgg11"], "must be a torchvision ResNet"),
        (["frobnicate"], "invalid choice"),
    ] + ([  # without a GPU, asking for one is a user error
        (["train", *TINY, "--device", "cuda", *run], "torch sees no GPU"),
        (["export", str(good), "--ort-device", "cuda", *out], "CUDA provider did not load"),
        (["demo", "--device", "cuda", "--out", str(tmp / "demo")], "torch sees no GPU"),
    ] if no_gpu else [])


@pytest.fixture()
def good_checkpoint(tmp_path, capsys) -> Path:
    assert main(["transform", *TINY, "--jumpout", "--maskconnect", "--out", str(tmp_path / "good.pt")]) == 0
    capsys.readouterr()
    return tmp_path / "good.pt"


def test_bad_input_is_one_line_without_traceback(tmp_path, good_checkpoint, capsys):
    for argv, message in bad_inputs(tmp_path, good_checkpoint):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse's own errors
            status = exit_.code
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert status != 0, argv
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err, (argv, captured.err)
        assert lines[0].startswith(f"maskfx {argv[0]}: error: ") or argv == ["frobnicate"], lines[0]


def test_default_weights_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights: torchvision must download
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and cannot, even on a machine with network
    status = main(["transform", "torchvision:resnet18", "--weights", "DEFAULT", "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err.strip()
    assert status != 0 and len(err.splitlines()) == 1 and "DEFAULT weights" in err


def test_maskconnect_start_and_sampling_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_techniques(parser)
    args = parser.parse_args(["--maskconnect", "--fan-in", "1", "--init", "previous", "--sampling", "top-k"])
    assert technique_configs(args)["maskconnect"] == maskfx.MaskConnectConfig(1, "previous", "top-k")
    assert technique_configs(parser.parse_args(["--maskconnect"]))["maskconnect"] == maskfx.MaskConnectConfig()
