"""The papers' comparison suite: its helpers, and a smoke run of ``run(quick=True)`` checking the
result schema the benchmark command reads."""
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

import maskfx  # noqa: E402
from benchmarks import papers  # noqa: E402
from benchmarks.arms import Arm, Claim, Results, Run, accuracy_rows, claim_note, random_fixed_connectivity  # noqa: E402
from benchmarks.paper_models import cifar_resnet, cifar_resnext, small_cnn  # noqa: E402
from test_data_offline import FASHION_INSTALLED  # noqa: E402
from maskfx.layers.kofn import KOfNMasks  # noqa: E402


def check_suite(result: dict, suite: str) -> None:
    """The harness contract: JSON-serialisable, titled tables whose rows fit their columns and
    whose numbers are finite."""
    assert result["suite"] == suite and isinstance(result["title"], str)
    json.dumps(result)
    assert result["tables"]
    for table in result["tables"]:
        assert isinstance(table["title"], str) and all(isinstance(c, str) for c in table["columns"])
        assert table["rows"] and all(len(row) == len(table["columns"]) for row in table["rows"])
        numbers = [v for row in table["rows"] for v in row if isinstance(v, (int, float))]
        assert all(math.isfinite(v) for v in numbers)
        assert all(isinstance(note, str) and note for note in table["notes"])


def results_of(accuracies: dict[str, list[float]]) -> Results:
    return Results({name: [Run(a / 100, 10) for a in values] for name, values in accuracies.items()})


@pytest.mark.parametrize("better, worse, verdict", [
    ([90, 91, 92], [89, 90, 91], "pt over 3 paired seed(s): reproduced"),
    ([90, 89, 92], [89, 90, 91], ": not clearly reproduced (the seeds disagree)"),
    ([88, 89, 90], [89, 90, 91], ": NOT reproduced at this scale"),
])
def test_claim_verdict_follows_the_paired_differences(better, worse, verdict):
    note = claim_note(Claim("a", "b"), results_of({"a": better, "b": worse}), {"a": 75.0, "b": 74.0})
    assert note.endswith(verdict)
    assert note.startswith("a > b: paper +1.00 pt; here ")
    mean = sum(b - w for b, w in zip(better, worse)) / 3
    assert f"here {mean:+.2f}" in note


def test_smoke_claims_carry_no_verdict():
    note = claim_note(Claim("a", "b"), results_of({"a": [90.0], "b": [80.0]}), {}, verdict=False)
    assert "no verdict" in note and "reproduced" not in note


def test_accuracy_rows_report_mean_std_and_pruned_parameters():
    arms = [Arm("a", lambda e, s: nn.Identity(), [], paper=70.0)]
    results = Results({"a": [Run(0.90, 100, 0.90, 60), Run(0.94, 100, 0.94, 80)]})
    columns, rows = accuracy_rows(arms, results, "exact")
    row = dict(zip(columns, rows[0]))
    assert row["test acc % (mean)"] == 92.0 and row["std"] == pytest.approx(2.83, abs=0.01)
    assert row["parameters after pruning (mean)"] == 70 and row["paper %"] == 70.0


def test_random_fixed_connectivity_is_frozen_seeded_and_k_of_n():
    x = torch.randn(2, 3, 8, 8)

    def fixed(seed):
        net = maskfx.transform(cifar_resnet(2), maskconnect=maskfx.MaskConnectConfig(2, "uniform", "multinomial"),
                               example_inputs=(x,))
        random_fixed_connectivity(net, seed)
        layers = [m for m in net.modules() if isinstance(m, KOfNMasks)]
        assert layers and all(m.is_frozen and (m.active().sum(-1) == m.fan_in).all() for m in layers)
        return torch.cat([m.active().flatten() for m in layers])

    assert torch.equal(fixed(3), fixed(3))
    assert any(not torch.equal(fixed(3), fixed(seed)) for seed in range(4, 8))


def test_paper_models_fit_the_passes():
    """Each table's network has the sites its paper's comparison needs."""
    x = torch.randn(2, 3, 8, 8)
    jump = maskfx.transform(small_cnn(0.1, hidden=(16,)), jumpout=maskfx.JumpoutConfig(placement="dropout"))
    assert maskfx.summary(jump).count("jumpout") == 3
    gates = maskfx.transform(cifar_resnext(), gateconnect=maskfx.GateConnectConfig(fan_in=4), example_inputs=(x,))
    assert maskfx.summary(gates).count("gateconnect") == 3
    assert [m.conv2.groups for m in cifar_resnext().stages] == [8] * 6
    assert [m.conv2.in_channels for m in cifar_resnext().stages] == [32, 32, 64, 64, 128, 128]  # C x w, w = 4, 8, 16


@pytest.mark.slow
def test_papers_quick_run_smoke():
    result = papers.run(quick=True)
    check_suite(result, "papers")
    assert len(result["tables"]) == 4 and "the digits" in result["title"]
    assert all(0 <= row[1] <= 100 for table in result["tables"] for row in table["rows"])
    assert all(f"{papers.QUICK.test_images} test images" in table["notes"][-1] for table in result["tables"])


@pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")
def test_the_papers_split_draws_training_images_by_seed_and_keeps_the_test_set():
    from benchmarks.arms import fashion_split
    first, again, other = (fashion_split(50, None, seed) for seed in (0, 0, 1))
    assert len(first.train) == 50 and len(first.test) == 10_000 and first.input_shape == (3, 8, 8)
    assert first.train.indices == again.train.indices != other.train.indices
    assert len(fashion_split(50, 200, 0).test) == 200


def test_the_papers_suite_skips_without_its_data(monkeypatch):
    from benchmarks.suite import SuiteSkipped
    from maskfx.train import DataError

    def absent(*args):
        raise DataError("fashion-mnist: not installed; run `make data`")
    monkeypatch.setattr(papers, "fashion_split", absent)
    monkeypatch.setattr(papers, "QUICK", dataclasses.replace(papers.QUICK, data="fashion-mnist"))
    with pytest.raises(SuiteSkipped, match="make data"):
        papers.run(quick=True)


def test_unstable_rows_are_named():
    table = papers.Table("t", [Arm("steady", None, []), Arm("wild", None, [])], [], "no", "", "")
    notes = papers._spread_notes(table, results_of({"steady": [90.0, 91.0, 92.0], "wild": [40.0, 80.0, 60.0]}))
    assert len(notes) == 1 and notes[0].startswith("wild: seeds range 40.0-80.0%")
