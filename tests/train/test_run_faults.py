"""The training writers under faults (issue 25): a full disk at a checkpoint (an injected writer and a real
small tmpfs), a kill at each checkpoint commit point, a cut last line of ``log.jsonl``, and a run that fails
before its first checkpoint. After each, ``--resume latest`` (or the same command) completes exactly as an
uninterrupted run: the same losses, weights and checkpoints, every log step once, no stray file."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import mmv_torch.fileio as F
import mmv_torch.train.loop as T
import mmv_torch.weights.checkpoint as C
from mmv_torch.cli.main import main
from mmv_torch.train.run_folder import RunLogger, discard_unsaved_run
from tests.helpers.train_worker_ddp import RandomClips
from tests.train.test_loop import losses, read_log, tiny_cfg


class Killed(Exception):
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(cfg, run, resume=None):
    return T.train(cfg, RandomClips(8), run, resume=resume, tensorboard=False, progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 6 steps, a checkpoint every 2."""
    run = tmp_path_factory.mktemp("faults") / "full"
    cfg = tiny_cfg(steps=6, ckpt_every=2, keep_ckpts=3)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test here: the same float sums
    try:
        _train(cfg, run)
    finally:
        torch.set_num_threads(n)
    return cfg, run


def assert_same_run(run: Path, full: Path) -> None:
    """``run`` ended exactly as ``full``: losses, log steps (each once), checkpoints and weights; no
    temporary file anywhere."""
    assert losses(run) == losses(full)
    steps = [r["step"] for r in read_log(run) if "event" not in r]
    assert steps == sorted(set(steps)) == [r["step"] for r in read_log(full) if "event" not in r]
    assert [s for s, _ in C.list_checkpoints(run)] == [s for s, _ in C.list_checkpoints(full)]
    a, b = C.load_checkpoint(C.checkpoint_path(run, 6)), C.load_checkpoint(C.checkpoint_path(full, 6))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert not [p for p in run.rglob("*") if F.is_temporary(p)]


# -- P9 and item 5: a full disk during a checkpoint --------------------------------------------


def test_p9_full_disk_while_torch_writes_a_checkpoint(tmp_path, monkeypatch, reference):
    """torch's writer dies mid-file with ``unexpected pos`` (what a full disk gives): the error says "no space
    left on device", the previous checkpoint and the log stay, and ``--resume latest`` ends exactly."""
    cfg, full = reference
    run = tmp_path / "run"
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        if obj["step"] == 4:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:1000])
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3920000 vs 3919896")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(C, "free_bytes", lambda folder: 12 * 2**20 if not getattr(C, "_full", False) else 0)
    real_atomic = C.atomic_torch_save

    def atomic_then_full(obj, path):
        C._full = obj["step"] == 4  # the disk fills up while step 4 is written
        return real_atomic(obj, path)

    monkeypatch.setattr(C, "atomic_torch_save", atomic_then_full)
    with pytest.raises(C.CheckpointWriteError, match=r"cannot write checkpoint .*ckpt_00000004.pt: no space left on "
                                                       r"device \(0 MB free\)"):
        _train(cfg, run)
    monkeypatch.undo()
    C._full = False
    assert [s for s, _ in C.list_checkpoints(run)] == [2]
    assert not [p for p in run.rglob("*") if F.is_temporary(p)]
    _train(cfg, run, resume="latest")
    assert_same_run(run, full)


