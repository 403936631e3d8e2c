"""``maskfx demo --quick`` (CI): the report folder holds the report, its JSON, the ONNX files and
the plots, and the report's numbers are this run's, baseline included; the budget parts (resnet18
and the ResNeXt) have the peer, Torch-Pruning from the same start at or under the MACs maskfx's
pruned model reached."""
import json

import pytest

from maskfx.cli import main
from maskfx.cli.demo import PEER, PEER_ROUND_TO, PEER_ROW


def test_quick_demo_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()
    assert report["quick"] and [p["title"].split(":")[0] for p in report["parts"]] == [
        "resnet18 at 0.5 of the MACs", "resnet18", "small ResNeXt (C = 8)", "small ResNeXt (C = 8) at 0.5 of the MACs"]
    for part in report["parts"]:
        rows = {row["model"]: row for row in part["rows"]}
        budgeted = part["collapse"]["prune"]["budget"] is not None
        assert list(rows) == ["baseline, trained on", "transformed (eval)", "collapsed: expected", "collapsed: prune"] \
            + ["collapsed: prune, BatchNorm recalibrated", PEER_ROW] * budgeted
        for name, key in (("baseline, trained on", "baseline, trained on"), ("collapsed: prune", "prune"),
                          *[(PEER_ROW, PEER)] * budgeted):
            export = part["exports"][key]  # exported, verified and timed
            assert rows[name]["latency_p50_ms"] > 0 and rows[name]["onnx_nodes"] == export["node_count"] > 0
            assert export["ok"] and export["random_ops"] == [] and export["provider"] == "CPUExecutionProvider"
            assert "ORT parity" in rows[name]["verification"]
        collapse = part["collapse"]  # the CollapseReports of this run, as data
        assert collapse["expected"]["exact"] is True and collapse["expected"]["shift"]["max_abs_diff"] < 1e-4
        for mode in ("expected", "prune"):
            assert collapse[mode]["before"] == {"parameters": rows["transformed (eval)"]["parameters"],
                                        "macs": rows["transformed (eval)"]["macs"]}
            assert collapse[mode]["after"] == {"parameters": rows[f"collapsed: {mode}"]["parameters"],
                                       "macs": rows[f"collapsed: {mode}"]["macs"]}
            assert f"| {mode} | **whole model** |" in markdown
        assert rows["collapsed: prune"]["macs"] <= rows["collapsed: expected"]["macs"]
        if budgeted:  # the demo's default budget, met within 3% and under it
            assert 0.97 * 0.5 <= part["collapse"]["prune"]["achieved"] <= 0.5
        ours, base = rows["collapsed: prune"], rows["baseline, trained on"]
        comparisons = [(c["model"], c["against"]) for c in part["comparisons"]]
        assert comparisons == [(ours["model"], base["model"])] + [(ours["model"], PEER_ROW)] * budgeted
        versus = part["comparisons"][0]  # the numbers a reader judges by, as data and on the page
        assert versus["macs_ratio"] == pytest.approx(ours["macs"] / base["macs"])
        assert versus["accuracy_difference"] == pytest.approx(ours["accuracy"] - base["accuracy"])
        assert versus["latency_p50_ratio"] == pytest.approx(ours["latency_p50_ms"] / base["latency_p50_ms"])
        for c in part["comparisons"]:
            assert f"**{c['model']} vs {c['against']}:** parameters x{c['parameters_ratio']:.3f}" in markdown
        if budgeted:  # the peer: the same target, the MACs maskfx reached; at or under it (never over)
            theirs, facts = rows[PEER_ROW], part["peer"]
            assert facts["target_macs"] == ours["macs"] and theirs["macs"] == facts["macs"] <= ours["macs"]
            assert theirs["macs"] >= 0.75 * ours["macs"]  # under, not far: it moves in multiples of round_to
            assert theirs["parameters"] < base["parameters"] and facts["steps_taken"] > 0
            assert facts["round_to"] == PEER_ROUND_TO
            assert [r["epoch"] for r in part["histories"]["Torch-Pruning"]] == [3, 4]  # trained as long
            assert "Torch-Pruning" in part["recipe"] and f"| {PEER_ROW} | {theirs['accuracy']:.4f} |" in markdown
        else:
            assert part["peer"] is None
        assert f"{rows['baseline, trained on']['accuracy']:.4f}" in markdown  # the table shows this run's numbers
        assert [r["epoch"] for r in part["histories"]["transformed"]] == [3, 4]  # after the 2 baseline epochs
        for plot in part["plots"]:
            assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG" and f"]({plot})" in markdown
    assert {"budget_channels.png", "budget_accuracy_cost.png", "resnet_training.png", "resnet_blockout_clusters.png",
            "resnet_maskconnect.png", "resnext_gateconnect.png", "resnext_budget_channels.png",
            "resnext_budget_accuracy_cost.png"} <= {p for part in report["parts"] for p in part["plots"]}
    assert {"budget_pruned.onnx", "budget_torch_pruning.onnx", "resnet_baseline.onnx", "resnet_pruned.onnx",
            "resnext_baseline.onnx", "resnext_pruned.onnx", "resnext_budget_pruned.onnx",
            "resnext_budget_torch_pruning.onnx"} <= {p.name for p in tmp_path.iterdir()}
