"""The nearest-neighbour index of one space: which faiss index, its training, re-ranking and opening.

The choice (:func:`choose_factory`), for ``n`` vectors of width ``d`` and a budget of resident memory:

- **exact** (``IDMap2,Flat``) up to :data:`EXACT_LIMIT` vectors when they fit the budget;
- **IVF-Flat** (``IVF<nlist>,Flat``, about ``4 sqrt(n)`` lists) while the float vectors fit it;
- **IVF-PQ** (``OPQ<m>_<d>,IVF<nlist>[_HNSW32],PQ<m>``: ``m``-byte codes, the largest ``m`` that fits,
  an OPQ rotation when a sub-quantizer covers 8 or more dimensions, an HNSW coarse quantizer from 4096
  lists) otherwise. Its top ``RERANK x k`` candidates are re-ranked by their exact cosine, read from the
  space's float vectors on disk (``<space>.vectors.npy`` with ``<space>.ids.npy``, written at every
  rebuild, read row by row with ``pread``: never loaded into memory).

An explicit faiss factory string (``--nn-index``) replaces the choice. ``nprobe`` is tuned to reach
the target recall@10 on 200 stored vectors used as queries against exact search, and that measured
recall is recorded. The ``.faiss`` file is opened memory-mapped (:func:`open_index`): serving starts
in seconds and only the pages a search touches become resident.

A compressed (trained) index is kept by the next rebuild (``index add``): its vectors are re-encoded
with the trained quantizer, without retraining, until the windows added since the training pass
:data:`RETRAIN_SHARE` of the space; then it is trained again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.extras import require
from mmv_torch.fileio import atomic_write

EXACT_LIMIT = 100_000
"""Up to this many vectors (and within the budget) a space is searched exactly."""
RERANK = 10
"""A compressed index re-ranks its ``RERANK x k`` best candidates by their exact cosine."""
RETRAIN_SHARE = 0.25
"""A compressed index is trained again once the windows added since its training pass this share."""
SERVE_SHARE = 0.75
"""Share of ``--memory-gb`` given to the nearest-neighbour indexes (the rest: model, server, page cache)."""
CHUNK = 200_000
"""Vectors added (and compared in exact search) per step, so a build never holds them all."""


def _faiss() -> Any:
    return require("faiss", "the search index")


def _nlist_flat(n: int) -> int:
    return int(min(65536, max(16, 4 * np.sqrt(n))))


def _nlist_pq(n: int) -> int:
    return int(min(65536, max(16, 2 ** int(np.log2(max(4 * np.sqrt(n), 1))))))


def choose_factory(n: int, d: int, budget_bytes: float | None = None) -> str:
    """The faiss factory string for ``n`` vectors of width ``d`` within ``budget_bytes`` of resident
    memory (``None``: no budget, IVF-Flat above :data:`EXACT_LIMIT`); see the module docstring."""
    flat = n * (4 * d + 8)
    if n <= EXACT_LIMIT and (budget_bytes is None or flat <= budget_bytes):
        return "IDMap2,Flat"
    if budget_bytes is None or flat <= budget_bytes:
        return f"IVF{_nlist_flat(n)},Flat"
    nlist = _nlist_pq(n)
    ms = [m for m in (d // 4, d // 8, d // 16, d // 32) if m >= 4 and d % m == 0] or [max(1, d)]
    m = next((m for m in ms if n * (m + 8) + nlist * 4 * d * 2 <= budget_bytes), ms[-1])
    quantizer = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"
    opq = f"OPQ{m}_{d}," if d // m >= 8 else ""
    return f"{opq}{quantizer},PQ{m}"


def check_factory(factory: str, d: int) -> None:
    """Raise a one-line ``ValueError`` when ``factory`` is not a faiss factory string for width ``d``."""
    faiss = _faiss()
    try:
        faiss.index_factory(max(d, 1), factory, faiss.METRIC_INNER_PRODUCT)
    except (RuntimeError, TypeError) as e:
        first = next((ln for ln in str(e).splitlines() if "Error" in ln or ln.strip()), str(e))
        why = re.sub(r"^.*?(Error:|failed:)\s*", "", " ".join(first.split()))[:160]
        raise ValueError(f"--nn-index {factory!r}: not a faiss index factory string for {d}-d vectors ({why}); "
                         "e.g. 'IVF1024,Flat' or 'OPQ32_256,IVF4096,PQ32'") from None


def lossy(index: Any) -> bool:
    """Whether ``index`` stores compressed codes (its hits are re-ranked from the float vectors)."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index if hasattr(index, "id_map") else index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return not isinstance(inner, (faiss.IndexFlat, faiss.IndexIVFFlat))


