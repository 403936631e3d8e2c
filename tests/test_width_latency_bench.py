"""The width-latency suite end to end at its quick size: every row (dense, maskfx at its default
channel multiple and at 8, 1, 16 and 32, Torch-Pruning rounded and unrounded) pruned, exported,
verified, timed and profiled, and the result file the page is rendered from. Timings are not
asserted: only that they were taken."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import harness, registry, render, width_latency  # noqa: E402


def test_the_suite_is_registered():
    assert registry.load("width-latency") is width_latency


@pytest.mark.slow  # about a minute on 2 cores: seven exports
def test_quick_run_writes_every_row(tmp_path):
    record = harness.run_suite(width_latency.SUITE, quick=True,
                               command="python -m benchmarks --quick --only width-latency")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path / "results").read_text())
    assert saved["suite"] == "width-latency" and saved["meta"]["quick"] is True
    assert saved["meta"]["seeds"] == [width_latency.SEED]
    only, profile = saved["tables"]
    assert only["columns"] == width_latency.COLUMNS
    rows = {row[0]: dict(zip(only["columns"], row)) for row in only["rows"]}
    assert list(rows) == [width_latency.DENSE, *width_latency.MASKFX_ROUNDINGS,
                          width_latency.TORCH_PRUNING, width_latency.TORCH_PRUNING_UNROUNDED]

    dense = rows[width_latency.DENSE]
    assert dense["MAC ratio"] == 1.0 and dense["narrowest conv"] == 64  # resnet18's stem
    assert dense["b1 latency ratio"] == dense["b32 latency ratio"] == 1.0
    for name, multiple in width_latency.MASKFX_ROUNDINGS.items():  # at the budget, at most 3% under it
        assert 0.97 * width_latency.BUDGET <= rows[name]["MAC ratio"] <= width_latency.BUDGET, name
        assert rows[name]["narrowest conv"] % multiple == 0, name
    for name in (width_latency.TORCH_PRUNING, width_latency.TORCH_PRUNING_UNROUNDED):  # from above, pruned
        assert rows[width_latency.MASKFX]["MAC ratio"] <= rows[name]["MAC ratio"] < 1.0, name
    assert rows[width_latency.TORCH_PRUNING]["narrowest conv"] % width_latency.ROUND_TO == 0
    for name, row in rows.items():  # exported, verified and timed; latency / MAC is the ratio of the ratios
        assert row["parameters"] <= dense["parameters"], name
        assert row["ORT b1 p50 ms"] > 0 and row["ORT b32 p50 ms"] > 0, name
        for batch in ("b1", "b32"):
            assert row[f"{batch} latency / MAC"] == pytest.approx(
                row[f"{batch} latency ratio"] / row["MAC ratio"], rel=0.01, abs=0.002), (name, batch)

    assert profile["columns"] == width_latency.PROFILE_COLUMNS
    profiled = {row[0]: dict(zip(profile["columns"], row)) for row in profile["rows"]}
    assert list(profiled) == list(rows)
    blocked = f"MAC ratio in {width_latency.BLOCK}-channel blocks"
    for name, row in profiled.items():
        assert row["ORT kernels"] > row["layout reorders"], name
        assert row["MAC ratio"] == rows[name]["MAC ratio"] and row[blocked] >= row["MAC ratio"] - 0.001, name
    default = profiled[width_latency.MASKFX]  # widths on the block: nothing padded, no reorders beyond dense's
    assert default[blocked] == pytest.approx(default["MAC ratio"], abs=0.001)
    assert default["layout reorders"] <= profiled[width_latency.DENSE]["layout reorders"]
    unrounded = profiled["maskfx, round_to=1"]  # widths such as 44: padded to the block
    assert unrounded[blocked] > unrounded["MAC ratio"] + 0.01

    notes = only["notes"]
    assert any(n.startswith("Exports: ") and n.count("verified") == len(rows) and "FAILED" not in n for n in notes)
    assert any("no verdict (quick run" in n for n in notes)
    assert f"## {saved['title']} (`width-latency`)" in render.section(saved)


def test_blocked_macs_pad_as_onnx_runtime_blocks():
    conv = lambda i, o, groups=1: nn.Conv2d(i, o, 1, groups=groups, bias=False)
    x = torch.randn(1, 3, 2, 2)
    # 3 -> 40 (outputs padded to 48, the image's 3 inputs not), 40 -> 24 (32 x 48), 24 -> 24 depthwise (as is)
    model = nn.Sequential(conv(3, 40), conv(40, 24), conv(24, 24, groups=24))
    assert width_latency.blocked_macs(model, x, 16) == 4 * (48 * 3 + 32 * 48 + 24)
    assert width_latency.blocked_macs(model, x, 8) == 4 * (40 * 3 + 24 * 40 + 24)
