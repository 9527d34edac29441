"""``mmv-torch index check INDEX [--repair]``: do the rows, the vectors and the faiss indexes agree?

Checked, in order: SQLite's own integrity check; every committed (``done``) file has a readable
``vectors/<id>.npz`` with one row per window in each space (audio-only windows have no video rows,
windows without sound no audio rows) and the recorded widths; no window belongs
to a missing or bad file; no npz belongs to no committed file and no temporary file of an interrupted
write is left; each space's ``.faiss`` file loads and holds exactly the committed windows' ids, with its
kind recorded; the indexed files still exist. Each problem says what to run.

``--repair`` (under the writer lock) fixes what needs no model: files with lost vectors are marked to
be indexed again by the next ``index add`` of their folder, stray windows, npz and temporary files are
deleted, and the faiss indexes are rebuilt from the stored vectors. It never removes a file that still
exists; files that no longer exist are left to ``index add --prune``. A damaged ``meta.sqlite`` cannot
be repaired: the index is built again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.extras import require
from mmv_torch.index.lock import active_writer, describe
from mmv_torch.index.nn import open_index, read_vectors
from mmv_torch.index.store import SPACES, VECTORS, BrokenVectors, IndexStore, is_index


@dataclass
class Problem:
    """One disagreement: what is wrong, what fixes it, and whether ``--repair`` can."""

    what: str
    fix: str
    repairable: bool


@dataclass
class CheckReport:
    """What :func:`check_index` found (and, with ``repair``, did)."""

    index: str
    counts: dict[str, int]
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem left."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {"index": self.index, **self.counts, "ok": self.ok, "repaired": self.repaired, "notes": self.notes,
                "problems": [{"what": p.what, "fix": p.fix, "repairable": p.repairable} for p in self.problems]}


def faiss_ids(index: Any) -> np.ndarray | None:
    """The ids stored in a faiss index (an ``IndexIDMap`` or an IVF index), or ``None`` for another kind."""
    faiss = require("faiss", "the search index")

    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _lost_vectors(store: IndexStore) -> list[BrokenVectors]:
    """Every done file whose npz is missing, unreadable or disagrees with its windows."""
    dims = store.info().get("dims", {})
    lost = []
    for (fid,) in store.db.execute("SELECT id FROM files WHERE status = 'done' ORDER BY id").fetchall():
        try:
            for space in SPACES:
                store.file_vectors(fid, space, int(dims.get(space, 0)))
        except BrokenVectors as e:
            lost.append(e)
    return lost


def _vectors_match(folder: Path, space: str, want: np.ndarray) -> bool:
    """Whether ``<space>.vectors.npy`` and ``<space>.ids.npy`` hold exactly the windows ``want`` (sorted)."""
    try:
        vecs, ids = read_vectors(folder, space)
    except (OSError, ValueError):
        return False
    return len(vecs) == len(ids) and np.array_equal(np.sort(np.asarray(ids)), want)


def _faiss_problems(store: IndexStore) -> list[str]:
    """Spaces whose ``.faiss`` file is missing, unreadable or holds other ids than the committed windows
    (and, for a kind that re-ranks, whose float vector file holds other windows)."""
    require("faiss", "the search index")

    kinds = store.info().get("nn_index", {})
    out = []
    for space in SPACES:
        path = store.folder / f"{space}.faiss"
        if not path.is_file():
            out.append(f"{path.name} is missing")
            continue
        try:
            index = open_index(path, kinds.get(space, {})).index
        except (RuntimeError, OSError) as e:
            why = "truncated or not a faiss index" if isinstance(e, RuntimeError) else e
            out.append(f"{path.name} is unreadable ({why})")
            continue
        done = [fid for (fid,) in store.db.execute("SELECT id FROM files WHERE status = 'done'").fetchall()]
        want = np.sort(np.array([i for fid in done for i in store.window_ids(fid, space)], np.int64))
        got = faiss_ids(index)
        if int(index.ntotal) != len(want) or (got is not None and not np.array_equal(np.sort(got), want)):
            out.append(f"{path.name} holds {index.ntotal} vectors, the committed windows {len(want)} (or other ids)")
        elif space not in kinds:
            out.append(f"{path.name}: its kind is not recorded (the last rebuild stopped)")
        elif kinds[space].get("rerank") and not _vectors_match(store.folder, space, want):
            out.append(f"{space}.vectors.npy / {space}.ids.npy (the float vectors it re-ranks from) are missing "
                       "or hold other windows")
    return out


def _find(store: IndexStore, live_writer: bool) -> tuple[list[Problem], list[BrokenVectors], list[Path], list[str]]:
    folder = store.folder
    problems: list[Problem] = []
    integrity = [r for (r,) in store.db.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems.append(Problem(f"{folder}/meta.sqlite fails SQLite's integrity check ({integrity[0]})",
                                "build the index again: `mmv-torch index build --checkpoint CKPT --videos DIR --out "
                                "NEW_FOLDER`", False))
    info = store.info()
    if "window_s" not in info:
        problems.append(Problem("the index's build has not started (no settings recorded)",
                                "run `mmv-torch index build` again", False))
    lost = _lost_vectors(store)
    for e in lost:
        problems.append(Problem(f"{e.path}: {e.reason} ({VECTORS}/{e.file_id}.npz)",
                                "--repair marks it to be indexed again", True))
    stray_windows = int(store.db.execute(
        "SELECT COUNT(*) FROM windows w LEFT JOIN files f ON f.id = w.file WHERE f.id IS NULL OR f.status != 'done'"
    ).fetchone()[0])
    if stray_windows:
        problems.append(Problem(f"{stray_windows} windows belong to no indexed file", "--repair deletes them", True))
    stray = [] if live_writer else store.stray_files()
    if stray:
        names = ", ".join(p.name for p in stray[:3]) + (" ..." if len(stray) > 3 else "")
        problems.append(Problem(f"{len(stray)} files belong to no committed file ({names})",
                                "--repair deletes them", True))
    faiss_bad = [] if live_writer else _faiss_problems(store)
    for what in faiss_bad:
        problems.append(Problem(what, "--repair rebuilds the search index from the stored vectors", True))
    missing = store.missing_files()
    if missing:
        problems.append(Problem(f"{len(missing)} indexed files no longer exist (first: {missing[0][1]})",
                                f"`mmv-torch index add {folder} --videos DIR --prune` removes them", False))
    return problems, lost, stray, faiss_bad


def check_index(folder: str | Path, repair: bool = False, wait: bool = True) -> CheckReport:
    """Check that index ``folder``'s rows, vectors and faiss indexes agree; with ``repair``, fix what can
    be fixed without the model (see the module docstring) and check again. Readers are never blocked; a
    check without ``repair`` while another process writes the index compares rows and vectors only."""
    if not is_index(folder):
        raise ValueError(f"{folder}: not an index (no meta.sqlite)")
    store = IndexStore(folder, writer=repair, wait=wait)
    try:
        writer = None if repair else active_writer(folder)
        report = CheckReport(str(folder), store.counts())
        if writer is not None:
            report.notes.append(f"{describe(writer)} is writing the index: the search index and stray files are "
                                "not checked; check again when it finishes")
        problems, lost, stray, faiss_bad = _find(store, writer is not None)
        if repair and any(p.repairable for p in problems):
            for e in lost:
                store.mark_for_reindex(e.file_id, f"{e.reason}: indexed again by the next `index add` of its folder")
                report.repaired.append(f"{e.path}: marked to be indexed again")
            with store._transaction() as db:
                n = db.execute("DELETE FROM windows WHERE file NOT IN (SELECT id FROM files WHERE status = 'done')"
                               ).rowcount
            if n:
                report.repaired.append(f"deleted {n} stray windows")
            for p in stray:
                p.unlink(missing_ok=True)
            if stray:
                report.repaired.append(f"deleted {len(stray)} stray files")
            if faiss_bad or lost or n:
                store.rebuild()
                report.repaired.append("rebuilt the search index from the stored vectors")
            if lost:
                roots = sorted({str(_root(store, e.file_id)) for e in lost})
                report.notes.append("re-index the marked files: " + "; ".join(
                    f"`mmv-torch index add {folder} --videos {r}`" for r in roots))
            problems = _find(store, False)[0]
            report.counts = store.counts()
        report.problems = problems
        return report
    finally:
        store.close()


def _root(store: IndexStore, file_id: int) -> Path:
    rec = store.file_by_id(file_id)
    return store.roots().get(rec.root, Path("DIR")) if rec is not None else Path("DIR")
