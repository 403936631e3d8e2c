"""Run every benchmark in turn: ``make bench``. Each prints ratios measured within its own run."""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
for script in ("bench_jumpout.py", "bench_blockout.py", "bench_maskconnect.py", "bench_gateconnect.py"):
    print(f"\n=== {script}")
    sys.argv = [script]
    runpy.run_path(str(HERE / script), run_name="__main__")
