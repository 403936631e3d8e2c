"""README.md's headline figures, rendered from the results files that current code wrote.

README quotes its headline tables between markers naming what renders them::

    <!-- figures: budget -->
    ...a table rendered by FIGURES["budget"]...
    <!-- /figures -->

``python -m benchmarks`` rewrites every marked block from its file after each run (``--render-only``
without running anything, e.g. after ``maskfx demo --out benchmarks/demo``), and ``tests/test_readme_figures.py`` re-renders them and checks README is
unchanged, as it does for BENCHMARKS.md: a figure in these blocks cannot drift from its file or be
edited by hand.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Callable

from benchmarks.budget import MASKFX_ARMS, counterparts
from benchmarks.equal_macs import DELTA, STARTED_VERSUS, VERSUS
from benchmarks.measure import REUSED
from benchmarks.stats import worded
from benchmarks.suite import per_seed, rows_of

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


def _load(relative: str) -> dict[str, Any]:
    return json.loads((ROOT / relative).read_text())


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _times(value: float) -> str:
    return f"x{value:.3f}"


def demo() -> str:
    """Every part of the demo's last full run: accuracy, size and ORT latency beside its baseline."""
    report = _load("benchmarks/demo/report.json")
    rows = []
    for part in report["parts"]:
        label = part["title"].split(":")[0]
        base = part["rows"][0]
        for row in part["rows"]:
            timed = row["latency_p50_ms"] is not None
            latency = (f"{row['latency_p50_ms']:.2f} / {row['latency_p90_ms']:.2f}"
                       + (f" ({_times(row['latency_p50_ms'] / base['latency_p50_ms'])})" if row is not base else "")
                       if timed else "-")
            ratio = (lambda key: f" ({_times(row[key] / base[key])})" if row is not base else "")
            rows.append([label, row["model"], f"{100 * row['accuracy']:.1f}%",
                         f"{row['parameters']:,}{ratio('parameters')}", f"{row['macs']:,}{ratio('macs')}", latency,
                         str(row["onnx_nodes"]) if row["onnx_nodes"] is not None else "-"])
    return _table(["part", "model", "test accuracy", "parameters", "MACs per image", "ORT p50 / p90 ms",
                   "ONNX nodes"], rows)


def budget() -> str:
    """The budget suite per budget and method: accuracy, the paired difference to the untouched
    model with its 95% interval over the seeds, and maskfx minus each Torch-Pruning arm trained
    alike (distilled or not; distilled, also maskfx at the peer's own MACs), paired likewise."""
    summary, seeds_table = _load("benchmarks/results/budget.json")["tables"]
    seeds = per_seed(seeds_table, "MACs budget", "method")
    untouched = next(v for (b, m), v in seeds.items() if m.startswith("untouched"))
    rows = []
    for row in rows_of(summary):
        if row["MACs budget"] is None:
            continue
        mine = seeds[(row["MACs budget"], row["method"])]
        rows.append([str(row["MACs budget"]), row["method"], f"{row['test acc %']:.2f} ± {row['acc std']:.2f}",
                     worded([mine[s] - untouched[s] for s in mine]), f"{row['MAC ratio']:.3f}",
                     f"{row['parameters']:,}"])
        if row["method"] not in MASKFX_ARMS:
            for mine_label in counterparts(row["method"]):
                ours = seeds[(row["MACs budget"], mine_label)]
                rows.append([str(row["MACs budget"]), f"{mine_label} minus {row['method']}", "", worded(
                    [ours[s] - mine[s] for s in mine]), "", ""])
    base = next(r for r in rows_of(summary) if r["method"].startswith("untouched"))
    rows.insert(0, ["-", base["method"], f"{base['test acc %']:.2f} ± {base['acc std']:.2f}", "", "1.000",
                    f"{base['parameters']:,}"])
    return _table(["MACs budget", "method", "test acc % (mean ± std)", "pt vs untouched, paired [95% interval]",
                   "MAC ratio", "parameters"], rows)


def width_latency() -> str:
    """Latency per MAC of each 0.5-MAC resnet50 in the width-latency suite, and where ONNX Runtime's
    own profile says the time goes."""
    timing, profile = _load("benchmarks/results/width-latency.json")["tables"]
    blocked = next(c for c in profile["columns"] if c.endswith("-channel blocks"))
    return _table(["model", "MAC ratio", "narrowest conv", "ORT latency / MAC ratio, b1", "b32"],
                  [[r["model"], f"{r['MAC ratio']:.3f}", str(r["narrowest conv"]), f"{r['b1 latency / MAC']:.3f}",
                    f"{r['b32 latency / MAC']:.3f}"] for r in rows_of(timing)]) + "\n" + \
        _table(["model", "ORT kernels (b32)", "layout reorders", blocked, "kernel time ratio"],
               [[r["model"], str(r["ORT kernels"]), str(r["layout reorders"]), f"{r[blocked]:.3f}",
                 f"{r['kernel time ratio']:.3f}"] for r in rows_of(profile)])


