"""Fixtures shared by several test files.

The expensive one is the quick demo (synthetic data, a few training steps, two evaluations, the report):
it runs once per test session in :func:`quick_demo`. Tests only read that folder; a test that writes into
a demo folder (a rerun with other settings, the demo checks' extra files) works on a copy from
:func:`quick_demo_copy`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``(folder, results)`` of one ``run_demo(folder, QUICK)``, run once per test session. Read only."""
    import torch

    from mmv_torch.demo import QUICK, run_demo

    folder = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    try:
        results = run_demo(folder, QUICK, progress=False, say=lambda msg: None)
    finally:
        torch.set_num_threads(threads)  # the demo sets its own; the tests after it keep theirs
    return folder, results


@pytest.fixture
def quick_demo_copy(quick_demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A writable copy of the :func:`quick_demo` folder (``tmp_path / "demo"``), made for each test."""
    return Path(shutil.copytree(quick_demo[0], tmp_path / "demo"))
