"""The budget suite end to end on the real Fashion-MNIST files (skipped without them): resnet18
trained, pruned to a MACs budget by maskfx's channel gates and by Torch-Pruning, fine-tuned with
distillation, exported and timed against the untouched model, and the result file the page is
rendered from."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import budget, figures, harness, render  # noqa: E402
from test_data_offline import FASHION_INSTALLED  # noqa: E402

RESNET18_10 = 11_181_642  # torchvision resnet18 with a 10-class head
RESNET18_32PX_MACS = 37_016_576  # one 32x32 image


@pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")
def test_quick_run_measures_every_arm(tmp_path):
    record = harness.run_suite(budget.SUITE, quick=True, command="python -m benchmarks --quick --only budget")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path / "results").read_text())
    assert saved["meta"]["quick"] is True and saved["meta"]["seeds"] == list(budget.QUICK.seeds)
    summary, per_seed = saved["tables"]
    assert summary["columns"] == budget.COLUMNS and per_seed["columns"] == budget.SEED_COLUMNS
    rows = {(row[1], row[0]): dict(zip(summary["columns"], row)) for row in summary["rows"]}
    (b,) = budget.QUICK.budgets
    assert list(rows) == [(budget.START, None), (budget.UNTOUCHED, None), *((method, b) for method in budget.METHODS)]
    assert set(budget.METHODS) == {*budget.MASKFX_ARMS, *budget.PEERS}

    untouched, start = rows[budget.UNTOUCHED, None], rows[budget.START, None]
    assert untouched["MAC ratio"] == start["MAC ratio"] == 1.0
    assert untouched["parameters"] == start["parameters"] == RESNET18_10
    assert untouched["Δ vs untouched (pt, paired)"] is None
    assert untouched["ORT b1 / untouched"] == untouched["ORT b32 / untouched"] == 1.0
    assert start["ORT b1 p50 ms"] is None  # the start is not deployed, only measured
    for method in budget.METHODS:  # pruned under the budget, exported, timed
        row = rows[method, b]
        assert 0 < row["MAC ratio"] <= b and row["parameters"] < RESNET18_10
        assert 0 < row["ORT b1 p50 ms"] and 0 < row["ORT b32 p50 ms"]
        assert row["ORT b1 / untouched"] > 0 and row["ORT b32 / untouched"] > 0
        difference = row["test acc %"] - untouched["test acc %"]
        assert row["Δ vs untouched (pt, paired)"] == pytest.approx(difference, abs=0.02)
    assert all(0 <= row["test acc %"] <= 100 for row in rows.values())

    assert len(per_seed["rows"]) == len(rows) * len(budget.QUICK.seeds)
    assert {row[2] for row in per_seed["rows"]} == {budget.START, budget.UNTOUCHED, *budget.METHODS}
    notes = summary["notes"]
    assert any(f"tested on {budget.QUICK.test_images} test images" in note for note in notes)
    for mine in budget.MASKFX_ARMS:  # each paired with the peers trained alike
        assert any(note.startswith(f"Budget {b}: {mine} ") and "No verdict (smoke budget)" in note for note in notes)
    assert budget.counterparts(budget.TORCH_PRUNING_TAYLOR_PLAIN) == (budget.MASKFX_PLAIN,)
    assert budget.counterparts(budget.TORCH_PRUNING) == (budget.MASKFX, budget.MASKFX_AT_PEER)
    # maskfx at the peer's MACs: met from under, within 3% as resnet18's budgets are (test_channels)
    at_peer, peer = rows[budget.MASKFX_AT_PEER, b], rows[budget.TORCH_PRUNING, b]
    assert 0.97 * peer["MAC ratio"] <= at_peer["MAC ratio"] <= peer["MAC ratio"]
    assert f"## {saved['title']} (`budget`)" in render.section(saved)
    drawn = figures.draw(saved, tmp_path)  # accuracy against MACs and latency, from the file alone
    assert drawn == tmp_path / "budget.png" and drawn.read_bytes().startswith(b"\x89PNG")


def test_the_batch_one_floor_recovers_a_planted_line():
    """Latencies planted on 0.3 ms + 2 ms x MAC ratio: the note gives that line back, the ratio a
    model at the goal's budget would run at on it, and the MACs the latency goal would take."""
    macs = {budget.UNTOUCHED: 1.0, "a": 0.75, "b": 0.5, "c": 0.35}
    first = {key: budget.Arm(None, macs=round(1e6 * fraction)) for key, fraction in macs.items()}
    latency = {key: (0.3 + 2.0 * fraction, 1.0) for key, fraction in macs.items()}
    note = budget.batch_one_floor(first, latency)
    dense = 0.3 + 2.0
    assert "p50 ms = 0.300 + 2.000 x MAC ratio" in note and "r^2 1.00" in note
    assert f"{0.3 / dense:.0%} of the untouched model's call" in note
    assert f"runs {(0.3 + 2.0 * budget.GOAL_BUDGET) / dense:.3f}x at batch 1" in note
    assert f"takes {(budget.GOAL_LATENCY * dense - 0.3) / 2.0:.3f} of the MACs" in note
    falling = {key: (1.0 - 0.1 * fraction, 1.0) for key, fraction in macs.items()}  # noise, no line: no floor read
    assert "fit no line" in budget.batch_one_floor(first, falling)


def test_the_untouched_model_costs_what_resnet18_costs():
    import torch
    import torchvision

    from maskfx.report import count_macs

    model = torchvision.models.resnet18(weights=None, num_classes=10)
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == RESNET18_32PX_MACS


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_torch_pruning_walks_with_the_suites_settings(importance):
    """The suite's Torch-Pruning arms (``maskfx.peers.torch_pruning``, tested in test_peers.py) with
    its settings: round_to as maskfx's default, up to ratio 0.9, the first step at or under the budget."""
    import torch
    import torchvision

    from maskfx.report import count_macs

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    example = torch.randn(2, 3, 32, 32)
    target = int(0.5 * RESNET18_32PX_MACS)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    (half,) = budget.torch_pruned(model, example, [target], steps=18, importance=importance, batches=batches)
    assert count_macs(half.model, example) == half.macs <= target
    assert 0 < half.steps <= 18 and half.ratio == pytest.approx(budget.MAX_PRUNING_RATIO * half.steps / 18)
    convs = [m for m in half.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels % budget.ROUND_TO == 0 for m in convs)
    assert half.model.fc.out_features == 10 and model.fc.in_features == 512  # the head kept, the start untouched


def test_absent_data_skips_the_suite_saying_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "DATA", f"fashion-mnist:{tmp_path}")
    record = harness.run_suite(budget.SUITE, quick=True, command="python -m benchmarks --quick --only budget")
    assert record["status"] == harness.SKIPPED and "make data" in record["reason"]
