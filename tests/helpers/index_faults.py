"""What an index holds, independent of its file and window ids, to compare an index after a fault (and
the same command run again) with an index built without one; and one-frame clips for races."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def index_snapshot(index: Path) -> dict[str, Any]:
    """Files by path (size, mtime, duration, audio, status, reason), their windows (start, end, audio,
    thumbnail), their vectors per space, the roots, the settings; plus the stored npz names, any temporary
    file left and whether ``index check`` agrees."""
    from mmv_torch.fileio import is_temporary
    from mmv_torch.index.check import check_index
    from mmv_torch.index.store import SPACES, VECTORS, IndexStore

    store = IndexStore(index)
    try:
        roots = store.roots()
        files, windows, vectors, npz = {}, {}, {}, set()
        for fid, path, root, size, mtime, duration, audio, status, error in store.db.execute("SELECT * FROM files"):
            assert path not in files, f"{path} indexed twice"
            files[path] = (str(roots[root]), size, mtime, duration, audio, status, error)
            windows[path] = store.db.execute("SELECT start, end, has_audio, thumb FROM windows WHERE file = ? "
                                             "ORDER BY id", (fid,)).fetchall()
            if status == "done":
                vectors[path] = {s: store.file_vectors(fid, s)[0] for s in SPACES}
                npz.add(f"{fid}.npz")
        info = store.info()
        for kind in info.get("nn_index", {}).values():  # the last window id at training: ids follow commit order
            kind.pop("trained_max_id", None)
        stored = {p.name for p in (index / VECTORS).iterdir()}
        temporary = sorted(p.name for p in index.rglob("*") if is_temporary(p))
    finally:
        store.close()
    report = check_index(index)
    return {"files": files, "windows": windows, "vectors": vectors, "roots": sorted(map(str, roots.values())),
            "info": info, "npz_match_rows": stored == npz, "temporary": temporary,
            "problems": [p.what for p in report.problems]}


def assert_same_index(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Two snapshots hold the same files, windows, roots and settings, vectors equal to 1e-5, every file
    exactly once, no stray or temporary file, and ``index check`` finds nothing."""
    assert got["problems"] == [], got["problems"]
    assert got["temporary"] == [], got["temporary"]
    assert got["npz_match_rows"], "stored npz files other than the committed files' ones"
    assert got["files"] == want["files"]
    assert got["windows"] == want["windows"]
    assert got["roots"] == want["roots"]
    differ = sorted(k for k in set(got["info"]) | set(want["info"]) if got["info"].get(k) != want["info"].get(k))
    assert differ == [], f"settings differ: {[(k, got['info'].get(k), want['info'].get(k)) for k in differ]}"
    assert got["vectors"].keys() == want["vectors"].keys()
    for path, spaces in want["vectors"].items():
        for space, vec in spaces.items():
            np.testing.assert_allclose(got["vectors"][path][space], vec, atol=1e-5, err_msg=f"{path} {space}")


def one_frame_clips(folder: Path, n: int, audio: bool, level: int = 0) -> Path:
    """``n`` one-frame 64 px clips (grey levels ``level + i``), with a short silent audio track when
    ``audio``: the findings' race material, fast to index."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = av.open(str(folder / f"c{level + i:03d}.mp4"), "w")
        v = c.add_stream("libx264", rate=8)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (level + i) % 256, np.uint8), format="rgb24")
        for p in v.encode(frame):
            c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            f = av.AudioFrame.from_ndarray(np.zeros((1, 2000), np.float32), format="fltp", layout="mono")
            f.sample_rate = 16000
            for p in a.encode(f):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
        c.close()
    return folder