def test_p9_too_little_space_for_the_next_checkpoint_is_refused_before_writing(tmp_path, monkeypatch, reference):
    cfg, full = reference
    run = tmp_path / "run"
    size = C.checkpoint_path(full, 2).stat().st_size
    monkeypatch.setattr(C, "free_bytes", lambda folder: size // 2 if C.list_checkpoints(run) else 10 * size)
    with pytest.raises(C.CheckpointWriteError, match=r"no space left on device \(\d+ MB free, the previous "
                                                       r"checkpoint took \d+ MB\)"):
        _train(cfg, run)
    monkeypatch.undo()
    assert [s for s, _ in C.list_checkpoints(run)] == [2]
    _train(cfg, run, resume="latest")
    assert_same_run(run, full)


def test_p9_short_space_first_drops_checkpoints_that_would_be_pruned(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny_cfg(steps=6, ckpt_every=2, keep_ckpts=2)
    _train(tiny_cfg(steps=4, ckpt_every=2, keep_ckpts=3), run)
    assert [s for s, _ in C.list_checkpoints(run)] == [2, 4]
    size = C.checkpoint_path(run, 2).stat().st_size
    monkeypatch.setattr(C, "free_bytes", lambda folder: size * 2 if len(C.list_checkpoints(run)) < 2 else size)
    state = C.load_checkpoint(C.checkpoint_path(run, 4))
    C.save_checkpoint(run, {**state, "step": 6}, keep=cfg.train.keep_ckpts)
    assert [s for s, _ in C.list_checkpoints(run)] == [4, 6]


def _mount_tmpfs(folder: Path, size: int) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return res.returncode == 0


def test_p9_real_full_tmpfs_gives_one_line_and_resume_completes(tmp_path, reference, capsys):
    """The finding's command on a real small tmpfs (skipped where mounting is not allowed)."""
    cfg, full = reference
    size = C.checkpoint_path(full, 2).stat().st_size
    small = tmp_path / "small"
    if not _mount_tmpfs(small, int(size * 2.5)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = small / "run"
        with pytest.raises(C.CheckpointWriteError, match="no space left on device"):
            _train(cfg, run)
        done = [s for s, _ in C.list_checkpoints(run)]
        assert done and done == sorted(done) and max(done) < 6
        assert not [p for p in run.rglob("*") if F.is_temporary(p)]
        moved = tmp_path / "moved"
        shutil.copytree(run, moved)  # "free some space": continue on a bigger disk
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    _train(cfg, moved, resume="latest")
    assert_same_run(moved, full)


# -- item 5: a kill at each checkpoint commit point --------------------------------------------


@pytest.mark.parametrize("point", ["before_rename", "after_rename", "after_prune"])
def test_kill_at_each_checkpoint_commit_point_then_resume_is_exact(tmp_path, monkeypatch, reference, point):
    cfg, full = reference
    run = tmp_path / "run"
    target = C.checkpoint_path(run, 4)
    real_replace, real_prune = F.os.replace, C.prune_checkpoints

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target and point == "before_rename":
            raise Killed()
        real_replace(src, dst, *args, **kwargs)
        if Path(dst) == target and point == "after_rename":
            raise Killed()

    def prune(run_dir, keep):
        real_prune(run_dir, keep)
        if target.exists() and point == "after_prune":
            raise Killed()

    monkeypatch.setattr(F.os, "replace", replace)
    monkeypatch.setattr(C, "prune_checkpoints", prune)
    with pytest.raises(Killed):
        _train(cfg, run)
    monkeypatch.undo()
    assert [s for s, _ in C.list_checkpoints(run)] == ([2] if point == "before_rename" else [2, 4])
    _train(cfg, run, resume="latest")
    assert_same_run(run, full)


# -- P23: a cut last line of log.jsonl ---------------------------------------------------------


def test_p23_cut_last_log_line_is_dropped_with_a_warning_on_resume(tmp_path, reference):
    """t_log_truncated: checkpoint and export of the last step gone, the log's last line cut by 40 bytes."""
    cfg, full = reference
    run = tmp_path / "r2"
    _train(cfg, run)
    shutil.rmtree(run / "export")
    C.checkpoint_path(run, 6).unlink()
    log = run / "log.jsonl"
    log.write_text(log.read_text()[:-40])
    with pytest.warns(UserWarning, match=r"log.jsonl: dropping its last line"):
        _train(cfg, run, resume="latest")
    assert_same_run(run, full)
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_p23_a_bad_line_before_the_last_names_file_and_line(tmp_path, reference):
    cfg, _ = reference
    run = tmp_path / "r3"
    _train(tiny_cfg(steps=2, ckpt_every=2, keep_ckpts=3, log_every=1), run)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0][:-5], *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl:1: not a JSON record"):
        RunLogger(run, 2, tensorboard=False)


# -- P24: a run that fails before its first checkpoint -----------------------------------------


def _train_cli(data: Path, out: Path) -> int:
    return main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--set", "train.steps=3",
                 "train.batch_size=2", "train.num_workers=0", "data.extra_vocab_words=0", "data.num_frames=4",
                 "data.crop_size=32", "data.resize_short=36"])