def gates() -> str:
    """The gates suite: each estimator's accuracy and its paired difference to the untouched model."""
    summary, seeds_table = _load("benchmarks/results/gates.json")["tables"]
    rows = rows_of(summary)
    seeds = {arm: by_seed for (arm,), by_seed in per_seed(seeds_table, "arm").items()}
    delta = "Δ vs untouched (pt, paired) [95% interval]"
    table = [[r["arm"], f"{r['test acc %']:.2f} ± {r['acc std']:.2f}", r[delta] or "", f"{r['MAC ratio']:.3f}",
              f"{r['parameters']:,}"] for r in rows]
    hard, straight = rows[1]["arm"], rows[2]["arm"]
    table.append([f"{straight} minus {hard}", "", worded([seeds[straight][s] - seeds[hard][s] for s in seeds[hard]]),
                  "", ""])
    return _table(["arm", "test acc % (mean ± std)", "pt vs untouched, paired [95% interval]", "MAC ratio",
                   "parameters"], table)


def equal_macs(suite: str = "equal-macs") -> str:
    """An equal-macs suite (``equal-macs`` or ``equal-macs-deep``): the untouched model, Torch-Pruning
    L2 and maskfx at L2's MACs per budget over its fresh seeds, each against the untouched model and
    maskfx against L2, paired."""
    summary = _load(f"benchmarks/results/{suite}.json")["tables"][0]
    return _table(["MACs budget", "arm", "MAC ratio", "test acc % (mean ± std)",
                   "pt vs untouched, paired [95% interval]", "maskfx minus L2, paired [95% interval]"],
                  [["-" if r["MACs budget"] is None else str(r["MACs budget"]), r["arm"], f"{r['MAC ratio']:.3f}",
                    f"{r['test acc %']:.2f} ± {r['acc std']:.2f}", r[DELTA] or "", r[VERSUS] or ""]
                   for r in rows_of(summary)])


def multiplier_start() -> str:
    """The equal-macs-deep suite's maskfx arms side by side: the budget's multiplier at its default
    start and at another, with how much of the cut their gates had learned when freeze selected."""
    starts = _load("benchmarks/results/equal-macs-deep.json")["tables"][2]
    return _table(["MACs budget", "arm", "multiplier's start", "expected MAC ratio at freeze",
                   "pt vs the default start, paired [95% interval]"],
                  [[str(r["MACs budget"]), r["arm"], r["multiplier at the first structure step"],
                    f"{r['expected MAC ratio at freeze (mean)']:.3f}", r[STARTED_VERSUS] or ""]
                   for r in rows_of(starts)])


def papers() -> str:
    """The papers suite: each table's methods, mean ± std over the seeds, beside the paper's figure."""
    rows = []
    for table in _load("benchmarks/results/papers.json")["tables"]:
        paper = table["title"].split(":")[0]
        for r in rows_of(table):
            rows.append([paper, r["method"], f"{r['test acc % (mean)']:.2f} ± {r['std']:.2f}",
                         "" if r["paper %"] is None else f"{r['paper %']}"])
    return _table(["paper, table", "method", "test acc % (mean ± std)", "paper's %"], rows)


def transfer() -> str:
    """The EfficientNet-Lite0 transfer case, untouched against maskfx."""
    rows = rows_of(_load("benchmarks/results/transfer.json")["tables"][0])
    return _table(["arm", "test accuracy", "parameters", "MACs", "ORT p50 / untouched"],
                  [[r["model"], f"{r['test accuracy %']:.2f}%", f"{r['parameters']:,}", f"{r['MACs per image']:,}",
                    "" if r["p50 / untouched"] is None else str(r["p50 / untouched"])] for r in rows])


def default_transforms() -> str:
    """Each default transform against its untouched model on Fashion-MNIST, from a trained start
    and from scratch (``benchmarks.bench_accuracy``'s files): per seed, mean and the paired
    difference with its 95% interval."""
    rows = []
    for start in ("trained", "scratch"):
        saved = _load(f"benchmarks/accuracy/fashion-{start}.json")
        untouched = {r["model"]: r["accuracy"] for r in saved["rows"] if r["setting"].startswith("untouched")}
        for r in saved["rows"]:
            own = r["setting"].startswith("untouched")
            deltas = [100 * (a - u) for a, u in zip(r["accuracy"], untouched[r["model"]])]
            rows.append([start, f"`{r['setting']}`", r["model"], " / ".join(f"{100 * a:.2f}" for a in r["accuracy"]),
                         f"{100 * r['mean']:.2f}", "-" if own else worded(deltas),
                         "/".join(f"{k:.3f}" for k in r["pruned parameters"])])
    return _table(["start", "setting", "model", "test acc % per seed", "mean", "pt vs untouched, paired [95% interval]",
                   "pruned parameters (fraction)"], rows)


