"""Runs suites and records each one's result with the conditions it was measured under."""
from __future__ import annotations

import json
import os
import platform
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import registry
from benchmarks.suite import SuiteSkipped

SEED = 0  # every suite starts from torch.manual_seed(SEED); a suite may report more in "seeds"
OK, SKIPPED, UNAVAILABLE, FAILED = "ok", "skipped", "not available", "failed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable cores": usable,
            "torch threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "platform": platform.platform()}


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


def run_suite(name: str, quick: bool, command: str, run_started: str | None = None) -> dict[str, Any]:
    """Run suite ``name`` and return its result with ``status``, ``reason`` and ``meta``. A suite
    that is missing, skips itself, or raises is recorded as such; it never stops the others.
    ``run_started`` names the invocation the suite belongs to, so the page can total a run."""
    load_before, began = os.getloadavg(), time.perf_counter()
    record: dict[str, Any] = {"suite": name, "title": name, "tables": [], "status": OK, "reason": ""}
    seeds = [SEED]
    try:
        module = registry.load(name)
        torch.manual_seed(SEED)
        produced = module.run(quick)
        seeds = produced.pop("seeds", seeds)
        record.update(produced)
    except registry.SuiteUnavailable as error:
        record.update(status=UNAVAILABLE, reason=str(error))
    except SuiteSkipped as error:
        record.update(status=SKIPPED, reason=str(error))
    except Exception as error:  # recorded and reported; the harness exits non-zero
        traceback.print_exc()
        record.update(status=FAILED, reason=f"{type(error).__name__}: {error}")
    record["meta"] = {
        "command": command, "run started": run_started, "quick": quick, "seeds": seeds, "machine": machine(), "versions": versions(),
        "wall seconds": round(time.perf_counter() - began, 1),
        "load average before": [round(v, 2) for v in load_before],
        "load average after": [round(v, 2) for v in os.getloadavg()],
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return record


def write(record: dict[str, Any], out: Path) -> Path:
    """Write ``out/<suite>.json``; a suite that skipped here (a GPU suite on a CPU machine) keeps
    the measured result an earlier run on another machine left there."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record['suite']}.json"
    if record["status"] == SKIPPED and path.exists() and json.loads(path.read_text())["status"] == OK:
        print(f"{record['suite']} skipped here ({record['reason']}); kept the measured {path}", flush=True)
        return path
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
