"""The equal-macs suites (maskfx vs Torch-Pruning L2 at the MACs L2 lands at: at the issue's
budgets, and deep ones) end to end at their quick size, and the verdict they word from the paired
differences. Accuracies are not compared: the quick run is a smoke budget."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import equal_macs, equal_macs_deep, harness, registry, render  # noqa: E402
from test_data_offline import FASHION_INSTALLED  # noqa: E402


SUITES = [equal_macs, equal_macs_deep]


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.SUITE)
def test_the_suite_is_registered(suite):
    assert registry.load(suite.SUITE) is suite


def test_no_two_suites_share_a_seed():
    from benchmarks.budget import FULL
    seeds = [FULL.seeds, equal_macs.SEEDS, equal_macs_deep.SEEDS]
    assert len(equal_macs.SEEDS) == len(equal_macs_deep.SEEDS) == 24
    assert len(set().union(*map(set, seeds))) == sum(map(len, seeds))


def test_the_deep_suite_cuts_below_the_issues_budgets():
    assert max(equal_macs_deep.BUDGETS) < min(equal_macs.BUDGETS)


@pytest.mark.parametrize("differences, word", [
    ([0.4, 0.6, 0.5, 0.3], "maskfx ahead"),  # interval above zero
    ([-0.4, -0.6, -0.5, -0.3], "maskfx behind"),
    ([1.0, -1.0, 0.5, -0.4], "level"),  # spans zero
])
def test_the_verdict_follows_the_interval(differences, word):
    worded = equal_macs.verdict(differences)
    assert worded.startswith(word)
    assert f"ahead on {sum(d > 0 for d in differences)} seeds of 4" in worded


@pytest.mark.slow  # about 20 seconds each on 2 cores
@pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.SUITE)
def test_quick_run_pairs_maskfx_with_l2_at_its_macs(suite, tmp_path):
    record = harness.run_suite(suite.SUITE, quick=True, command=f"python -m benchmarks --quick --only {suite.SUITE}")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path).read_text())
    summary, per_seed, *started = saved["tables"]
    multipliers = getattr(suite, "MULTIPLIERS", ())
    maskfx_arms = [equal_macs.MASKFX_AT_L2] + [equal_macs.started_at(m) for m in multipliers]
    rows = [dict(zip(summary["columns"], row)) for row in summary["rows"]]
    assert [r["arm"] for r in rows] == [equal_macs.UNTOUCHED, equal_macs.L2] + maskfx_arms
    l2 = rows[1]
    assert l2["MACs budget"] == suite.BUDGETS[0] and l2["MAC ratio"] <= l2["MACs budget"]
    for maskfx in rows[2:]:
        assert maskfx["MAC ratio"] <= l2["MAC ratio"] + 1e-3  # maskfx meets the MACs L2 landed at
        assert maskfx[equal_macs.VERSUS].endswith("(one seed: no interval)")
    assert len(per_seed["rows"]) == (2 + len(maskfx_arms)) * len(saved["meta"]["seeds"])
    assert len(started) == bool(multipliers)  # the start's own table only where the suite varies it
    for table in started:
        by_arm = {row[1]: dict(zip(table["columns"], row)) for row in table["rows"]}
        assert list(by_arm) == maskfx_arms
        assert all(0 < r["expected MAC ratio at freeze (mean)"] <= 1 for r in by_arm.values())
    assert f"## {saved['title']} (`{suite.SUITE}`)" in render.section(saved)
