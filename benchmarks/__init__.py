"""maskfx's benchmarks, run as ``python -m benchmarks [--quick] [--only SUITE ...] [--out DIR]``.

Each suite is a module exposing ``SUITE: str`` and ``run(quick: bool) -> dict`` (see
``benchmarks.suite``); the harness (``benchmarks.harness``) writes one JSON file per suite and
``benchmarks.render`` turns those files, and only those, into ``BENCHMARKS.md``.
"""
