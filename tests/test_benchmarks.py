"""The benchmark harness (``python -m benchmarks``): BENCHMARKS.md is the rendering of the
committed JSON results and nothing else; a suite that is missing or incomplete is reported, never
fatal; and the quick run of the CPU suites writes results whose exact invariants hold."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks package sits at the repository root

from benchmarks import __main__ as cli, harness, registry, render  # noqa: E402
from benchmarks.deployment import EXPECTED, PRUNE, UNTOUCHED  # noqa: E402
from benchmarks.suite import table  # noqa: E402


def test_page_is_the_rendering_of_the_committed_results():
    results = ROOT / "benchmarks" / "results"
    assert {p.stem for p in results.glob("*.json")} == set(registry.SUITES)
    assert (ROOT / "BENCHMARKS.md").read_text() == render.render(results, ROOT), \
        "BENCHMARKS.md differs from benchmarks/results/*.json: rerun `make bench`, do not edit it by hand"


def test_missing_and_incomplete_suites_are_reported_not_fatal(monkeypatch):
    monkeypatch.setitem(registry.SUITES, "absent", "benchmarks.no_such_suite")
    monkeypatch.setitem(registry.SUITES, "no_run", "benchmarks.measure")  # a real module without run()
    records = {name: harness.run_suite(name, quick=True, command="cmd") for name in ("absent", "no_run")}
    assert records["absent"]["status"] == records["no_run"]["status"] == harness.UNAVAILABLE
    assert "not in this checkout" in records["absent"]["reason"]
    assert "has no run(quick)" in records["no_run"]["reason"]
    page = "\n".join(render.section(records["absent"]))
    assert "**Not available**: benchmarks.no_such_suite is not in this checkout" in page
    assert records["absent"]["meta"]["command"] == "cmd" and len(records["absent"]["meta"]["load average after"]) == 3


def test_table_rejects_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table("t", ["a", "b", "c"], [[1, 2]])


def test_unknown_suite_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["--only", "no_such_suite"])
    assert "invalid choice" in capsys.readouterr().err


def rows_of(record: dict) -> list[dict]:
    (only,) = record["tables"]
    return [dict(zip(only["columns"], row)) for row in only["rows"]]


@pytest.mark.slow
def test_quick_run_of_the_cpu_suites(tmp_path):
    command = [sys.executable, "-m", "benchmarks", "--quick", "--only", "training", "deployment", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS.md", "deployment.json", "training.json"]
    assert (tmp_path / "BENCHMARKS.md").read_text() == render.render(tmp_path)
    training, deployment = (json.loads((tmp_path / f"{s}.json").read_text()) for s in ("training", "deployment"))
    for record in (training, deployment):
        assert record["status"] == harness.OK, record["reason"]
        meta = record["meta"]
        assert meta["command"] == "python -m benchmarks " + " ".join(command[3:]) and meta["quick"] is True
        assert meta["seeds"] == [harness.SEED] and set(meta["versions"]) >= {"torch", "torchvision", "onnxruntime"}

    steps = {row["variant"]: row for row in rows_of(training)}
    assert set(steps) == {"jumpout", "blockout", "learned", "frozen (fine-tune)"}
    assert all(row["time ratio"] > 0 for row in steps.values())
    # Jumpout saves a keep mask where Dropout does: the same activations, exactly
    assert steps["jumpout"]["saved MiB"] == steps["jumpout"]["plain saved MiB"]

    latency = rows_of(deployment)
    for model in {row["model"] for row in latency}:
        for batch in (1, 32):
            got = {row["variant"]: row for row in latency if row["model"] == model and row["batch"] == batch}
            assert set(got) == {UNTOUCHED, EXPECTED, PRUNE}
            assert got[EXPECTED]["same ONNX ops"] == "yes" and got[EXPECTED]["MAC ratio"] == 1.0
            assert got[EXPECTED]["parameters"] == got[UNTOUCHED]["parameters"]
            assert got[PRUNE]["MAC ratio"] < 1.0 and got[PRUNE]["parameters"] < got[UNTOUCHED]["parameters"]
            assert all(row["p50 ms"] > 0 and row["p90 ms"] >= row["p50 ms"] for row in got.values())


def test_a_suite_skipped_here_keeps_the_result_measured_elsewhere(tmp_path):
    measured = {"suite": "gpu", "status": harness.OK, "tables": [], "meta": {"wall seconds": 100.0}}
    (tmp_path / "gpu.json").write_text(json.dumps(measured))
    skipped = {"suite": "gpu", "status": harness.SKIPPED, "reason": "no CUDA device", "meta": {}}
    harness.write(skipped, tmp_path)
    assert json.loads((tmp_path / "gpu.json").read_text()) == measured
    harness.write({**skipped, "suite": "fresh"}, tmp_path)  # nothing measured before: the skip is recorded
    assert json.loads((tmp_path / "fresh.json").read_text())["status"] == harness.SKIPPED


def test_the_page_totals_each_run():
    def record(suite, started, wall):
        return {"suite": suite, "meta": {"run started": started, "command": "python -m benchmarks", "wall seconds": wall}}
    lines = render.runs([record("training", "t1", 60.0), record("papers", "t1", 120.0), record("gpu", "t0", 30.0),
                         {"suite": "old", "meta": {"command": "x", "wall seconds": 9.0}}])
    assert "| t1 | `python -m benchmarks` | training, papers | 3.0 |" in lines
    assert "| t0 | `python -m benchmarks` | gpu | 0.5 |" in lines and not any("old" in line for line in lines)