def test_p24_a_run_failing_before_its_first_checkpoint_never_blocks_its_folder(tmp_path, capsys):
    """r_rerun_after_failed: the same command fails the same way again, not with "already holds a run"."""
    data = tmp_path / "skip.jsonl"
    data.write_text("".join(json.dumps({"video": f"gone{i}.mp4"}) + "\n" for i in range(4)))
    out = tmp_path / "sk"
    for _ in range(2):
        assert _train_cli(data, out) == 2
        err = capsys.readouterr().err
        assert "failed to decode" in err and "already holds a run" not in err, err
        assert not out.exists()


def test_p24_discard_keeps_what_was_there_and_runs_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(Killed), discard_unsaved_run(run, fresh=True, created=False):
        (run / "config.json").write_text("{}")
        (run / "checkpoints").mkdir()
        raise Killed()
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(Killed), discard_unsaved_run(run, fresh=True, created=False):
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "ckpt_00000002.pt").write_bytes(b"x")
        raise Killed()
    assert (run / "checkpoints" / "ckpt_00000002.pt").exists()  # something to resume: kept
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(Killed), discard_unsaved_run(run, fresh=False, created=False):
        (run / "log.jsonl").write_text("")
        raise Killed()
    assert (run / "log.jsonl").exists()  # a resumed run's folder is never cleaned


def test_p24_resume_of_a_run_without_checkpoint_suggests_overwrite(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="before its first checkpoint.*--overwrite"):
        C.resolve_resume("latest", tmp_path / "run")


# -- the real command line (make test-e2e) -----------------------------------------------------


def _cli(*argv):
    import sys

    return subprocess.run([sys.executable, "-m", "mmv_torch", *map(str, argv)], capture_output=True, text=True,
                          timeout=600)


TINY = ["train.batch_size=2", "train.num_workers=0", "train.warmup_steps=1", "data.num_frames=4",
        "data.crop_size=32", "data.resize_short=36", "data.eval_crop_size=32", "train.ckpt_every=1"]


@pytest.mark.e2e
def test_e2e_full_disk_during_train_is_one_line_and_resume_latest_finishes(tmp_path):
    """t_diskfull: `mmv-torch train` on a small tmpfs, then `--resume latest` once there is room again."""
    small = tmp_path / "small"
    probe = _cli("train", "--preset", "tiny", "--data", "synthetic:4", "--out", tmp_path / "probe", "--set",
                 "train.steps=1", *TINY)
    assert probe.returncode == 0, probe.stderr
    size = C.checkpoint_path(tmp_path / "probe", 1).stat().st_size
    synthetic = sum(p.stat().st_size for p in (tmp_path / "probe" / "synthetic").rglob("*") if p.is_file())
    if not _mount_tmpfs(small, synthetic + int(size * 2.6) + 2**20):
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = small / "run"
        res = _cli("train", "--preset", "tiny", "--data", "synthetic:4", "--out", run, "--set", "train.steps=6",
                   "train.keep_ckpts=6", *TINY)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        errors = [ln for ln in res.stderr.splitlines() if "error:" in ln]
        assert len(errors) == 1 and "no space left on device" in errors[0] and "MB free" in errors[0], res.stderr
        saved = [s for s, _ in C.list_checkpoints(run)]
        assert saved and not (run / ".lock").exists()
        moved = tmp_path / "run"
        shutil.copytree(run, moved)
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    res = _cli("train", "--preset", "tiny", "--data", "synthetic:4", "--out", moved, "--set", "train.steps=6",
               "train.keep_ckpts=6", *TINY, "--resume", "latest")
    assert res.returncode == 0, res.stderr
    steps = [json.loads(ln)["step"] for ln in (moved / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


@pytest.mark.e2e
def test_e2e_rerun_after_a_failed_first_step_is_not_blocked(tmp_path):
    """r_rerun_after_failed, r_resume_after_failed through the real command line."""
    data = tmp_path / "skip.jsonl"
    data.write_text("".join(json.dumps({"video": f"gone{i}.mp4"}) + "\n" for i in range(4)))
    for _ in range(2):
        res = _cli("train", "--preset", "tiny", "--data", data, "--out", tmp_path / "sk", "--set", "train.steps=2",
                   *TINY)
        assert res.returncode == 2 and "failed to decode" in res.stderr and "already holds" not in res.stderr
        assert not (tmp_path / "sk").exists()
