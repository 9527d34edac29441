"""Tests for mmv_torch.cli.runtime (each case in a fresh interpreter: torch reads the variable once)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

_PROBE = """
import resource, sys
from mmv_torch.cli.runtime import enable_fast_cpu_memory
on = {call} and enable_fast_cpu_memory()
import os, torch
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 * 2**20 // 4)
print(on, os.environ.get("THP_MEM_ALLOC_ENABLE"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _run(call: bool, preset: str | None = None) -> tuple[str, str, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    out = subprocess.run([sys.executable, "-c", _PROBE.format(call=call)], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], out[1], int(out[2])


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else ""


def test_sets_the_variable_and_respects_a_user_value():
    assert _run(True)[:2] == ("True", "1")
    assert _run(True, preset="0")[:2] == ("False", "0")
    assert _run(False)[:2] == ("False", "None")


@pytest.mark.skipif(_thp_mode() != "madvise" or not sys.platform.startswith("linux"),
                    reason="needs Linux transparent huge pages in madvise mode (always: every large block is huge)")
def test_large_tensors_take_far_fewer_page_faults():
    plain = _run(False)[2]  # 64 MiB in 4 KiB pages: ~16,000 faults
    huge = _run(True)[2]  # in 2 MiB pages: a few dozen
    assert plain > 8000
    assert huge < plain / 4


_REUSE = """
import ctypes, os, resource
from mmv_torch.cli.runtime import enable_fast_cpu_memory
enable_fast_cpu_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = []
for _ in range(3):  # a 256 MiB block, written and freed, three times
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(256 * 2**20)
    ctypes.memset(p, 1, 256 * 2**20)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(os.environ.get("MALLOC_MMAP_MAX_"), faults[0], max(faults[1:]))
"""


def _reuse(**env_over: str) -> tuple[str, int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MMV_TORCH_KEEP_FREED_MEMORY"}
    env.update(PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""), THP_MEM_ALLOC_ENABLE="0", **env_over)
    out = subprocess.run([sys.executable, "-c", _REUSE], env=env, capture_output=True, text=True, check=True).stdout
    mmap_max, first, later = out.split()
    return mmap_max, int(first), int(later)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc's malloc")
def test_freed_memory_stays_mapped_unless_the_user_says_otherwise():
    # 256 MiB in 4 KiB pages: ~65,000 faults when the block is mapped afresh. Kept: the next blocks reuse the
    # first one's pages; returned: every block is mapped (and faulted in) again.
    mmap_max, first, later = _reuse()
    assert mmap_max == "0" and first > 30000 and later < first / 20
    for opt_out in ({"MMV_TORCH_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TOP_PAD_": "131072"}):
        mmap_max, first, later = _reuse(**opt_out)
        assert mmap_max in ("None", "") and later > 30000, opt_out
