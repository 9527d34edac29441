"""Fault injection for the index writers (issue 25, item 5; P1): after a full disk at every file the
store writes, or a kill at every commit point of the write path, the same command completes and the
index equals one built without the fault, every file exactly once and nothing else changed; two
``index add`` at once on one index equal the two run one after the other.

The kills (``os._exit`` from :data:`mmv_torch.index.store.fault_hook`, in a subprocess) and the race
are end-to-end runs of the command line: ``make test-e2e``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import mmv_torch.index.store as store_mod
from mmv_torch.cli.main import main
from mmv_torch.index.build import build_index
from mmv_torch.index.store import FAULT_POINTS
from tests.helpers.index_faults import assert_same_index, index_snapshot, one_frame_clips
from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]

_DRIVER = """
import json, os, sys
import mmv_torch.index.store as store
point, nth, trace = sys.argv[1], int(sys.argv[2]), []
def hook(p):
    trace.append(p)
    if p == point and trace.count(p) == nth:
        os._exit(137)
store.fault_hook = hook
from mmv_torch.cli.main import main
rc = main(sys.argv[4:])
open(sys.argv[3], "w").write(json.dumps(trace))
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An index of three clips, then its folder changed: one clip touched, one deleted, two new; the
    command ``index add IDX --videos FOLDER --prune`` and the index it gives without a fault."""
    root = tmp_path_factory.mktemp("faults")
    clips = synthetic_clips(root / "clips")
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    build_index(ckpt, clips, root / "base", progress=False)
    names = sorted(clips.glob("clip_*.mp4"))
    later = time.time() + 10
    os.utime(names[0], (later, later))
    names[1].unlink()
    for p in sorted(synthetic_clips(root / "more", n=2, seed=5).glob("clip_*.mp4")):
        shutil.copy2(p, clips / f"new_{p.name}")
    argv = ["index", "add", "IDX", "--videos", str(clips), "--prune", "--no-progress", "--device", "cpu"]
    want = shutil.copytree(root / "base", root / "want")
    assert main([a if a != "IDX" else str(want) for a in argv]) == 0
    return {"root": root, "ckpt": ckpt, "clips": clips, "argv": argv, "want": index_snapshot(want)}


def _argv(scene: dict, idx: Path) -> list[str]:
    return [a if a != "IDX" else str(idx) for a in scene["argv"]]


def test_a_full_disk_at_every_write_then_the_same_command_gives_the_same_index(scene, tmp_path, monkeypatch,
                                                                              capsys) -> None:
    real = store_mod.atomic_write
    writes: list[str] = []
    monkeypatch.setattr(store_mod, "atomic_write", lambda path, write, **kw: (writes.append(Path(path).name),
                                                                              real(path, write, **kw))[1])
    probe = shutil.copytree(scene["root"] / "base", tmp_path / "probe")
    assert main(_argv(scene, probe)) == 0
    capsys.readouterr()
    assert sum(w.endswith(".npz") for w in writes) == 3 and sum(w.endswith(".faiss") for w in writes) == 3
    for k in range(1, len(writes) + 1):
        idx = shutil.copytree(scene["root"] / "base", tmp_path / f"idx{k}")
        calls = [0]

        def full(path, write, k=k, calls=calls, **kw):
            calls[0] += 1
            if calls[0] == k:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, write, **kw)

        monkeypatch.setattr(store_mod, "atomic_write", full)
        assert main(_argv(scene, idx)) == 2, writes[k - 1]
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "No space left on device" in err and "run the same command again" in err and writes[k - 1] in err
        monkeypatch.setattr(store_mod, "atomic_write", real)
        assert main(_argv(scene, idx)) == 0
        assert_same_index(index_snapshot(idx), scene["want"])


def _driver(point: str, nth: int, trace: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _DRIVER, point, str(nth), str(trace), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_a_kill_at_every_commit_point_then_the_same_command_gives_the_same_index(scene, tmp_path) -> None:
    probe = shutil.copytree(scene["root"] / "base", tmp_path / "probe")
    run = _driver("none", 0, tmp_path / "trace.json", _argv(scene, probe))
    assert run.returncode == 0, run.stderr
    seen = Counter(json.loads((tmp_path / "trace.json").read_text()))
    assert set(seen) == set(FAULT_POINTS), seen
    for point, times in sorted(seen.items()):
        for nth in range(1, times + 1):
            idx = shutil.copytree(scene["root"] / "base", tmp_path / f"{point}-{nth}")
            killed = _driver(point, nth, tmp_path / "t.json", _argv(scene, idx))
            assert killed.returncode == 137, (point, nth, killed.stderr[-2000:])
            assert main(_argv(scene, idx)) == 0, (point, nth)
            assert_same_index(index_snapshot(idx), scene["want"])


@pytest.mark.e2e
def test_p1_two_concurrent_index_add_equal_a_sequential_build(scene, tmp_path) -> None:
    """The findings' race: 20 one-frame clips without audio and 20 with, added at once to one index."""
    fast1 = one_frame_clips(tmp_path / "fast1", 20, audio=False)
    fast2 = one_frame_clips(tmp_path / "fast2", 20, audio=True, level=100)
    ckpt = scene["ckpt"]
    base = tmp_path / "base"
    build_index(ckpt, scene["root"] / "more", base, progress=False)
    seq = shutil.copytree(base, tmp_path / "seq")
    for folder in (fast1, fast2):
        build_index(ckpt, folder, seq, progress=False, add=True)
    race = shutil.copytree(base, tmp_path / "race")
    cmd = [sys.executable, "-m", "mmv_torch", "index", "add", str(race), "--no-progress", "--device", "cpu",
           "--videos"]
    procs = [subprocess.Popen([*cmd, str(f)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in (fast1, fast2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert json.loads(out)["index"] == str(race)
    waited = [err for _, err in outs if "waiting for process" in err]
    assert len(waited) <= 1
    got, want = index_snapshot(race), index_snapshot(seq)
    assert len(got["files"]) == 42
    assert_same_index(got, want)
