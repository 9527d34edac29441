"""The on-disk index: SQLite metadata, per-file vectors and the faiss nearest-neighbour indexes.

An index folder holds:

- ``meta.sqlite``: ``info`` (settings: checkpoint, vocabulary, window kind, length and stride,
  dimensions, the nearest-neighbour kind chosen per space), ``roots``, ``files`` and ``windows``
  (schema and migrations: :mod:`.schema`). A window of a file whose video cannot be decoded is
  audio-only (``has_video`` 0): it has an ``audio_va`` vector and no video vectors.
- ``vectors/<file id>.npz``: the L2-normalised embeddings of one file's windows per space. One write
  transaction per file (``BEGIN IMMEDIATE``) allocates the id (above every committed id), writes the
  npz atomically under it, inserts the rows and commits; a re-indexed or removed file's old npz is
  deleted only after the commit. So a killed build never leaves a committed file without its vectors
  (an uncommitted file is simply indexed again), and the stray npz a kill may leave is deleted by the
  next rebuild.
- ``.lock``: the writer lock (:mod:`.lock`); readers never take it.
- ``<space>.faiss``: the nearest-neighbour index of each space, rebuilt from the vectors at the end of a
  build or add (:mod:`.nn`: exact, IVF-Flat or IVF-PQ by size and memory budget, its ``nprobe`` tuned
  on a sample against exact search), opened memory-mapped; ids are window ids.
- ``<space>.vectors.npy`` / ``<space>.ids.npy``: every vector of the space in one float32 file with
  its window ids, written at each rebuild; a compressed index re-ranks its candidates from it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import sqlite3
import sys
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mmv_torch.extras import require
from mmv_torch.fileio import atomic_write, is_temporary
from mmv_torch.index.lock import IndexBusyError, IndexLock, active_writer, describe
from mmv_torch.index.nn import EXACT_LIMIT, SERVE_SHARE, NNIndex, build_faiss, open_index, rebuild_space
from mmv_torch.index.schema import has_column, migrate

__all__ = ["EXACT_LIMIT", "IndexStore", "build_faiss"]

SPACES = ("video_vt", "video_va", "audio_va")
"""Indexed spaces: video windows in the text space (S_vt, S_vat under FAC), video windows in the audio
space (S_va) and the windows' audio in S_va (windows with an audio track only)."""
META = "meta.sqlite"
VECTORS = "vectors"



class IndexDamagedError(ValueError):
    """A file of the index (``meta.sqlite``, a ``.faiss`` file) cannot be read; the message says what to run."""


class IndexWriteError(ValueError):
    """The index could not be written (a full disk, an I/O error); what was committed before is kept."""


class IndexNotReadyError(ValueError):
    """The index cannot answer searches yet: its build was interrupted, or is running now."""


class BrokenVectors(ValueError):
    """A committed file's ``vectors/<id>.npz`` is missing, unreadable or disagrees with its windows."""

    def __init__(self, folder: Path, file_id: int, path: str, reason: str) -> None:
        super().__init__(f"{folder}/{VECTORS}/{file_id}.npz ({path}): {reason}; `mmv-torch index check {folder} "
                         "--repair` marks the file to be indexed again")
        self.file_id, self.path, self.reason = file_id, path, reason


FAULT_POINTS = ("vectors_written", "rows_written", "committed", "old_vectors_removed", "faiss_written",
                "nn_index_recorded")
"""The points of the write path where :data:`fault_hook` is called: after a file's npz is written
(before its rows), before its transaction commits, after the commit, after the old npz of a
re-indexed or removed file is deleted, after each ``.faiss`` file, after the nearest-neighbour kinds
are recorded. The fault-injection tests kill the process at each of them."""
fault_hook: Callable[[str], None] | None = None
"""Called with the name of each :data:`FAULT_POINTS` reached (tests only; ``None`` in normal use)."""


def _fault(point: str) -> None:
    if fault_hook is not None:
        fault_hook(point)


