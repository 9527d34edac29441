"""Process-wide runtime settings that must be made before PyTorch allocates its first CPU tensor.

:func:`enable_fast_cpu_memory` turns on PyTorch's transparent-huge-page allocation for large CPU
tensors (``THP_MEM_ALLOC_ENABLE=1``): blocks of 2 MiB and more are aligned to 2 MiB and advised
``MADV_HUGEPAGE``, so touching a fresh 64 MiB tensor costs ~30 page faults instead of ~16,000. It
helps every allocation-heavy CPU path (large model activations, video augmentation in the data
workers). PyTorch reads the variable once, at its first CPU allocation (not at ``import torch``),
so the call must come before any tensor is created; DataLoader workers forked afterwards inherit
the setting.
"""

from __future__ import annotations

import os

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_fast_cpu_memory() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` in ``os.environ`` unless the user set the variable already.

    Returns True when huge-page allocation is requested (set here or already "1"), False when the
    user chose another value (which is left as it is). Has no effect once PyTorch has allocated a
    CPU tensor in this process; needs the kernel's transparent huge pages in ``madvise`` or
    ``always`` mode (``/sys/kernel/mm/transparent_hugepage/enabled``), else it is harmless.
    """
    os.environ.setdefault(THP_VARIABLE, "1")
    return os.environ[THP_VARIABLE] == "1"
