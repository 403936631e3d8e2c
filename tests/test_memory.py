"""reuse_freed_memory: a training step's fresh weight gradients reuse the last step's pages."""
import subprocess
import sys

import pytest

from maskfx.train.memory import GLIBC

# A step whose weight gradients (two of 32 MiB, above glibc's mmap threshold) are new blocks each
# step, as with zero_grad(set_to_none=True). Not a lone tensor allocated and freed in a loop: torch
# asks for 64-byte-aligned blocks, and a freed block of exactly that size is too small for the
# next aligned request unless its free neighbours coalesce with it, which other allocations decide.
FAULTS = """
import resource, torch
from maskfx.train import reuse_freed_memory

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(2048, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 2048))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
x = torch.randn(256, 2048)

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    optimizer.step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def median_faults():
    faults_of_a_step(), faults_of_a_step()  # warm: the first steps grow the heap
    return sorted(faults_of_a_step() for _ in range(5))[2]

default = median_faults()
applied = reuse_freed_memory()
print(default, applied, median_faults())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_a_training_steps_fresh_gradients_reuse_freed_pages():
    # In a fresh interpreter: the setting is process-wide and stays.
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout.split()
    default, applied, reused = int(out[0]), out[1] == "True", int(out[2])
    assert default >= 64 * 2**20 // 4096 // 2  # by default, at least half the gradients' 16,384 pages fault in again
    assert applied and reused < default // 20
