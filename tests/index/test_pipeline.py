"""The build pipeline: windows batched across files, group commits, and builds on several processes
(two gloo ranks on 127.0.0.1) that equal a one-process build, killed ones included."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

import mmv_torch.index.pipeline as pipeline_mod
import mmv_torch.index.store as store_mod
from mmv_torch.index.build import build_index
from mmv_torch.index.embedding import decode_windows, embed_windows
from mmv_torch.index.parts import PARTS, merge_parts, part_folder
from mmv_torch.index.pipeline import WindowBatcher
from mmv_torch.index.store import IndexStore
from tests.helpers.index_faults import assert_same_index, index_snapshot
from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint
from tests.helpers.train_worker_ddp import launch_ranks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five clips and a broken file, a checkpoint, and the index a one-process build makes of them."""
    root = tmp_path_factory.mktemp("pipeline")
    clips = synthetic_clips(root / "clips", n=5)
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    build_index(ckpt, clips, root / "one", progress=False, batch_size=1)
    return {"root": root, "clips": clips, "ckpt": ckpt, "one": index_snapshot(root / "one")}


def test_batches_across_files_give_the_vectors_of_per_file_embedding(scene) -> None:
    from mmv_torch.weights.resolve import resolve_checkpoint

    resolved = resolve_checkpoint(scene["ckpt"])
    model = resolved.load_model("cpu").double()  # float64: a batch's size and order leave the sums alone
    files = []
    for i, p in enumerate(sorted(scene["clips"].glob("clip_*.mp4"))):
        d = decode_windows(p, resolved.config, 1.0, 1.0, thumbs=False)
        files.append(dataclasses.replace(d, video=d.video.double(), audio=d.audio.double(), has_audio=i != 1))
    # the third file as one whose video does not decode: audio-only windows between files with pictures
    files[2] = dataclasses.replace(files[2], video=None, has_video=False, video_error="damaged")
    want = [embed_windows(model, d, batch_size=1) for d in files]  # per file, one window at a time
    assert sum(d.audio.shape[0] for d in files) > 8 and not files[1].has_audio
    for batch in (1, 3, 4, 64):
        batcher = WindowBatcher(model, "cpu", batch)
        got = [out for d in files for out in batcher.add(d)] + batcher.flush()
        assert [d.path for d, _ in got] == [d.path for d in files]
        for (_, vec), ref in zip(got, want):
            assert vec.keys() == ref.keys()
            for k in ref:
                assert vec[k].shape == ref[k].shape, (batch, k)
                np.testing.assert_allclose(vec[k], ref[k], atol=1e-6, err_msg=f"batch {batch} {k}")
        assert got[1][1]["audio_va"].shape[0] == 0
        assert got[2][1]["video_vt"].shape[0] == 0 and got[2][1]["audio_va"].shape[0] == files[2].audio.shape[0]


class _Killed(BaseException):
    pass


@pytest.mark.parametrize("point", ["vectors_written", "rows_written", "committed"])
def test_a_group_commit_stopped_at_a_fault_point_holds_no_part_of_a_file(scene, tmp_path, monkeypatch,
                                                                         point) -> None:
    seen: list[str] = []

    def hook(p: str) -> None:  # the second npz of the first group, its rows before the commit, its commit
        seen.append(p)
        first_group = {"vectors_written": seen.count(p) == 2, "rows_written": "vectors_written" in seen,
                       "committed": seen.count(p) == 1}
        if p == point and first_group[p]:
            raise _Killed(p)

    monkeypatch.setattr(store_mod, "fault_hook", hook)
    monkeypatch.setattr(pipeline_mod, "GROUP_S", 1e9)  # one group of all the files, however slow the machine
    with pytest.raises(_Killed):
        build_index(scene["ckpt"], scene["clips"], tmp_path / "idx", progress=False, batch_size=1)
    got = index_snapshot(tmp_path / "idx")
    one = scene["one"]
    assert got["npz_match_rows"] and got["temporary"] == []
    assert (len(got["files"]) > 0) == (point == "committed")
    for path in got["files"]:  # what is stored is whole: every window, every vector
        assert got["files"][path] == one["files"][path] and got["windows"][path] == one["windows"][path]
        for space, vec in one["vectors"].get(path, {}).items():
            np.testing.assert_allclose(got["vectors"][path][space], vec, atol=1e-6)
    monkeypatch.setattr(store_mod, "fault_hook", None)
    build_index(scene["ckpt"], scene["clips"], tmp_path / "idx", progress=False, batch_size=1)
    assert_same_index(index_snapshot(tmp_path / "idx"), one)


def _build_argv(scene: dict, out: Path) -> list[str]:
    return [sys.executable, "-m", "mmv_torch", "index", "build", "--checkpoint", str(scene["ckpt"]), "--videos",
            str(scene["clips"]), "--out", str(out), "--no-progress", "--device", "cpu", "--batch-size", "1"]


