"""The equal-macs suite (maskfx vs Torch-Pruning L2 at the MACs L2 lands at) end to end at its
quick size, and the verdict it words from the paired differences. Accuracies are not compared:
the quick run is a smoke budget."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import equal_macs, harness, registry, render  # noqa: E402
from test_data_offline import FASHION_INSTALLED  # noqa: E402


def test_the_suite_is_registered():
    assert registry.load("equal-macs") is equal_macs


def test_its_seeds_are_not_the_budget_suites():
    from benchmarks.budget import FULL
    assert len(equal_macs.SEEDS) == 24 and not set(equal_macs.SEEDS) & set(FULL.seeds)


@pytest.mark.parametrize("differences, word", [
    ([0.4, 0.6, 0.5, 0.3], "maskfx ahead"),  # interval above zero
    ([-0.4, -0.6, -0.5, -0.3], "maskfx behind"),
    ([1.0, -1.0, 0.5, -0.4], "level"),  # spans zero
])
def test_the_verdict_follows_the_interval(differences, word):
    worded = equal_macs.verdict(differences)
    assert worded.startswith(word)
    assert f"ahead on {sum(d > 0 for d in differences)} seeds of 4" in worded


@pytest.mark.slow  # about 40 seconds on 2 cores
@pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")
def test_quick_run_pairs_maskfx_with_l2_at_its_macs(tmp_path):
    record = harness.run_suite(equal_macs.SUITE, quick=True, command="python -m benchmarks --quick --only equal-macs")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path).read_text())
    summary, per_seed = saved["tables"]
    rows = [dict(zip(summary["columns"], row)) for row in summary["rows"]]
    assert [r["arm"] for r in rows] == [equal_macs.UNTOUCHED, equal_macs.L2, equal_macs.MASKFX_AT_L2]
    l2, maskfx = rows[1], rows[2]
    assert maskfx["MAC ratio"] <= l2["MAC ratio"] + 1e-3  # maskfx meets the MACs L2 landed at
    assert l2["MAC ratio"] <= l2["MACs budget"]
    assert maskfx[equal_macs.VERSUS].endswith("(one seed: no interval)")
    assert len(per_seed["rows"]) == 3 * len(saved["meta"]["seeds"])
    assert f"## {saved['title']} (`equal-macs`)" in render.section(saved)
