"""The on-disk index: SQLite metadata, per-file vectors and the faiss nearest-neighbour indexes.

An index folder holds:

- ``meta.sqlite``: ``info`` (settings: checkpoint, vocabulary, window and stride, dimensions, the
  nearest-neighbour kind chosen per space), ``roots`` (the folders whose files may be served),
  ``files`` (path, size, mtime, duration, has-audio, status ``done`` or ``bad`` with the reason) and
  ``windows`` (file, start, end, has-audio, a small JPEG thumbnail).
- ``vectors/<file id>.npz``: the L2-normalised embeddings of one file's windows per space, written
  atomically *before* the file's rows are committed, so a killed build never leaves a committed file
  without its vectors (an uncommitted file is simply indexed again).
- ``<space>.faiss``: the nearest-neighbour index of each space, rebuilt from the vectors at the end of a
  build or add (exact inner product below :data:`EXACT_LIMIT` vectors, IVF above, its ``nprobe`` tuned
  on a sample against exact search); ids are window ids.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.extras import require
from mmv_torch.fileio import atomic_write

SPACES = ("video_vt", "video_va", "audio_va")
"""Indexed spaces: video windows in the text space (S_vt, S_vat under FAC), video windows in the audio
space (S_va) and the windows' audio in S_va (windows with an audio track only)."""
EXACT_LIMIT = 100_000
"""Up to this many vectors a space is searched exactly; above it an IVF index is built."""
META = "meta.sqlite"
VECTORS = "vectors"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root INTEGER NOT NULL, size INTEGER NOT NULL,
  mtime REAL NOT NULL, duration REAL, has_audio INTEGER, status TEXT NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS windows (
  id INTEGER PRIMARY KEY, file INTEGER NOT NULL, start REAL NOT NULL, end REAL NOT NULL,
  has_audio INTEGER NOT NULL, thumb BLOB);
CREATE INDEX IF NOT EXISTS windows_file ON windows(file);
"""


@dataclass(frozen=True)
class FileRecord:
    """One indexed file."""

    id: int
    path: str
    root: int
    size: int
    mtime: float
    duration: float | None
    has_audio: bool
    status: str
    error: str | None


def is_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds an index (its ``meta.sqlite``)."""
    return (Path(folder) / META).is_file()


