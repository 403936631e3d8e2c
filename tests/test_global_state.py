"""maskfx changes no process-wide setting on import: plots are drawn on their own figures."""
import subprocess
import sys

from maskfx.report import plots


def test_importing_maskfx_keeps_the_users_matplotlib_backend():
    code = "import matplotlib, maskfx, maskfx.cli, maskfx.report.plots; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env={"MPLBACKEND": "svg", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_plots_are_written_without_a_display(tmp_path):
    history = [{"epoch": 1, "loss": 1.0, "test_accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "test_accuracy": 0.8}]
    path = plots.training_curves({"run": history}, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
