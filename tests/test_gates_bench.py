"""The gates suite (hard-concrete vs straight-through channel gates) end to end at its quick
size: every arm trained, pruned under the budget and measured, and the result file the page is
rendered from. Accuracies are not compared: the quick run is a smoke budget."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import gates, harness, registry, render  # noqa: E402
from maskfx.techniques.channels.config import ESTIMATORS  # noqa: E402
from test_data_offline import FASHION_INSTALLED  # noqa: E402


def test_the_suite_is_registered():
    assert registry.load("gates") is gates


@pytest.mark.slow  # about half a minute on 2 cores
@pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")
def test_quick_run_measures_both_gates_under_the_budget(tmp_path):
    record = harness.run_suite(gates.SUITE, quick=True, command="python -m benchmarks --quick --only gates")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path).read_text())
    summary, per_seed = saved["tables"]
    rows = {row[0]: dict(zip(summary["columns"], row)) for row in summary["rows"]}
    assert list(rows) == [gates.UNTOUCHED, *ESTIMATORS]
    for estimator in ESTIMATORS:
        assert 0.97 * gates.BUDGET <= rows[estimator]["MAC ratio"] <= gates.BUDGET, estimator
        assert rows[estimator]["Δ vs untouched (pt, paired) [95% interval]"].endswith("(one seed: no interval)")
    assert len(per_seed["rows"]) == 3 * len(saved["meta"]["seeds"])
    assert any("straight-through minus hard-concrete" in n and "no verdict" in n for n in summary["notes"])
    assert f"## {saved['title']} (`gates`)" in render.section(saved)