class IndexStore:
    """Read and write one index folder. Connections are per thread (the web server answers requests on
    several threads); writes commit per file."""

    def __init__(self, folder: str | Path, create: bool = False) -> None:
        self.folder = Path(folder)
        if not create and not is_index(self.folder):
            raise ValueError(f"{self.folder}: not an index (no {META}; build one with `mmv-torch index build`)")
        (self.folder / VECTORS).mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.db.executescript(_SCHEMA)
        self._faiss: dict[str, Any] = {}
        self._faiss_lock = threading.Lock()

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.folder / META, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    # -- settings ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Every setting recorded in ``info``."""
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM info")}

    def set_info(self, **values: Any) -> None:
        """Record settings (JSON values) and commit."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    def add_root(self, path: str | Path) -> int:
        """The id of root folder ``path`` (absolute, resolved), added if new."""
        p = str(Path(path).resolve())
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", (p,))
        return int(self.db.execute("SELECT id FROM roots WHERE path = ?", (p,)).fetchone()[0])

    def roots(self) -> dict[int, Path]:
        """Root id -> folder."""
        return {int(i): Path(p) for i, p in self.db.execute("SELECT id, path FROM roots")}

    # -- files and windows ------------------------------------------------------------------------
    def file(self, path: str | Path) -> FileRecord | None:
        """The record of ``path`` (resolved), if indexed."""
        row = self.db.execute("SELECT * FROM files WHERE path = ?", (str(Path(path).resolve()),)).fetchone()
        return None if row is None else FileRecord(*row[:6], bool(row[6]), *row[7:])

    def file_by_id(self, file_id: int) -> FileRecord | None:
        """The record of file ``file_id``."""
        row = self.db.execute("SELECT * FROM files WHERE id = ?", (int(file_id),)).fetchone()
        return None if row is None else FileRecord(*row[:6], bool(row[6]), *row[7:])

    def unchanged(self, path: str | Path) -> bool:
        """Whether ``path`` is indexed (done or bad) with its current size and mtime."""
        p = Path(path)
        rec = self.file(p)
        if rec is None:
            return False
        st = p.stat()
        return rec.size == st.st_size and rec.mtime == st.st_mtime

    def _forget(self, path: str) -> None:
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM windows WHERE file = ?", (row[0],))
            self.db.execute("DELETE FROM files WHERE id = ?", (row[0],))
            (self.folder / VECTORS / f"{row[0]}.npz").unlink(missing_ok=True)

    def _next_file_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM files").fetchone()[0])

    def add_file(self, path: str | Path, root: int, duration: float, has_audio: bool,
                 windows: list[tuple[float, float, bool, bytes | None]], vectors: dict[str, np.ndarray]) -> int:
        """Store one file: its vectors (one row per window; ``audio_va`` rows for the windows with audio
        only) written atomically, then its rows committed in one transaction. Returns the file id."""
        p = Path(path).resolve()
        st = p.stat()
        n_audio = sum(1 for w in windows if w[2])
        for space in SPACES:
            want = n_audio if space == "audio_va" else len(windows)
            if vectors[space].shape[0] != want:
                raise ValueError(f"{space}: {vectors[space].shape[0]} vectors for {want} windows")
        with self.db:
            self._forget(str(p))
            fid = self._next_file_id()
            buf = io.BytesIO()
            np.savez(buf, **{s: np.ascontiguousarray(vectors[s], dtype=np.float32) for s in SPACES})
            atomic_write(self.folder / VECTORS / f"{fid}.npz", lambda tmp: tmp.write_bytes(buf.getvalue()))
            self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, 'done', NULL)",
                            (fid, str(p), root, st.st_size, st.st_mtime, duration, int(has_audio)))
            self.db.executemany("INSERT INTO windows (file, start, end, has_audio, thumb) VALUES (?, ?, ?, ?, ?)",
                                [(fid, s, e, int(a), t) for s, e, a, t in windows])
        return fid

    def add_bad(self, path: str | Path, root: int, reason: str) -> None:
        """Record a file that could not be indexed (it is skipped until it changes)."""
        p = Path(path).resolve()
        st = p.stat()
        with self.db:
            self._forget(str(p))
            self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, NULL, NULL, 'bad', ?)",
                            (self._next_file_id(), str(p), root, st.st_size, st.st_mtime, reason))

    def counts(self) -> dict[str, int]:
        """Files done, files bad, windows."""
        done = self.db.execute("SELECT COUNT(*) FROM files WHERE status = 'done'").fetchone()[0]
        bad = self.db.execute("SELECT COUNT(*) FROM files WHERE status = 'bad'").fetchone()[0]
        wins = self.db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        return {"files": int(done), "bad_files": int(bad), "windows": int(wins)}

    def bad_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be indexed."""
        return [(p, e) for p, e in self.db.execute("SELECT path, error FROM files WHERE status = 'bad' ORDER BY id")]

    def windows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Window id -> ``{"file", "path", "root", "start", "end", "has_audio"}``."""
        ids = [int(i) for i in ids]
        out: dict[int, dict[str, Any]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            q = ("SELECT w.id, w.file, f.path, f.root, w.start, w.end, w.has_audio FROM windows w JOIN files f "
                 f"ON f.id = w.file WHERE w.id IN ({','.join('?' * len(part))})")
            for wid, fid, path, root, s, e, a in self.db.execute(q, part):
                out[int(wid)] = {"file": fid, "path": path, "root": root, "start": s, "end": e, "has_audio": bool(a)}
        return out

    def window_vector(self, space: str, window_id: int) -> np.ndarray | None:
        """The stored embedding of one window in ``space`` (``None``: no such window, or no audio)."""
        row = self.db.execute("SELECT file, has_audio FROM windows WHERE id = ?", (int(window_id),)).fetchone()
        if row is None or (space == "audio_va" and not row[1]):
            return None
        q = "SELECT id FROM windows WHERE file = ?" + (" AND has_audio = 1" if space == "audio_va" else "")
        order = [w for (w,) in self.db.execute(q + " ORDER BY id", (row[0],))]
        with np.load(self.folder / VECTORS / f"{row[0]}.npz") as z:
            return z[space][order.index(int(window_id))]

    def thumbnail(self, window_id: int) -> bytes | None:
        """The JPEG thumbnail of a window."""
        row = self.db.execute("SELECT thumb FROM windows WHERE id = ?", (int(window_id),)).fetchone()
        return None if row is None else row[0]

    # -- vectors and nearest neighbours -----------------------------------------------------------
    def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """All vectors of ``space`` and their window ids, in window order."""
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        vecs, ids = [], []
        rows = self.db.execute("SELECT id FROM files WHERE status = 'done' ORDER BY id").fetchall()
        for (fid,) in rows:
            wins = self.db.execute("SELECT id, has_audio FROM windows WHERE file = ? ORDER BY id", (fid,)).fetchall()
            with np.load(self.folder / VECTORS / f"{fid}.npz") as z:
                v = z[space]
            wid = [w for w, a in wins if a or space != "audio_va"]
            vecs.append(v)
            ids.extend(wid)
        dim = int(self.info().get("dims", {}).get(space, 0))
        arr = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        return arr.astype(np.float32, copy=False), np.asarray(ids, dtype=np.int64)

    def rebuild(self, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Rebuild every space's nearest-neighbour index from the stored vectors; records and returns the
        kind chosen per space."""
        faiss = require("faiss", "the search index")

        kinds = {}
        for space in SPACES:
            vecs, ids = self.vectors(space)
            index, kind = build_faiss(vecs, ids, seed=seed)
            data = faiss.serialize_index(index)
            atomic_write(self.folder / f"{space}.faiss", lambda tmp, d=data: tmp.write_bytes(d.tobytes()))
            kinds[space] = kind
        self.set_info(nn_index=kinds)
        with self._faiss_lock:
            self._faiss.clear()
        return kinds

    def faiss_index(self, space: str) -> Any:
        """The loaded nearest-neighbour index of ``space`` (``None`` before the first rebuild)."""
        faiss = require("faiss", "the search index")

        with self._faiss_lock:
            if space not in self._faiss:
                path = self.folder / f"{space}.faiss"
                if not path.is_file():
                    return None
                index = faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
                nprobe = self.info().get("nn_index", {}).get(space, {}).get("nprobe")
                if nprobe:
                    faiss.extract_index_ivf(index).nprobe = int(nprobe)
                self._faiss[space] = index
            return self._faiss[space]

    def search(self, space: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest windows of ``query`` (``(D,)``, L2-normalised) in ``space``: (scores, ids)."""
        index = self.faiss_index(space)
        if index is None or index.ntotal == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, ids = index.search(np.ascontiguousarray(query[None], dtype=np.float32), min(k, index.ntotal))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]


def build_faiss(vecs: np.ndarray, ids: np.ndarray, *, exact_limit: int = EXACT_LIMIT, target_recall: float = 0.95,
                seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A faiss inner-product index over ``vecs`` (rows L2-normalised) with window ``ids``: exact
    (``IndexFlatIP``) up to ``exact_limit`` vectors, else ``IndexIVFFlat`` with about ``4 sqrt(n)``
    lists whose ``nprobe`` is the smallest power of two reaching ``target_recall`` recall@10 against
    exact search on 200 stored vectors used as queries. Returns ``(index, kind)``; ``kind`` records the
    choice."""
    faiss = require("faiss", "the search index")

    n, d = vecs.shape
    d = max(d, 1)
    if n <= exact_limit:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        if n:
            index.add_with_ids(vecs, ids)
        return index, {"type": "exact", "vectors": int(n)}
    nlist = int(min(65536, max(16, 4 * np.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vecs[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
    index.train(np.ascontiguousarray(sample))
    index.add_with_ids(vecs, ids)
    queries = np.ascontiguousarray(vecs[rng.choice(n, size=min(n, 200), replace=False)])
    exact = faiss.IndexFlatIP(d)
    exact.add(vecs)
    _, truth = exact.search(queries, 10)
    truth_ids = ids[truth]
    nprobe, recall = 1, 0.0
    while nprobe <= nlist:
        index.nprobe = nprobe
        _, got = index.search(queries, 10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth_ids)]))
        if recall >= target_recall:
            break
        nprobe *= 2
    index.nprobe = min(nprobe, nlist)
    return index, {"type": "ivf", "vectors": int(n), "nlist": nlist, "nprobe": int(index.nprobe),
                   "recall_at_10": round(recall, 4)}
