"""The examples and the demo run as documented."""
import runpy
import sys
from pathlib import Path

import pytest

from maskfx.cli import main

ROOT = Path(__file__).parent.parent


def test_quickstart_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--epochs", "1", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "verified" in out and (tmp_path / "resnext.onnx").exists()
    assert "exact" in out or "active branches" in out


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--finetune-epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "[6/6]" in out and (tmp_path / "model.onnx").exists()
    assert "exact: the clusters are hard" in out  # frozen before collapse: prune is the trained function
