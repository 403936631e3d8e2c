"""Keep freed memory in the process for the next training step (Linux with glibc).

glibc returns every freed block above its mmap threshold (at most 32 MiB) to the kernel at once, so
a training step that allocates large tensors page-faults all of them afresh, every step. A
transformed network's wide tensors are such blocks where the original's are not: GateConnect's
branch outputs are C times a module's (67 MiB each for resnext50 at b8, 64 px), and on the
machine these numbers come from, faulting a fresh page in cost about five times writing it. The
maskfx command line turns this on; in your own training script call ``reuse_freed_memory()`` once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_MAX_INT = 2**31 - 1

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"  # where mallopt exists


def reuse_freed_memory() -> bool:
    """Make glibc serve large blocks from the heap and keep freed ones there for reuse, as the CUDA
    caching allocator does on GPUs: no mmap per block, no trimming below 2 GiB of free heap. The
    process's peak memory is unchanged; it is just not returned until exit. Returns whether the
    setting took effect (False off glibc)."""
    if not GLIBC:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _MAX_INT))