def _meets(value: float, goal: str) -> str:
    """Whether ``value`` meets a goal written ``"<= X"`` (the suites' form); other goals are reported, not judged."""
    bound = re.fullmatch(r"<= ([\d.]+)", goal.strip())
    return "" if bound is None else ("yes" if value <= float(bound[1]) else "**no**")


def _batch_and_size(title: str) -> tuple[str, str]:
    """The batch and image size the gateconnect suite states in a table's title: ``(b8, 64 px, ...``."""
    setting = re.search(r"\(b(\d+), (\d+) px", title)
    return setting[1], setting[2]


def training_cost() -> str:
    """Every training-step ratio of the training and gateconnect suites against its goal: plain
    allocation and with freed memory reused (as the ``maskfx`` command line trains)."""
    rows = []
    for table in _load("benchmarks/results/training.json")["tables"]:
        reused = table["title"].endswith(REUSED)
        rows += [[r["technique"], f"{r['setting']}, {r['variant']}", "yes" if reused else "no", f"{r['time ratio']:.2f}",
                  f"{r['memory ratio']:.2f}", r["goal (time)"], _meets(r["time ratio"], r["goal (time)"])]
                 for r in rows_of(table)]
    steps = _load("benchmarks/results/gateconnect.json")["tables"][0]
    batch, size = _batch_and_size(steps["title"])
    for r in rows_of(steps):
        reused = r["model"].endswith(REUSED)
        rows.append(["GateConnect vs the original ResNeXt", f"{r['model'].removesuffix(REUSED)} b{batch} {size}px "
                     f"K={r['K']}, learned", "yes" if reused else "no", f"{r['ratio']:.2f}", f"{r['saved ratio']:.2f}",
                     r["goal"], _meets(r["ratio"], r["goal"])])
    return _table(["technique", "setting", "freed memory reused", "step time / plain", "saved activations / plain",
                   "goal (time)", "met"], rows)


def deployment() -> str:
    """Every collapsed model's ONNX Runtime latency against its untouched export, with the MAC
    ratio beside it (the deployment suite's planted structures and GateConnect's random gates)."""
    rows = [[r["model"], r["variant"], str(r["batch"]), f"{r['p50 / untouched']:.3f}", f"{r['MAC ratio']:.3f}",
             f"{r['p50 ratio / MAC ratio']:.3f}", f"{r['ONNX nodes']}"]
            for r in rows_of(_load("benchmarks/results/deployment.json")["tables"][0]) if r["variant"] != "untouched"]
    latency = _load("benchmarks/results/gateconnect.json")["tables"][1]
    batch, _ = _batch_and_size(latency["title"])
    rows += [["resnext50_32x4d 224px", f"GateConnect {r['collapse']} (random gates)", batch, f"{r['ratio']:.3f}",
              f"{r['MAC ratio']:.3f}", f"{r['latency / MAC ratio']:.3f}", str(r["ONNX nodes"])]
             for r in rows_of(latency)]
    return _table(["model", "collapse", "batch", "ORT p50 / untouched", "MAC ratio", "latency / MAC ratio",
                   "ONNX nodes"], rows)


FIGURES: dict[str, Callable[[], str]] = {"demo": demo, "budget": budget, "width-latency": width_latency,
                                         "gates": gates, "equal-macs": equal_macs,
                                         "equal-macs-deep": functools.partial(equal_macs, "equal-macs-deep"),
                                         "multiplier-start": multiplier_start,
                                         "papers": papers,
                                         "transfer": transfer,
                                         "default-transforms": default_transforms, "training-cost": training_cost,
                                         "deployment": deployment}


def blocks(text: str) -> dict[str, str]:
    """README's marked blocks by name, as they stand."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def rendered(text: str) -> str:
    """``text`` with every marked block rendered afresh; a block naming no renderer is an error."""
    unknown = set(blocks(text)) - set(FIGURES)
    if unknown:
        raise KeyError(f"README blocks without a renderer: {sorted(unknown)}; known: {sorted(FIGURES)}")
    return BLOCK.sub(lambda m: m.group(1) + FIGURES[m["name"]]() + m.group(4), text)


def update(path: Path = README) -> None:
    path.write_text(rendered(path.read_text()))
