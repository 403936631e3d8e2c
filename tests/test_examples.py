"""The examples run as documented (the demo has its own test, tests/test_demo.py)."""
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quickstart_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--epochs", "1", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "verified" in out and (tmp_path / "resnext.onnx").exists()
    assert "collapse (prune): " in out and "; exact: max |diff|" in out  # the report's verdict on the whole graph


def test_budget_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["budget.py", "--epochs", "1", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "examples" / "budget.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "verified" in out and (tmp_path / "pruned.onnx").exists()
    achieved = float(out.split("budget: 0.5 of the original's")[1].split("achieved ")[1].split()[0])
    assert 0.97 * 0.5 <= achieved <= 0.5
