"""The suites, by name, imported only when run, so a suite whose module has not landed yet (or
lacks ``run``) is reported as not available instead of breaking the harness."""
from __future__ import annotations

import importlib
from types import ModuleType

SUITES: dict[str, str] = {  # suite name -> module exposing SUITE and run(quick)
    "training": "benchmarks.training",
    "deployment": "benchmarks.deployment",
    "gpu": "benchmarks.gpu",
    "gateconnect": "benchmarks.bench_gateconnect",
    "papers": "benchmarks.papers",
    "transfer": "benchmarks.transfer",
    "budget": "benchmarks.budget",
    "width-latency": "benchmarks.width_latency",
    "gates": "benchmarks.gates",
    "equal-macs": "benchmarks.equal_macs",
    "equal-macs-deep": "benchmarks.equal_macs_deep",
}


class SuiteUnavailable(Exception):
    """The suite's module is missing, fails to import, or has no ``run(quick)``."""


def load(name: str) -> ModuleType:
    """The module of suite ``name``, checked against the contract, or ``SuiteUnavailable``."""
    module_name = SUITES[name]
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # absent, a missing dependency, or a script not yet importable as a module
        if isinstance(error, ModuleNotFoundError) and error.name == module_name:
            raise SuiteUnavailable(f"{module_name} is not in this checkout") from error
        raise SuiteUnavailable(f"{module_name} cannot be imported: {type(error).__name__}: {error}") from error
    if not callable(getattr(module, "run", None)):
        raise SuiteUnavailable(f"{module_name} has no run(quick) yet")
    if getattr(module, "SUITE", None) != name:
        raise SuiteUnavailable(f"{module_name}.SUITE is {getattr(module, 'SUITE', None)!r}, expected {name!r}")
    return module