def test_a_two_process_build_equals_a_one_process_build(scene, tmp_path) -> None:
    ranks = launch_ranks(_build_argv(scene, tmp_path / "two"), 2, timeout=300, cwd=REPO)
    assert [rc for rc, _ in ranks] == [0, 0], "\n".join(out for _, out in ranks)[-4000:]
    assert not (tmp_path / "two" / PARTS).exists()
    assert_same_index(index_snapshot(tmp_path / "two"), scene["one"])


def test_leftover_parts_are_merged_once_and_removed(scene, tmp_path) -> None:
    """A part whose merge was cut short (some of its files already in the index) is merged again: every
    file once."""
    from mmv_torch.index.build import _settings
    from mmv_torch.index.parts import open_part
    from mmv_torch.index.store_write import FileWrite, add_files
    from mmv_torch.weights.resolve import resolve_checkpoint

    src = IndexStore(scene["root"] / "one")
    settings = _settings(resolve_checkpoint(scene["ckpt"]), None, None, 1.0, 1.0)
    main = IndexStore(tmp_path / "idx", create=True, writer=True)
    main.set_info(**src.info())
    part = open_part(tmp_path / "idx", 1, settings)
    rows = src.db.execute("SELECT * FROM files").fetchall()
    writes = []
    for fid, path, _, size, mtime, duration, audio, status, error in rows:
        if status == "bad":
            writes.append(FileWrite(path, part.add_root(Path(path).parent), error=error, size_mtime=(size, mtime)))
            continue
        wins = src.db.execute("SELECT start, end, has_audio, thumb FROM windows WHERE file = ? ORDER BY id",
                              (fid,)).fetchall()
        vecs = {s: src.file_vectors(fid, s)[0] for s in store_mod.SPACES}
        writes.append(FileWrite(path, part.add_root(Path(path).parent), duration, bool(audio),
                                [(s, e, bool(a), t) for s, e, a, t in wins], vecs, size_mtime=(size, mtime)))
    add_files(part, writes)
    add_files(main, [dataclasses.replace(w, root=main.add_root(Path(w.path).parent)) for w in writes[:2]])
    part.close()
    merged = merge_parts(main)
    assert (merged["files"], merged["bad_files"]) == (sum(w.error is None for w in writes[2:]),
                                                      sum(w.error is not None for w in writes[2:]))
    assert not part_folder(tmp_path / "idx", 1).exists() and not (tmp_path / "idx" / PARTS).exists()
    main.rebuild()
    main.close()
    got = index_snapshot(tmp_path / "idx")
    assert got["files"] == scene["one"]["files"] and got["windows"] == scene["one"]["windows"]
    for path, spaces in scene["one"]["vectors"].items():
        for space, vec in spaces.items():
            np.testing.assert_allclose(got["vectors"][path][space], vec, atol=1e-6)


_KILLER = """
import os, sys
import mmv_torch.index.store as store
rank, point, nth, seen = os.environ["RANK"], sys.argv[1], int(sys.argv[2]), []
def hook(p):
    seen.append(p)
    if rank == sys.argv[3] and p == point and seen.count(p) == nth:
        os._exit(137)
store.fault_hook = hook
from mmv_torch.cli.main import main
sys.exit(main(sys.argv[5:]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("rank, nth", [("1", 1), ("0", 2), ("0", 3)])
def test_a_killed_two_process_build_run_again_has_every_file_once(scene, tmp_path, rank, nth) -> None:
    """Killed (exit 137, no clean-up) at a commit: rank 1 at its first (in its part; rank 0 waits and is
    killed as torchrun would), rank 0 at its second and third (its part, the merge of the parts). The same
    command then completes, every file exactly once."""
    argv = _build_argv(scene, tmp_path / "idx")
    killer = [sys.executable, "-c", _KILLER, "committed", str(nth), rank, "--", *argv[3:]]
    killed = launch_ranks(killer, 2, timeout=300, cwd=REPO)
    assert 137 in [rc for rc, _ in killed], killed
    again = launch_ranks(argv, 2, timeout=300, cwd=REPO)
    assert [rc for rc, _ in again] == [0, 0], "\n".join(out for _, out in again)[-4000:]
    assert not (tmp_path / "idx" / PARTS).exists()
    assert_same_index(index_snapshot(tmp_path / "idx"), scene["one"])


def test_the_batch_size_is_checked(scene, tmp_path) -> None:
    with pytest.raises(ValueError, match="batch size"):
        build_index(scene["ckpt"], scene["clips"], tmp_path / "idx", progress=False, batch_size=0)
    assert not (tmp_path / "idx").exists()
