"""Process-wide runtime settings that must be made before PyTorch allocates its first CPU tensor.

:func:`enable_fast_cpu_memory` turns on PyTorch's transparent-huge-page allocation for large CPU
tensors (``THP_MEM_ALLOC_ENABLE=1``): blocks of 2 MiB and more are aligned to 2 MiB and advised
``MADV_HUGEPAGE``, so touching a fresh 64 MiB tensor costs ~30 page faults instead of ~16,000. It
helps every allocation-heavy CPU path (large model activations, video augmentation in the data
workers). PyTorch reads the variable once, at its first CPU allocation (not at ``import torch``),
so the call must come before any tensor is created; DataLoader workers forked afterwards inherit
the setting.

With glibc it also keeps freed memory mapped (:func:`keep_freed_memory`): glibc serves every block of
32 MiB or more with its own ``mmap`` and unmaps it on ``free``, so each forward pass page-faults all its
large activations in again (a TSM-50 forward of 32x224x224 on a 2-core machine: ~0.7-1.5 M faults and 2-4 s
of system CPU in 4 KiB pages, ~30 k faults and ~1 s with huge pages); served from the heap and never trimmed,
they are mapped once, at the first pass (benchmarks/RESULTS.md, "Freed memory kept mapped"). The
process then keeps its peak memory until it exits (as PyTorch's CUDA caching allocator keeps GPU memory).
"""

from __future__ import annotations

import ctypes
import os
import platform

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"
GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
"""glibc's own tuning variables: when the user sets any of them, :func:`keep_freed_memory` leaves malloc alone."""
KEEP_VARIABLE = "MMV_TORCH_KEEP_FREED_MEMORY"
"""``MMV_TORCH_KEEP_FREED_MEMORY=0`` turns :func:`keep_freed_memory` off (the process then returns freed memory)."""
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def enable_fast_cpu_memory() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` in ``os.environ`` unless the user set the variable already.

    Returns True when huge-page allocation is requested (set here or already "1"), False when the
    user chose another value (which is left as it is). Has no effect once PyTorch has allocated a
    CPU tensor in this process; needs the kernel's transparent huge pages in ``madvise`` or
    ``always`` mode (``/sys/kernel/mm/transparent_hugepage/enabled``), else it is harmless.
    """
    os.environ.setdefault(THP_VARIABLE, "1")
    keep_freed_memory()
    return os.environ[THP_VARIABLE] == "1"


def keep_freed_memory() -> bool:
    """glibc: serve large blocks from the heap instead of per-block ``mmap`` (``M_MMAP_MAX`` 0) and never
    return freed heap memory to the system (``M_TRIM_THRESHOLD`` -1), so repeated large allocations reuse
    pages that are already mapped. Returns whether it was done: False on another C library, with
    ``MMV_TORCH_KEEP_FREED_MEMORY=0``, or when the user set one of :data:`GLIBC_VARIABLES` (their choice
    stands; a second call also returns False). Costs peak memory: freed blocks are reused, not returned. Takes
    effect for later allocations; processes started afterwards inherit it through the environment."""
    if (platform.libc_ver()[0] != "glibc" or os.environ.get(KEEP_VARIABLE) == "0"
            or any(v in os.environ for v in GLIBC_VARIABLES)):
        return False
    # Processes started from this one (spawned workers, subprocesses) read the same settings at their start.
    os.environ.update({"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**62)})
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
