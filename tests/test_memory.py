"""reuse_freed_memory: a freed large tensor's pages serve the next one without new page faults."""
import subprocess
import sys

import pytest

from maskfx.train.memory import GLIBC

FAULTS = """
import resource, torch
from maskfx.train import reuse_freed_memory

def faults_of_a_fresh_64_mib_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def median_faults():
    return sorted(faults_of_a_fresh_64_mib_tensor() for _ in range(5))[2]

faults_of_a_fresh_64_mib_tensor()
default = median_faults()
applied = reuse_freed_memory()
faults_of_a_fresh_64_mib_tensor()  # grows the heap once
print(default, applied, median_faults())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_without_page_faults():
    # In a fresh interpreter: the setting is process-wide and stays. Medians of five: now and then
    # one block is faulted in again (glibc's own choice), which does not change the step's cost.
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout.split()
    default, applied, reused = int(out[0]), out[1] == "True", int(out[2])
    assert default >= 16 * 2**20 * 4 // 4096 // 2  # by default, at least half the 16,384 pages fault in again
    assert applied and reused < default // 20
