"""The index as a store users trust (issue 25: P1, P10-P12, P17, P18, P25, P26, P31): the writer lock,
ids allocated inside the write transaction, one-line errors for a full disk or damaged files, an
unfinished index that says so, a reader that sees an add, prune, lost vectors re-indexed, and
``index check [--repair]``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mmv_torch.index.store as store_mod
from mmv_torch.cli.main import main
from mmv_torch.index.build import build_index
from mmv_torch.index.check import check_index
from mmv_torch.index.lock import IndexBusyError
from mmv_torch.index.store import (
    VECTORS,
    IndexDamagedError,
    IndexNotReadyError,
    IndexStore,
    IndexWriteError,
)
from tests.helpers.index_faults import assert_same_index, index_snapshot
from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(scratch, checkpoint, clips, index of the clips)."""
    root = tmp_path_factory.mktemp("integrity")
    clips = synthetic_clips(root / "clips")
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    build_index(ckpt, clips, root / "idx", progress=False, batch_size=1)  # a file re-indexed alone: same vectors
    synthetic_clips(root / "more", n=2, seed=5)
    return root, ckpt, clips, root / "idx"


def _copy(idx: Path, tmp_path: Path, name: str = "idx") -> Path:
    return shutil.copytree(idx, tmp_path / name)


def _cli(*argv: str) -> int:
    return main([*argv, "--no-progress", "--device", "cpu"] if argv[1] in ("add", "build") else list(argv))


# -- P1: the writer lock and ids allocated inside the transaction --------------------------------


def test_p1_two_writers_get_distinct_ids_and_keep_their_own_vectors(made, tmp_path, monkeypatch) -> None:
    """Writer B starts while writer A has written its npz but not committed: B must not take A's id nor
    overwrite A's vectors (today both take MAX(id)+1: an IntegrityError, or A keeps B's vectors)."""
    _, _, clips, idx = made
    idx = _copy(idx, tmp_path)
    a, b = IndexStore(idx), IndexStore(idx)
    root = a.add_root(clips)
    videos = sorted(clips.glob("clip_*.mp4"))
    wins = [(0.0, 1.0, True, None)]

    def vecs(value: float) -> dict[str, np.ndarray]:
        return {s: np.full((1, 4), value, np.float32) for s in ("video_vt", "video_va", "audio_va")}

    real = store_mod.atomic_write
    result: dict[str, object] = {}

    def b_writes() -> None:
        try:
            result["b"] = b.add_file(videos[1], root, 1.0, True, wins, vecs(2.0))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["b"] = e

    def a_pauses(path, write, **kw):
        if "t" not in result:
            result["t"] = threading.Thread(target=b_writes)
            result["t"].start()
            result["t"].join(1.0)  # B runs as far as it can while A's transaction is open
        return real(path, write, **kw)

    monkeypatch.setattr(store_mod, "atomic_write", a_pauses)
    fa = a.add_file(videos[0], root, 1.0, True, wins, vecs(1.0))
    result["t"].join(60)
    fb = result["b"]
    assert isinstance(fb, int), fb
    assert fa != fb
    for path, fid, value in ((videos[0], fa, 1.0), (videos[1], fb, 2.0)):
        assert a.file(path).id == fid
        with np.load(idx / VECTORS / f"{fid}.npz") as z:
            assert np.all(z["video_vt"] == value), f"{path.name} holds another file's vectors"


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from mmv_torch.index.lock import IndexLock; IndexLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_p1_a_second_writer_refuses_in_one_line_or_waits(made, tmp_path, capfd) -> None:
    _, ckpt, _, idx = made
    idx = _copy(idx, tmp_path)
    more = made[0] / "more"
    holder = _hold_lock(idx)
    try:
        assert _cli("index", "add", str(idx), "--videos", str(more), "--no-wait") == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is being written by process {holder.pid}" in err[0]
        with pytest.raises(IndexBusyError):
            check_index(idx, repair=True, wait=False)
        assert check_index(idx).ok  # a reader never waits
        done: dict[str, object] = {}
        t = threading.Thread(target=lambda: done.update(s=build_index(ckpt, more, idx, progress=False, add=True)))
        t.start()
        time.sleep(1.5)
        assert t.is_alive() and "s" not in done
        assert f"waiting for process {holder.pid}" in capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    t.join(120)
    assert done["s"]["new_files"] == 2 and check_index(idx).ok


# -- P10-P12: full disk, damaged meta.sqlite, damaged .faiss ---------------------------------------