def _free_mb(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free"
    except OSError:
        return "free space unknown"


def _write_failed(folder: Path, what: str, e: BaseException) -> IndexWriteError:
    reason = getattr(e, "strerror", None) or " ".join(str(e).split())
    return IndexWriteError(f"{folder}: cannot write {what}: {reason} ({_free_mb(folder)}); free space and run the "
                           "same command again (the files committed so far are kept)")


def _sqlite_error(folder: Path, e: sqlite3.Error) -> ValueError:
    text = " ".join(str(e).split())
    if isinstance(e, sqlite3.OperationalError) and ("full" in text or "disk I/O" in text or "readonly" in text):
        return _write_failed(folder, META, e)
    if isinstance(e, sqlite3.OperationalError) and "locked" in text:
        return IndexBusyError(f"{folder}/{META} stayed locked by another process for 30 s ({text}); run the "
                              "command again")
    return IndexDamagedError(f"{folder}/{META} is damaged ({text}): the index cannot be read; build it again with "
                             "`mmv-torch index build --checkpoint CKPT --videos DIR --out NEW_FOLDER`")


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """SQLite errors of an :class:`IndexStore` method become one-line errors naming the index."""

    @functools.wraps(method)
    def wrapper(self: IndexStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise _sqlite_error(self.folder, e) from None

    return wrapper  # type: ignore[return-value]


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


def vectors_readable(path: str | Path) -> bool:
    """Whether an npz file's directory is intact and names every space (cheap: reads its end only)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {f"{s}.npy" for s in SPACES} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


class IndexStore:
    """Read and write one index folder. Connections are per thread (the web server answers requests on
    several threads); writes commit per file. A store that writes holds the folder's writer lock
    (:mod:`.lock`; ``writer=True`` takes it at once, waiting for another writer when ``wait``), readers
    never lock. SQLite errors come out as one-line :class:`IndexDamagedError` / :class:`IndexWriteError`."""

    def __init__(self, folder: str | Path, create: bool = False, writer: bool = False, wait: bool = True) -> None:
        self.folder = Path(folder)
        if not create and not is_index(self.folder):
            raise ValueError(f"{self.folder}: not an index (no {META}; build one with `mmv-torch index build`)")
        self._lock = IndexLock(self.folder)
        if writer:
            self._lock.acquire(wait)
        self._local = threading.local()
        self._faiss: dict[str, tuple[Any, Any]] = {}
        self._faiss_lock = threading.Lock()
        try:
            if create or writer:
                (self.folder / VECTORS).mkdir(parents=True, exist_ok=True)
                migrate(self.db)
            else:
                self.db.execute("SELECT COUNT(*) FROM files").fetchone()
        except sqlite3.Error as e:
            self.close()
            raise _sqlite_error(self.folder, e) from None
        except OSError as e:
            self.close()
            raise _write_failed(self.folder, META, e) from None

    @property
    def _video(self) -> str:
        """The SQL of a window's has-video flag: ``1`` in an index older than the column, opened to read
        (asked again until a writer has added it: a running server sees an ``index add`` migrate)."""
        if not getattr(self, "_video_column", False):
            self._video_column = has_column(self.db, "windows", "has_video")
        return "has_video" if self._video_column else "1"

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.folder / META, timeout=30)
            self._local.conn = conn
            conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def close(self) -> None:
        """Close this thread's connection and give the writer lock back (if this store took it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._lock.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._lock.release()

    def lock_writer(self, wait: bool = True) -> None:
        """Take the folder's writer lock now (see :mod:`.lock`); every write method takes it anyway."""
        self._lock.acquire(wait)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the writer lock, begun IMMEDIATE (ids read inside it are this
        writer's alone), committed on success and rolled back on any error."""
        self._lock.acquire()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            _fault("rows_written")
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _unlink_vectors(self, file_ids: Iterable[int]) -> None:
        """Delete the npz of files whose rows are gone (after the commit: a crash before it keeps them)."""
        for fid in file_ids:
            (self.folder / VECTORS / f"{fid}.npz").unlink(missing_ok=True)
        _fault("old_vectors_removed")

    # -- settings ---------------------------------------------------------------------------------
    @_guarded
    def info(self) -> dict[str, Any]:
        """Every setting recorded in ``info``."""
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM info")}

    @_guarded
    def set_info(self, **values: Any) -> None:
        """Record settings (JSON values) and commit."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    @_guarded
    def add_root(self, path: str | Path) -> int:
        """The id of root folder ``path`` (absolute, resolved), added if new."""
        p = str(Path(path).resolve())
        row = self.db.execute("SELECT id FROM roots WHERE path = ?", (p,)).fetchone()
        if row is None:
            with self._transaction() as db:
                db.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", (p,))
            row = self.db.execute("SELECT id FROM roots WHERE path = ?", (p,)).fetchone()
        return int(row[0])

    @_guarded
    def roots(self) -> dict[int, Path]:
        """Root id -> folder."""
        return {int(i): Path(p) for i, p in self.db.execute("SELECT id, path FROM roots")}

    # -- files and windows ------------------------------------------------------------------------
    @_guarded
    def file(self, path: str | Path) -> FileRecord | None:
        """The record of ``path`` (resolved), if indexed."""
        row = self.db.execute("SELECT * FROM files WHERE path = ?", (str(Path(path).resolve()),)).fetchone()
        return None if row is None else FileRecord(*row[:6], bool(row[6]), *row[7:])

    @_guarded
    def file_by_id(self, file_id: int) -> FileRecord | None:
        """The record of file ``file_id``."""
        row = self.db.execute("SELECT * FROM files WHERE id = ?", (int(file_id),)).fetchone()
        return None if row is None else FileRecord(*row[:6], bool(row[6]), *row[7:])

    def unchanged(self, path: str | Path) -> bool:
        """Whether ``path`` is indexed (done or bad) with its current size and mtime, and, when done, its
        vectors are there (a file whose npz went missing is indexed again)."""
        p = Path(path)
        rec = self.file(p)
        if rec is None:
            return False
        st = p.stat()
        if rec.size != st.st_size or rec.mtime != st.st_mtime:
            return False
        return rec.status != "done" or vectors_readable(self.folder / VECTORS / f"{rec.id}.npz")

    def _replace(self, db: sqlite3.Connection, path: str) -> tuple[int, int | None]:
        """Inside a write transaction: a new file id (above every id ever committed, so it never names an
        npz that a committed row still owns) and the id of ``path``'s old rows, which are deleted."""
        fid = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM files").fetchone()[0])
        row = db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is not None:
            db.execute("DELETE FROM windows WHERE file = ?", (row[0],))
            db.execute("DELETE FROM files WHERE id = ?", (row[0],))
        return fid, None if row is None else int(row[0])

    @_guarded
    def add_file(self, path: str | Path, root: int, duration: float, has_audio: bool,
                 windows: list[tuple[Any, ...]], vectors: dict[str, np.ndarray]) -> int:
        """Store one file in one transaction: a new id allocated inside it, the vectors (one row per
        window; ``audio_va`` rows for the windows with audio only, ``video_*`` rows for those with video)
        written atomically under that id, the rows inserted and committed; a re-indexed file's old npz is
        deleted after the commit. ``windows``: ``(start, end, has_audio, thumbnail[, has_video])`` each
        (has-video true when left out). Returns the file id."""
        p = Path(path).resolve()
        st = p.stat()
        rows = [(float(w[0]), float(w[1]), bool(w[2]), w[3], bool(w[4]) if len(w) > 4 else True) for w in windows]
        n_audio, n_video = sum(1 for w in rows if w[2]), sum(1 for w in rows if w[4])
        for space in SPACES:
            want = n_audio if space == "audio_va" else n_video
            if vectors[space].shape[0] != want:
                raise ValueError(f"{space}: {vectors[space].shape[0]} vectors for {want} windows")
        buf = io.BytesIO()
        np.savez(buf, **{s: np.ascontiguousarray(vectors[s], dtype=np.float32) for s in SPACES})
        fid, old, npz = 0, None, None
        try:
            with self._transaction() as db:
                fid, old = self._replace(db, str(p))
                npz = self.folder / VECTORS / f"{fid}.npz"
                try:
                    atomic_write(npz, lambda tmp: tmp.write_bytes(buf.getvalue()))
                except OSError as e:
                    raise _write_failed(self.folder, f"{VECTORS}/{fid}.npz", e) from None
                _fault("vectors_written")
                db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, 'done', NULL)",
                           (fid, str(p), root, st.st_size, st.st_mtime, duration, int(has_audio)))
                db.executemany("INSERT INTO windows (file, start, end, has_audio, thumb, has_video) VALUES "
                               "(?, ?, ?, ?, ?, ?)", [(fid, s, e, int(a), t, int(v)) for s, e, a, t, v in rows])
        except BaseException:
            if npz is not None:  # an uncommitted id: no row owns this npz
                with contextlib.suppress(OSError):
                    npz.unlink()
            raise
        _fault("committed")
        if old is not None:
            self._unlink_vectors([old])
        return fid

    @_guarded
    def add_bad(self, path: str | Path, root: int, reason: str) -> None:
        """Record a file that could not be indexed (it is skipped until it changes)."""
        p = Path(path).resolve()
        st = p.stat()
        with self._transaction() as db:
            fid, old = self._replace(db, str(p))
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, NULL, NULL, 'bad', ?)",
                       (fid, str(p), root, st.st_size, st.st_mtime, reason))
        _fault("committed")
        if old is not None:
            self._unlink_vectors([old])

    @_guarded
    def mark_for_reindex(self, file_id: int, reason: str) -> None:
        """Record a done file whose vectors are lost as ``bad`` with ``reason``, its windows removed and
        its size unknown (-1), so the next ``index add`` of its folder indexes it again."""
        with self._transaction() as db:
            db.execute("DELETE FROM windows WHERE file = ?", (int(file_id),))
            db.execute("UPDATE files SET status = 'bad', size = -1, error = ? WHERE id = ?", (reason, int(file_id)))
        _fault("committed")
        self._unlink_vectors([int(file_id)])

    @_guarded
    def missing_files(self) -> list[tuple[int, str]]:
        """(id, path) of indexed files (done or bad) that no longer exist, under roots that still exist
        (the files of an unmounted disk are not missing)."""
        roots = self.roots()
        out = []
        for fid, path, root in self.db.execute("SELECT id, path, root FROM files ORDER BY id").fetchall():
            r = roots.get(int(root))
            if not Path(path).exists() and (r is None or r.is_dir()):
                out.append((int(fid), str(path)))
        return out

    @_guarded
    def remove_files(self, file_ids: Iterable[int]) -> int:
        """Remove files (rows and windows) in one transaction, then their npz; returns how many."""
        ids = [int(i) for i in file_ids]
        if not ids:
            return 0
        with self._transaction() as db:
            db.executemany("DELETE FROM windows WHERE file = ?", [(i,) for i in ids])
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
        _fault("committed")
        self._unlink_vectors(ids)
        return len(ids)

    @_guarded
    def counts(self) -> dict[str, int]:
        """Files done, files bad, windows."""
        done = self.db.execute("SELECT COUNT(*) FROM files WHERE status = 'done'").fetchone()[0]
        bad = self.db.execute("SELECT COUNT(*) FROM files WHERE status = 'bad'").fetchone()[0]
        wins = self.db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        return {"files": int(done), "bad_files": int(bad), "windows": int(wins)}

    @_guarded
    def bad_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be indexed."""
        return [(p, e) for p, e in self.db.execute("SELECT path, error FROM files WHERE status = 'bad' ORDER BY id")]

    @_guarded
    def windows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Window id -> ``{"file", "path", "root", "start", "end", "has_audio", "has_video"}``."""
        ids = [int(i) for i in ids]
        out: dict[int, dict[str, Any]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            q = (f"SELECT w.id, w.file, f.path, f.root, w.start, w.end, w.has_audio, {self._video} FROM windows w "
                 f"JOIN files f ON f.id = w.file WHERE w.id IN ({','.join('?' * len(part))})")
            for wid, fid, path, root, s, e, a, v in self.db.execute(q, part):
                out[int(wid)] = {"file": fid, "path": path, "root": root, "start": s, "end": e, "has_audio": bool(a),
                                 "has_video": bool(v)}
        return out

    def _in_space(self, space: str) -> str:
        """The SQL condition on a window (table ``windows``) for having a vector in ``space``."""
        return "has_audio = 1" if space == "audio_va" else f"{self._video} = 1"

    @_guarded
    def window_ids(self, file_id: int, space: str) -> list[int]:
        """The ids of file ``file_id``'s windows that have a vector in ``space``, in the order of its npz rows
        (audio for ``audio_va``, video for the video spaces)."""
        q = f"SELECT id FROM windows WHERE file = ? AND {self._in_space(space)} ORDER BY id"
        return [int(w) for (w,) in self.db.execute(q, (int(file_id),))]

    @_guarded
    def window_vector(self, space: str, window_id: int) -> np.ndarray | None:
        """The stored embedding of one window in ``space`` (``None``: no such window, no audio or no video
        for that space, or its file's vectors are unreadable)."""
        row = self.db.execute("SELECT file FROM windows WHERE id = ?", (int(window_id),)).fetchone()
        order = [] if row is None else self.window_ids(row[0], space)
        if int(window_id) not in order:
            return None
        try:
            with np.load(self.folder / VECTORS / f"{row[0]}.npz", allow_pickle=False) as z:
                return z[space][order.index(int(window_id))]
        except (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile):
            return None

    @_guarded
    def thumbnail(self, window_id: int) -> bytes | None:
        """The JPEG thumbnail of a window."""
        row = self.db.execute("SELECT thumb FROM windows WHERE id = ?", (int(window_id),)).fetchone()
        return None if row is None else row[0]

    # -- vectors and nearest neighbours -----------------------------------------------------------
    @_guarded
    def file_vectors(self, file_id: int, space: str, dim: int = 0) -> tuple[np.ndarray, list[int]]:
        """One done file's vectors of ``space`` and their window ids (:meth:`window_ids`; none for a space
        it has no windows in, whatever the empty array's width). Raises :class:`BrokenVectors` when its npz
        is missing, unreadable or has other row counts than its windows (or widths than ``dim``)."""
        fid = int(file_id)
        path = str(self.db.execute("SELECT path FROM files WHERE id = ?", (fid,)).fetchone()[0])
        wid = self.window_ids(fid, space)
        try:
            with np.load(self.folder / VECTORS / f"{fid}.npz", allow_pickle=False) as z:
                v = z[space]
        except FileNotFoundError:
            raise BrokenVectors(self.folder, fid, path, "vectors missing") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            reason = "not an npz file" if "pickle" in str(e) else " ".join(str(e).split())[:200]
            raise BrokenVectors(self.folder, fid, path, f"vectors unreadable ({reason})") from None
        if v.ndim != 2 or v.shape[0] != len(wid) or (dim and len(wid) and v.shape[1] != dim):
            raise BrokenVectors(self.folder, fid, path, f"{space} vectors of shape {tuple(v.shape)} for "
                                f"{len(wid)} windows of width {dim or '?'}")
        if not len(wid) and dim:  # an audio-only file's video spaces: no rows, of the space's width
            v = np.zeros((0, dim), np.float32)
        return v, wid

    @_guarded
    def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """All vectors of ``space`` and their window ids, in window order. Raises :class:`BrokenVectors`
        for the first done file whose vectors are lost (see :meth:`file_vectors`)."""
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        dim = int(self.info().get("dims", {}).get(space, 0))
        vecs, ids = [], []
        for (fid,) in self.db.execute("SELECT id FROM files WHERE status = 'done' ORDER BY id").fetchall():
            v, wid = self.file_vectors(fid, space, dim)
            if wid:
                vecs.append(v)
                ids.extend(wid)
        arr = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        return arr.astype(np.float32, copy=False), np.asarray(ids, dtype=np.int64)

    def _write_faiss(self, space: str, index: Any) -> None:
        faiss = require("faiss", "the search index")
        try:
            atomic_write(self.folder / f"{space}.faiss", lambda tmp: faiss.write_index(index, str(tmp)))
        except OSError as e:
            raise _write_failed(self.folder, f"{space}.faiss", e) from None
        _fault("faiss_written")

    @_guarded
    def stray_files(self) -> list[Path]:
        """npz files that belong to no committed file (an old npz whose deletion a kill cut short, the npz
        of a file whose commit never came) and temporary files left by interrupted writes."""
        done = {int(i) for (i,) in self.db.execute("SELECT id FROM files WHERE status = 'done'")}
        out = [p for p in sorted((self.folder / VECTORS).iterdir())
               if is_temporary(p) or (p.suffix == ".npz" and not (p.stem.isdigit() and int(p.stem) in done))]
        return out + [p for p in sorted(self.folder.iterdir()) if p.is_file() and is_temporary(p)]

    def _chunks(self, space: str, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for (fid,) in self.db.execute("SELECT id FROM files WHERE status = 'done' ORDER BY id").fetchall():
            v, wid = self.file_vectors(fid, space, dim)
            yield v, np.asarray(wid, np.int64)

    def rebuild(self, seed: int = 0, *, memory_gb: float | None = None, nn_index: str | None = None
                ) -> dict[str, dict[str, Any]]:
        """Rebuild every space's nearest-neighbour index from the stored vectors (:mod:`.nn`): the faiss
        factory ``nn_index``, or the choice within ``memory_gb`` of resident memory for serving (both
        recorded, and kept by later rebuilds when not given); records and returns the kind per space.
        Stray npz and temporary files (:meth:`stray_files`) are deleted first. A file whose vectors are
        lost (:class:`BrokenVectors`) is reported on stderr and marked to be indexed again
        (:meth:`mark_for_reindex`) instead of failing the rebuild."""
        self._lock.acquire()
        for p in self.stray_files():  # the writer lock is held: no other process is writing them
            p.unlink(missing_ok=True)
        info = self.info()
        old = info.get("nn_settings", {})
        settings = {"memory_gb": old.get("memory_gb") if memory_gb is None else float(memory_gb),
                    "factory": old.get("factory") if nn_index is None else str(nn_index)}
        changed = settings != {"memory_gb": old.get("memory_gb"), "factory": old.get("factory")}
        while True:
            try:
                kinds, counts = {}, {s: self.committed_vectors(s) for s in SPACES}
                for space in SPACES:
                    dim = int(info.get("dims", {}).get(space, 0))
                    budget = None if settings["memory_gb"] is None else (
                        settings["memory_gb"] * 2**30 * SERVE_SHARE * counts[space] / max(1, sum(counts.values())))
                    nn, kind = rebuild_space(self.folder, space, self._chunks(space, dim), counts[space], dim,
                                             settings["factory"], budget, info.get("nn_index", {}).get(space, {}),
                                             changed, seed)
                    self._write_faiss(space, nn.index)
                    kinds[space] = kind
                break
            except BrokenVectors as e:
                print(f"warning: {e.path}: {e.reason} ({VECTORS}/{e.file_id}.npz); recorded as bad, `index add` "
                      "of its folder indexes it again", file=sys.stderr)
                self.mark_for_reindex(e.file_id, f"{e.reason}: indexed again by the next `index add` of its folder")
        self.set_info(nn_index=kinds, nn_settings=settings)
        _fault("nn_index_recorded")
        with self._faiss_lock:
            self._faiss.clear()
        return kinds

    @_guarded
    def committed_vectors(self, space: str) -> int:
        """How many vectors of ``space`` the committed files have (their windows with audio for ``audio_va``,
        with video for the video spaces)."""
        q = f"SELECT COUNT(*) FROM windows WHERE {self._in_space(space)} AND file IN (SELECT id FROM files WHERE " \
            "status = 'done')"
        return int(self.db.execute(q).fetchone()[0])

    def _not_ready(self, space: str, index: Any) -> IndexNotReadyError | None:
        """Why ``space`` cannot be searched: no ``.faiss`` file, or other vectors than committed windows
        (a build or add stopped before its last step). An index that a writer is extending now is
        searched as it was."""
        writer = active_writer(self.folder)
        if index is not None and writer is not None:
            return None
        if index is None and writer is not None:
            return IndexNotReadyError(f"{self.folder}: the index is being built by {describe(writer)}; search it "
                                      "when the build finishes")
        have, want = (0 if index is None else int(index.ntotal)), self.committed_vectors(space)
        if index is not None and have == want:
            return None
        return IndexNotReadyError(
            f"{self.folder}: index build not finished ({have} of {want} {space} vectors searchable): run "
            f"`mmv-torch index add {self.folder} --videos DIR` with the folder it was built from to finish it, or "
            f"`mmv-torch index check {self.folder} --repair` to search what is stored")

    def faiss_index(self, space: str) -> Any:
        """The nearest-neighbour index of ``space`` (an :class:`~.nn.NNIndex`, opened memory-mapped),
        opened again when its ``.faiss`` file or its recorded kind changes (a running server sees an
        ``index add``). Raises :class:`IndexNotReadyError` for an unfinished index,
        :class:`IndexDamagedError` for an unreadable ``.faiss`` file."""
        require("faiss", "the search index")
        path = self.folder / f"{space}.faiss"
        try:
            st = path.stat()
            sig: tuple[int, ...] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        kind = self.info().get("nn_index", {}).get(space, {})
        key = (sig, json.dumps(kind, sort_keys=True))
        with self._faiss_lock:
            cached = self._faiss.get(space)
            if cached is not None and cached[0] == key:
                return cached[1]
            index: NNIndex | None = None
            if sig is not None:
                try:
                    index = open_index(path, kind, self.folder / f"{space}.vectors.npy")
                except (RuntimeError, OSError, ValueError) as e:
                    raise IndexDamagedError(
                        f"{path} is damaged ({'truncated or not a faiss index' if isinstance(e, RuntimeError) else e}):"
                        f" run `mmv-torch index check {self.folder} --repair` to rebuild it from the stored vectors"
                    ) from None
            problem = self._not_ready(space, index)
            if problem is not None:
                raise problem
            self._faiss[space] = (key, index)
            return index

    def search(self, space: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest windows of ``query`` (``(D,)``, L2-normalised) in ``space``: (scores, ids)."""
        index = self.faiss_index(space)
        if index is None or index.ntotal == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, ids = index.search(query[None], min(k, index.ntotal))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

