"""Group commits: several files (done or bad) written into an index in one transaction.

The write path of :meth:`IndexStore.add_file`, for many files at once: inside one ``BEGIN IMMEDIATE``
transaction each file gets a new id (above every committed id), its vectors are written atomically
under that id and its rows inserted; then one commit. A kill or an error before the commit leaves
none of the group's files (their npz are deleted, or removed as strays by the next rebuild), so each
file is committed whole, with all its windows, or not at all; the old npz of re-indexed files are
deleted after the commit. The same :data:`~mmv_torch.index.store.FAULT_POINTS` are passed as on the
per-file path.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmv_torch.index import store as _store
from mmv_torch.index.store import SPACES, VECTORS, IndexStore

Window = tuple
"""(start, end, has audio, JPEG thumbnail[, has video]), as :meth:`IndexStore.add_file` takes them (has
video true when left out)."""


def _rows(windows: list[Window]) -> list[tuple[float, float, bool, bytes | None, bool]]:
    return [(float(w[0]), float(w[1]), bool(w[2]), w[3], bool(w[4]) if len(w) > 4 else True) for w in windows]


@dataclass
class FileWrite:
    """One file to store: ``error`` set records it as bad (no windows, no vectors)."""

    path: str | Path
    root: int
    duration: float = 0.0
    has_audio: bool = False
    windows: list[Window] | None = None
    vectors: dict[str, np.ndarray] | None = None
    error: str | None = None
    size_mtime: tuple[int, float] | None = None
    """The file's size and mtime to record (default: read from the file now; a merge passes the values
    of the part it copies from)."""


def _npz_bytes(item: FileWrite) -> bytes:
    assert item.windows is not None and item.vectors is not None
    rows = _rows(item.windows)
    n_audio, n_video = sum(1 for w in rows if w[2]), sum(1 for w in rows if w[4])
    for space in SPACES:
        want = n_audio if space == "audio_va" else n_video
        if item.vectors[space].shape[0] != want:
            raise ValueError(f"{item.path}: {space}: {item.vectors[space].shape[0]} vectors for {want} windows")
    buf = io.BytesIO()
    np.savez(buf, **{s: np.ascontiguousarray(item.vectors[s], dtype=np.float32) for s in SPACES})
    return buf.getvalue()


def add_files(store: IndexStore, items: list[FileWrite]) -> list[int]:
    """Store ``items`` in one transaction (see the module docstring); returns their file ids. SQLite
    errors become the store's one-line errors, a failed vectors write an ``IndexWriteError``."""
    if not items:
        return []
    try:
        return _add_files(store, items)
    except sqlite3.Error as e:
        raise _store._sqlite_error(store.folder, e) from None


def _add_files(store: IndexStore, items: list[FileWrite]) -> list[int]:
    prepared = []
    for it in items:
        p = Path(it.path).resolve()
        if it.size_mtime is None:
            st = p.stat()
            size_mtime = (int(st.st_size), float(st.st_mtime))
        else:
            size_mtime = it.size_mtime
        prepared.append((it, p, size_mtime, None if it.error is not None else _npz_bytes(it)))
    ids: list[int] = []
    olds: list[int] = []
    written: list[Path] = []
    try:
        with store._transaction() as db:
            for it, p, (size, mtime), data in prepared:
                fid, old = store._replace(db, str(p))
                if old is not None:
                    olds.append(old)
                ids.append(fid)
                if data is None:
                    db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, NULL, NULL, 'bad', ?)",
                               (fid, str(p), it.root, size, mtime, it.error))
                    continue
                npz = store.folder / VECTORS / f"{fid}.npz"
                written.append(npz)
                try:
                    _store.atomic_write(npz, lambda tmp, data=data: tmp.write_bytes(data))
                except OSError as e:
                    raise _store._write_failed(store.folder, f"{VECTORS}/{fid}.npz", e) from None
                _store._fault("vectors_written")
                db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, 'done', NULL)",
                           (fid, str(p), it.root, size, mtime, it.duration, int(it.has_audio)))
                db.executemany("INSERT INTO windows (file, start, end, has_audio, thumb, has_video) VALUES "
                               "(?, ?, ?, ?, ?, ?)", [(fid, s, e, int(a), t, int(v)) for s, e, a, t, v in
                                                      _rows(it.windows or [])])
    except BaseException:
        for npz in written:  # uncommitted ids: no row owns these npz
            with contextlib.suppress(OSError):
                npz.unlink()
        raise
    _store._fault("committed")
    if olds:
        store._unlink_vectors(olds)
    return ids