def test_p10_a_full_disk_in_sqlite_is_one_line_and_the_same_command_completes(made, tmp_path, monkeypatch,
                                                                            capsys) -> None:
    root, ckpt, _, idx = made
    want = _copy(idx, tmp_path, "want")
    build_index(ckpt, root / "more", want, progress=False, add=True)
    got = _copy(idx, tmp_path, "got")
    real = sqlite3.connect

    def small_disk(*a, **kw):  # the database may grow by one page: SQLite's own "database or disk is full"
        conn = real(*a, **kw)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        return conn

    monkeypatch.setattr(store_mod.sqlite3, "connect", small_disk)
    with pytest.raises(IndexWriteError, match="cannot write meta.sqlite: database or disk is full"):
        build_index(ckpt, root / "more", got, progress=False, add=True)
    assert main(["index", "add", str(got), "--videos", str(root / "more"), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run the same command again" in err[0] and str(got) in err[0]
    monkeypatch.setattr(store_mod.sqlite3, "connect", real)
    build_index(ckpt, root / "more", got, progress=False, add=True)
    assert_same_index(index_snapshot(got), index_snapshot(want))


def test_p11_a_damaged_meta_sqlite_is_one_line_in_every_command(made, tmp_path, capsys) -> None:
    _, _, clips, idx = made
    idx = _copy(idx, tmp_path)
    (idx / "meta.sqlite").write_text("{}\n")
    with pytest.raises(IndexDamagedError, match="meta.sqlite is damaged"):
        IndexStore(idx)
    for argv in (["index", "search", str(idx), "--text", "ball", "--device", "cpu"],
                 ["index", "add", str(idx), "--videos", str(clips), "--no-progress", "--device", "cpu"],
                 ["index", "check", str(idx)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is damaged (file is not a database)" in err[0] and "index build" in err[0], err


def test_p12_a_truncated_faiss_file_is_one_line_and_check_repairs_it(made, tmp_path, capsys) -> None:
    _, _, _, idx = made
    idx = _copy(idx, tmp_path)
    with open(idx / "video_vt.faiss", "r+b") as f:
        f.truncate(100)
    assert main(["index", "search", str(idx), "--text", "ball", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "video_vt.faiss is damaged" in err[0] and f"index check {idx} --repair" in err[0]
    assert main(["index", "check", str(idx)]) == 1
    assert "video_vt.faiss is unreadable" in capsys.readouterr().out
    assert main(["index", "check", str(idx), "--repair"]) == 0
    assert main(["index", "search", str(idx), "--text", "ball", "--device", "cpu"]) == 0


# -- P17, P18: an unfinished index says so; a reader sees an add ----------------------------------


def test_p17_an_unfinished_index_says_so(made, tmp_path, monkeypatch, capsys) -> None:
    _, ckpt, clips, _ = made

    def killed(self, seed=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(IndexStore, "rebuild", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(ckpt, clips, tmp_path / "idx", progress=False)
    monkeypatch.undo()
    with pytest.raises(IndexNotReadyError, match="index build not finished"):
        IndexStore(tmp_path / "idx").search("video_vt", np.ones(8, np.float32), 3)
    assert main(["index", "search", str(tmp_path / "idx"), "--text", "ball", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "index build not finished (0 of 10 video_vt vectors searchable)" in err and "index add" in err


def test_p18_a_reader_sees_an_add_without_reopening(made, tmp_path) -> None:
    root, ckpt, _, idx = made
    idx = _copy(idx, tmp_path)
    reader = IndexStore(idx)
    before = reader.faiss_index("video_vt").ntotal
    summary = build_index(ckpt, root / "more", idx, progress=False, add=True)
    assert summary["windows"] > before
    assert reader.faiss_index("video_vt").ntotal == summary["windows"]


# -- P25, P26, P31: prune, lost vectors, old vectors kept until the commit -------------------------


def test_p25_missing_files_are_counted_and_pruned(made, tmp_path, capsys) -> None:
    _, ckpt, clips, _ = made
    mine = shutil.copytree(clips, tmp_path / "clips")
    idx = tmp_path / "idx"
    build_index(ckpt, mine, idx, progress=False)
    gone = sorted(mine.glob("clip_*.mp4"))[0]
    gone.unlink()
    assert _cli("index", "add", str(idx), "--videos", str(mine)) == 0
    out = capsys.readouterr()
    assert '"missing_files": 1' in out.out and "1 indexed files no longer exist" in out.err
    assert IndexStore(idx).file(gone) is not None
    assert _cli("index", "add", str(idx), "--videos", str(mine), "--prune") == 0
    assert '"pruned_files": 1' in capsys.readouterr().out
    store = IndexStore(idx)
    assert store.file(gone) is None and store.counts()["files"] == 2
    assert store.faiss_index("video_vt").ntotal == store.counts()["windows"] and check_index(idx).ok


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_p26_lost_vectors_are_marked_and_indexed_again(made, tmp_path, capsys, damage) -> None:
    root, ckpt, clips, idx = made
    idx = _copy(idx, tmp_path)
    want = index_snapshot(made[3])
    victim = sorted(clips.glob("clip_*.mp4"))[1]
    npz = idx / VECTORS / f"{IndexStore(idx).file(victim).id}.npz"
    if damage == "missing":
        npz.unlink()
    else:
        npz.write_bytes(b"garbage, not a zip file" * 10)
    assert _cli("index", "add", str(idx), "--videos", str(root / "more")) == 0  # another folder: not stopped
    err = capsys.readouterr().err
    assert "allow_pickle" not in err and "recorded as bad" in err
    rec = IndexStore(idx).file(victim)
    assert rec.status == "bad" and "indexed again" in rec.error
    assert check_index(idx).ok
    build_index(ckpt, clips, idx, progress=False, add=True, batch_size=1)  # its own folder: indexed again
    got = index_snapshot(idx)
    for key in ("files", "windows", "vectors"):
        got[key] = {p: v for p, v in got[key].items() if Path(p).parent == clips.resolve()}
    got["roots"], got["info"] = want["roots"], want["info"]  # the other folder added a root and nothing else
    assert_same_index(got, want)


def test_p31_a_failure_while_reindexing_a_changed_file_keeps_its_old_vectors(made, tmp_path, monkeypatch) -> None:
    _, ckpt, clips, _ = made
    mine = shutil.copytree(clips, tmp_path / "clips")
    idx = tmp_path / "idx"
    build_index(ckpt, mine, idx, progress=False)
    changed = sorted(mine.glob("clip_*.mp4"))[0]
    os.utime(changed, (time.time() + 5, time.time() + 5))

    def crash(path, write, **kw):
        raise KeyboardInterrupt  # the process stops after the old rows are deleted, before the commit

    monkeypatch.setattr(store_mod, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(ckpt, mine, idx, progress=False)
    monkeypatch.undo()
    store = IndexStore(idx)
    rec = store.file(changed)
    assert rec.status == "done" and (idx / VECTORS / f"{rec.id}.npz").is_file()
    assert check_index(idx).ok
    store.vectors("video_vt")  # every committed file still has its vectors
    build_index(ckpt, mine, idx, progress=False)
    assert IndexStore(idx).file(changed).mtime == changed.stat().st_mtime and check_index(idx).ok


# -- index check --------------------------------------------------------------------------------


def test_check_reports_and_repairs_stray_files_windows_and_the_search_index(made, tmp_path, capsys) -> None:
    _, _, _, idx = made
    idx = _copy(idx, tmp_path)
    assert main(["index", "check", str(idx)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok (3 files, 0 bad, 10 windows)")
    (idx / VECTORS / "999.npz").write_bytes(b"x")
    (idx / VECTORS / ".3.npz.tmp.4242").write_bytes(b"x")
    store = IndexStore(idx)
    with store.db:
        store.db.execute("INSERT INTO windows (file, start, end, has_audio) VALUES (777, 0, 1, 0)")
    os.unlink(idx / "audio_va.faiss")
    report = check_index(idx)
    assert not report.ok and {p.repairable for p in report.problems} == {True}
    text = " | ".join(p.what for p in report.problems)
    assert "2 files belong to no committed file" in text and "1 windows belong to no indexed file" in text
    assert "audio_va.faiss is missing" in text
    assert main(["index", "check", str(idx), "--repair"]) == 0
    assert not (idx / VECTORS / "999.npz").exists() and (idx / "audio_va.faiss").is_file()
    assert_same_index(index_snapshot(idx), index_snapshot(made[3]))


def test_check_finds_vectors_that_disagree_with_their_windows(made, tmp_path) -> None:
    """The silent corruption of P1: a file's npz holds another file's row count."""
    _, _, clips, idx = made
    idx = _copy(idx, tmp_path)
    store = IndexStore(idx)
    by_count = {len(store.file_vectors(store.file(p).id, "video_vt")[1]): store.file(p).id
                for p in sorted(clips.glob("clip_*.mp4"))}
    assert len(by_count) >= 2, "the synthetic clips should differ in length"
    a, b = list(by_count.values())[:2]
    shutil.copy(idx / VECTORS / f"{a}.npz", idx / VECTORS / f"{b}.npz")
    report = check_index(idx)
    lost = [p for p in report.problems if "vectors of shape" in p.what]
    assert len(lost) == 1 and lost[0].repairable