# -- float vectors on disk -------------------------------------------------------------------------
def write_vectors(folder: Path, space: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, d: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` rows of width ``d`` given as (vectors, ids) chunks to ``<space>.vectors.npy`` and
    their window ids to ``<space>.ids.npy`` (each atomically, in chunk order). Returns the two arrays
    opened read-only memory-mapped."""
    ids = np.zeros(n, np.int64)

    def fill(tmp: Path) -> None:
        if n == 0:
            np.save(open(tmp, "wb"), np.zeros((0, max(d, 1)), np.float32))
            return
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, max(d, 1)))
        row = 0
        for v, i in chunks:
            out[row:row + len(v)] = v
            ids[row:row + len(v)] = i
            row += len(v)
        if row != n:
            raise ValueError(f"{space}: {row} vectors written, {n} expected")
        out.flush()
        del out

    atomic_write(folder / f"{space}.vectors.npy", fill)
    atomic_write(folder / f"{space}.ids.npy", lambda tmp: np.save(open(tmp, "wb"), ids))
    return read_vectors(folder, space)


def read_vectors(folder: Path, space: str) -> tuple[np.ndarray, np.ndarray]:
    """``<space>.vectors.npy`` and ``<space>.ids.npy``, memory-mapped read-only."""
    vecs = np.load(folder / f"{space}.vectors.npy", mmap_mode="r")
    return vecs, np.load(folder / f"{space}.ids.npy", mmap_mode="r")


class VectorFile:
    """Rows of a float vector file read by window id with ``pread`` (nothing of it stays resident)."""

    def __init__(self, path: Path, ids: np.ndarray) -> None:
        arr = np.load(path, mmap_mode="r")
        self.d, self.offset = int(arr.shape[1]), int(arr.offset)
        del arr
        self.ids = np.asarray(ids, np.int64)
        self.order = None if np.all(self.ids[1:] > self.ids[:-1]) else np.argsort(self.ids, kind="stable")
        self.sorted = self.ids if self.order is None else self.ids[self.order]
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors ``(K, D)``, whether each id was found ``(K,)``) of window ``ids``."""
        pos = np.searchsorted(self.sorted, ids)
        found = (pos < len(self.sorted)) & (self.sorted[np.minimum(pos, len(self.sorted) - 1)] == ids)
        rows = pos if self.order is None else self.order[np.minimum(pos, len(self.sorted) - 1)]
        out = np.zeros((len(ids), self.d), np.float32)
        width = 4 * self.d
        for j in np.flatnonzero(found):
            out[j] = np.frombuffer(os.pread(self.fd, width, self.offset + int(rows[j]) * width), np.float32)
        return out, found


class NNIndex:
    """A space's faiss index with its recorded kind; :meth:`search` re-ranks a compressed index's
    candidates from the float vectors (``vectors``)."""

    def __init__(self, index: Any, kind: dict[str, Any], vectors: VectorFile | None = None) -> None:
        self.index, self.kind, self.vectors = index, kind, vectors
        self.rerank = int(kind.get("rerank", 0)) if vectors is not None else 0
        ivf = _faiss().try_extract_index_ivf(index)
        if ivf is not None and kind.get("nprobe"):
            ivf.nprobe = int(kind["nprobe"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search_params(self, allowed: np.ndarray | None) -> Any:
        """faiss search parameters restricting hits to window ids ``allowed`` (``None``: all)."""
        if allowed is None:
            return None
        faiss = _faiss()
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        ivf = faiss.try_extract_index_ivf(self.index)
        return faiss.SearchParametersIVF(sel=sel, nprobe=ivf.nprobe) if ivf is not None else \
            faiss.SearchParameters(sel=sel)

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores ``(Q, k)``, window ids ``(Q, k)``, -1 past the end) of ``queries``
        ``(Q, D)``; a compressed index fetches ``rerank x k`` candidates and orders them by exact cosine."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.rerank:
            return self.index.search(q, k, params=params)
        fetch = min(self.ntotal, max(k, self.rerank * k))
        _, cand = self.index.search(q, fetch, params=params)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        assert self.vectors is not None
        for r in range(len(q)):
            c = cand[r][cand[r] >= 0]
            vecs, found = self.vectors.rows(c)
            c, s = c[found], vecs[found] @ q[r]
            top = np.argsort(-s, kind="stable")[:k]
            scores[r, :len(top)], ids[r, :len(top)] = s[top], c[top]
        return scores, ids


def _open_flags(kind: dict[str, Any]) -> int:
    """``IO_FLAG_MMAP`` for IVF indexes (their inverted lists mapped from the file), ``IO_FLAG_MMAP_IFC``
    for flat ones (faiss-cpu 1.15 maps each kind with one of the two flags and reads the other into
    memory)."""
    faiss = _faiss()
    ivf = "IVF" in str(kind.get("factory", "")) or kind.get("type") in ("ivf", "ivf_pq")
    return faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC


def open_index(path: Path, kind: dict[str, Any], vectors_path: Path | None = None, mmap: bool = True) -> NNIndex:
    """The index of ``path`` opened memory-mapped (``mmap``) or read into memory, with the float
    vectors ``vectors_path`` (and its ids file beside it) when ``kind`` re-ranks. Raises
    ``RuntimeError``/``OSError`` for an unreadable file."""
    faiss = _faiss()
    if mmap:
        index = faiss.read_index(str(path), _open_flags(kind))
    else:
        index = faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
    vectors = None
    if kind.get("rerank") and vectors_path is not None and vectors_path.is_file():
        ids_path = vectors_path.with_name(vectors_path.name.replace(".vectors.npy", ".ids.npy"))
        vectors = VectorFile(vectors_path, np.load(ids_path, mmap_mode="r"))
    return NNIndex(index, kind, vectors)


# -- building --------------------------------------------------------------------------------------
def _block(vecs: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``vecs`` as float32; a memory map is read with ``read`` (its pages do not
    become resident in this process)."""
    if isinstance(vecs, np.memmap) and vecs.filename and vecs.ndim == 2 and vecs.dtype == np.float32:
        d, n = int(vecs.shape[1]), max(0, min(stop, len(vecs)) - start)
        with open(vecs.filename, "rb") as f:
            f.seek(int(vecs.offset) + start * 4 * d)
            return np.fromfile(f, np.float32, n * d).reshape(n, d)
    return np.ascontiguousarray(vecs[start:stop], dtype=np.float32)


def _gather(vecs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of ``vecs`` as float32 (a memory map is read row by row)."""
    if isinstance(vecs, np.memmap) and vecs.filename and vecs.ndim == 2 and vecs.dtype == np.float32:
        d, out = int(vecs.shape[1]), np.empty((len(rows), vecs.shape[1]), np.float32)
        fd = os.open(vecs.filename, os.O_RDONLY)
        try:
            for j, r in enumerate(rows.tolist()):
                out[j] = np.frombuffer(os.pread(fd, 4 * d, int(vecs.offset) + r * 4 * d), np.float32)
        finally:
            os.close(fd)
        return out
    return np.ascontiguousarray(vecs[rows], dtype=np.float32)


def exact_search(vecs: np.ndarray, queries: np.ndarray, k: int, chunk: int = CHUNK) -> np.ndarray:
    """Row positions ``(Q, k)`` of the ``k`` best inner products of ``queries`` ``(Q, D)`` over
    ``vecs`` ``(N, D)`` (a memory map is read ``chunk`` rows at a time), by brute force."""
    k = min(k, len(vecs))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    for start in range(0, len(vecs), chunk):
        s = q @ _block(vecs, start, start + chunk).T
        top = np.argpartition(-s, min(k, s.shape[1]) - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        best_i = np.concatenate([best_i, top + start], 1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def recall_at(got: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of each row of ``truth[:, :k]`` found in the same row of ``got[:, :k]``."""
    if len(truth) == 0:
        return 1.0
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / max(1, len(b[:k]))
                          for a, b in zip(got, truth)]))


def tie_recall(vecs: np.ndarray, ids: np.ndarray, queries: np.ndarray, got: np.ndarray, truth_rows: np.ndarray,
               k: int = 10, order: np.ndarray | None = None) -> float:
    """Recall@``k`` of the window ids ``got`` ``(Q, k)`` counting ties: a returned window is a hit when its
    exact inner product with the query reaches the ``k``-th best exact one (``truth_rows``: the exact
    search's row positions), so equal vectors in another order (windows committed in another order) are
    not misses; an exact index scores 1. ``order``: ``np.argsort(ids)``, when the caller has it."""
    if len(truth_rows) == 0 or truth_rows.shape[1] == 0:
        return 1.0
    kk = truth_rows.shape[1]
    q = np.ascontiguousarray(queries, dtype=np.float32)
    kth = np.einsum("qd,qd->q", q, _gather(vecs, truth_rows[:, kk - 1]))
    order = np.argsort(ids, kind="stable") if order is None else order
    sorted_ids = np.asarray(ids)[order]
    flat = np.asarray(got[:, :kk]).reshape(-1)
    at = np.clip(np.searchsorted(sorted_ids, flat), 0, max(len(sorted_ids) - 1, 0))
    known = (flat >= 0) & (sorted_ids[at] == flat)
    rows = order[at]
    scores = np.full(flat.shape, -np.inf, np.float32)
    if known.any():
        scores[known] = np.einsum("qd,qd->q", np.repeat(q, kk, axis=0)[known], _gather(vecs, rows[known]))
    hits = (scores.reshape(len(q), kk) >= kth[:, None] - 1e-5).sum(1)
    return float(np.mean(np.minimum(hits, kk) / kk))


def new_index(factory: str, d: int) -> Any:
    """An empty inner-product index of ``factory`` that takes window ids (flat kinds in an ``IDMap2``)."""
    faiss = _faiss()
    check_factory(factory, d)
    index = faiss.index_factory(max(d, 1), factory, faiss.METRIC_INNER_PRODUCT)
    if faiss.try_extract_index_ivf(index) is None and not hasattr(faiss.downcast_index(index), "id_map"):
        index = faiss.IndexIDMap2(index)
    return index


def train(index: Any, vecs: np.ndarray, seed: int = 0) -> None:
    """Train ``index`` on a sample of ``vecs`` (about 30 vectors per list, at least 10,000)."""
    if index.is_trained or len(vecs) == 0:
        return
    ivf = _faiss().try_extract_index_ivf(index)
    size = min(len(vecs), max(10_000, 30 * (ivf.nlist if ivf is not None else 256)))
    rows = np.sort(np.random.default_rng(seed).choice(len(vecs), size=size, replace=False))
    index.train(_gather(vecs, rows))


def fill(index: Any, vecs: np.ndarray, ids: np.ndarray, chunk: int = CHUNK) -> None:
    """Add ``vecs`` with window ``ids`` to the trained ``index``, ``chunk`` rows at a time."""
    for start in range(0, len(vecs), chunk):
        index.add_with_ids(_block(vecs, start, start + chunk), np.ascontiguousarray(ids[start:start + chunk],
                                                                                    dtype=np.int64))


def tune(nn: NNIndex, vecs: np.ndarray, ids: np.ndarray, queries: np.ndarray | None = None,
         target_recall: float = 0.95, k: int = 10) -> tuple[int, float]:
    """The smallest power-of-two ``nprobe`` of ``nn`` whose recall@``k`` against exact search on
    ``queries`` (default: 200 stored vectors) reaches ``target_recall``; set on ``nn``. Returns
    ``(nprobe, recall)`` (``nprobe`` 0 for a non-IVF index)."""
    if queries is None:
        rows = np.random.default_rng(1).choice(len(vecs), size=min(len(vecs), 200), replace=False)
        queries = _gather(vecs, np.sort(rows))
    truth = exact_search(vecs, queries, k)
    order = np.argsort(ids, kind="stable")  # once for every nprobe tried
    ivf = _faiss().try_extract_index_ivf(nn.index)
    if ivf is None:
        return 0, tie_recall(vecs, ids, queries, nn.search(queries, k)[1], truth, k, order)
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = nprobe
        recall = tie_recall(vecs, ids, queries, nn.search(queries, k)[1], truth, k, order)
        if recall >= target_recall or nprobe >= ivf.nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, ivf.nlist)


def kind_of(index: Any, factory: str) -> str:
    """``exact``, ``ivf`` (IVF-Flat), ``ivf_pq`` (compressed IVF) or ``compressed`` (other lossy kinds)."""
    ivf = _faiss().try_extract_index_ivf(index)
    if not lossy(index):
        return "exact" if ivf is None and "HNSW" not in factory else "ivf" if ivf is not None else "graph"
    return "ivf_pq" if ivf is not None else "compressed"


def build(vecs: np.ndarray, ids: np.ndarray, factory: str, *, vectors: VectorFile | None = None,
          trained: Any = None, queries: np.ndarray | None = None, target_recall: float = 0.95, seed: int = 0
          ) -> tuple[NNIndex, dict[str, Any]]:
    """The index of ``factory`` over ``vecs`` ``(N, D)`` (rows L2-normalised; a memory map is read in
    chunks) with window ``ids``: trained on a sample, or ``trained`` (an index of the same factory
    whose training is kept: emptied and filled again), ``nprobe`` tuned (:func:`tune`), compressed kinds
    re-ranked from ``vectors``. Returns the index and its kind (recorded in the index info)."""
    n, d = vecs.shape
    if trained is not None:
        index = trained
        index.reset()
    else:
        index = new_index(factory, d)
        train(index, vecs, seed)
    fill(index, vecs, ids)
    rerank = RERANK if lossy(index) and vectors is not None else 0
    kind: dict[str, Any] = {"type": kind_of(index, factory), "factory": factory, "vectors": int(n), "rerank": rerank}
    nn = NNIndex(index, kind, vectors)
    if n:
        nprobe, recall = tune(nn, vecs, ids, queries, target_recall)
        ivf = _faiss().try_extract_index_ivf(index)
        if ivf is not None:
            kind.update(nlist=int(ivf.nlist), nprobe=int(nprobe))
        kind.update(recall_at_10=round(recall, 4),
                    recall_measured=f"{'given' if queries is not None else 'stored'} vectors as queries "
                                    f"({min(n, 200) if queries is None else len(queries)}), against exact search"
                                    + (f", top {rerank}x10 re-ranked" if rerank else ""))
    return nn, kind


def build_faiss(vecs: np.ndarray, ids: np.ndarray, *, exact_limit: int = EXACT_LIMIT, target_recall: float = 0.95,
                seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The in-memory index of the default choice without a budget: exact (``IndexFlatIP`` in an
    ``IDMap2``) up to ``exact_limit`` vectors, else IVF-Flat with ``nprobe`` tuned (:func:`build`).
    Returns ``(faiss index, kind)``."""
    n, d = vecs.shape
    factory = "IDMap2,Flat" if n <= exact_limit else f"IVF{_nlist_flat(n)},Flat"
    nn, kind = build(vecs, ids, factory, target_recall=target_recall, seed=seed)
    return nn.index, kind


def _keep_training(previous: dict[str, Any], ids: np.ndarray, changed: bool) -> bool:
    """Whether a rebuild keeps the trained quantizer of ``previous`` (a compressed kind): no other
    factory or budget asked for, and the windows added since its training at most :data:`RETRAIN_SHARE`."""
    if changed or not previous.get("rerank") or "trained_max_id" not in previous or len(ids) == 0:
        return False
    return float(np.mean(np.asarray(ids) > int(previous["trained_max_id"]))) <= RETRAIN_SHARE


def rebuild_space(folder: Path, space: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, d: int,
                  factory: str | None, budget_bytes: float | None, previous: dict[str, Any], changed: bool = False,
                  seed: int = 0) -> tuple[NNIndex, dict[str, Any]]:
    """Write ``space``'s float vectors (:func:`write_vectors`) and build its index: ``factory``, or the
    choice for ``budget_bytes`` (:func:`choose_factory`); a compressed ``previous`` kind keeps its
    training while :func:`_keep_training` allows (``changed``: another factory or budget was asked for).
    The ``.faiss`` file is written by the caller. Returns the index and its kind."""
    faiss = _faiss()
    vecs, ids = write_vectors(folder, space, chunks, n, d)
    trained = None
    if _keep_training(previous, ids, changed) and (folder / f"{space}.faiss").is_file():
        factory = str(previous["factory"])
        trained = faiss.read_index(str(folder / f"{space}.faiss"))
    factory = factory or choose_factory(n, d, budget_bytes)
    vf = VectorFile(folder / f"{space}.vectors.npy", ids) if n else None
    nn, kind = build(vecs, ids, factory, vectors=vf, trained=trained, seed=seed)
    if trained is not None:
        kind.update(trained_max_id=previous["trained_max_id"], trained_vectors=previous.get("trained_vectors", 0))
    elif n:
        kind.update(trained_max_id=int(np.max(ids)), trained_vectors=int(n))
    return nn, kind
