"""Recover or verify the word of every row of a frozen word table by matching it to a word-vector source
(``mmv-torch vocab match``).

The released MMV checkpoints hold a frozen 65,536 x 300 word2vec table whose word order was not
published. A frozen row is the source's vector of its word, so the word of a row is the source word
whose vector equals it: exactly, or with cosine >= :data:`COSINE_THRESHOLD` when one side went through
another dtype (float16 / float64 sources, a float16 model).

The source is streamed in chunks and the *table* is indexed, so memory stays bounded on the 3M-word
GoogleNews file: every table row is L2-normalised and hashed by the signs of its projections on ``B``
random unit directions (:class:`RowIndex`). Two unit vectors with cosine >= t lie within
``sqrt(2 (1 - t))`` of each other, so a projection farther than that from zero has the same sign for
both; a row whose projection is closer to zero is entered under both signs of that bit. A source vector
is then looked up under its one key, and the few rows found are verified with the exact cosine: no row
within the threshold is ever missed.

Special rows: all-zero rows (padding) are named ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>`` in table order
(:data:`ZERO_ROW_NAMES`), rows named by the caller keep their names; neither takes part in the match
rate. A row matching several source words (repeated vectors in the source) is *ambiguous*: it gets the
first candidate (lower case first, then source order) that no other row took. Unmatched rows get a
placeholder ``<unmatched-ROW>`` (and a repeated table row ``<duplicate-ROW>``), words a vocabulary file
cannot hold (white space; upper case in a DMVR vocabulary) ``<unwritable-ROW>``; all are listed in the
report. :func:`write_vocabulary` writes DMVR's ``idx word`` lines and checks that
:func:`mmv_torch.data.text.dmvr.load_vocabulary_file` reads the same words back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.data.text.dmvr import DMVR_SPECIAL_TOKENS, load_vocabulary_file
from mmv_torch.data.text.wordvec import BUNDLED_GLOVE, iter_word_vectors
from mmv_torch.fileio import atomic_write, atomic_write_text

COSINE_THRESHOLD = 0.9999
"""A table row and a source vector are the same word vector at this cosine or above (or when equal)."""
ZERO_ROW_NAMES = ("<pad>", "<unk>", "<bos>", "<eos>")
"""Names given to the all-zero rows of the table, in row order (further zero rows: ``<zero-ROW>``)."""
MATRIX_SUFFIXES = (".pkl", ".pickle", ".npz", ".npy")
"""Word-vector matrices that need a word list (``words``): pickle (VATT's ``word2vec.pkl``) or numpy."""
MATRIX_KEY = "word_embeddings"
"""The matrix's key in a pickled or ``.npz`` mapping (VATT's ``word2vec.pkl``), when it has several."""
MAX_LISTED_CANDIDATES = 10


class MatchRefused(Exception):
    """The match rate is below the minimum: nothing was written. ``report`` holds what was found."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------
# Sources


def _matrix_from(obj: Any, path: Path) -> np.ndarray:
    if isinstance(obj, Mapping) or hasattr(obj, "files"):
        keys = list(obj.files if hasattr(obj, "files") else obj.keys())
        if MATRIX_KEY in keys:
            obj = obj[MATRIX_KEY]
        else:
            matrices = [k for k in keys if np.ndim(obj[k]) == 2]
            if len(matrices) != 1:
                raise ValueError(f"{path}: expected the key {MATRIX_KEY!r} or one 2-D array, found keys {keys[:10]}")
            obj = obj[matrices[0]]
    matrix = np.asarray(obj)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise ValueError(f"{path}: expected a 2-D float matrix of word vectors, got {matrix.dtype} {matrix.shape}")
    return matrix


def load_matrix(path: str | Path) -> np.ndarray:
    """A word-vector matrix ``[N, D]`` from a pickle (restricted unpickler: arrays and mappings only),
    ``.npz`` or ``.npy`` file; a mapping gives its :data:`MATRIX_KEY` entry or its only 2-D array."""
    from mmv_torch.weights.unpickle import safe_load_pickle

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"word-vector matrix {p}: no such file")
    if p.suffix in (".npz", ".npy"):
        try:
            loaded = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read word-vector matrix {p}: {e}") from e
        return _matrix_from(loaded, p)
    with open(p, "rb") as f:
        return _matrix_from(safe_load_pickle(f, str(p)), p)


def _matrix_chunks(matrix: np.ndarray, words: list[str], chunk_rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
    for start in range(0, len(words), chunk_rows):
        yield words[start: start + chunk_rows], np.asarray(matrix[start: start + chunk_rows])


def open_vector_source(vectors: str | Path | None = None, words: str | Path | None = None, fmt: str = "auto",
                chunk_rows: int = 50_000) -> tuple[str, Iterator[tuple[list[str], np.ndarray]]]:
    """``(description, chunks)`` of a word-vector source, each chunk ``(words, vectors [n, D])``.

    ``vectors``: a word2vec (binary or text) or GloVe file, ``'glove-6b-50d'`` (bundled; the default),
    or a matrix file (:data:`MATRIX_SUFFIXES`) whose row ``i`` is the word of line ``i`` of ``words``
    (a word list or a DMVR vocabulary). Files are streamed; a matrix file is memory-mapped or read whole.
    """
    spec = str(vectors) if vectors is not None else BUNDLED_GLOVE
    is_matrix = spec.endswith(MATRIX_SUFFIXES)
    if words is None:
        if is_matrix:
            raise ValueError(f"the matrix {spec} needs a word list (--words FILE: line i = the word of row i)")
        return f"word vectors {spec}", iter_word_vectors(spec, fmt, chunk_rows)
    if not is_matrix:
        raise ValueError(f"a word list (--words) goes with a matrix file ({', '.join(MATRIX_SUFFIXES)}), "
                         f"not with {spec}")
    matrix = load_matrix(spec)
    word_list, _ = load_vocabulary_file(words)
    if len(word_list) != matrix.shape[0]:
        raise ValueError(f"word list {words} has {len(word_list)} words but the matrix {spec} has "
                         f"{matrix.shape[0]} rows")
    return f"matrix {spec} with words {words}", _matrix_chunks(matrix, word_list, chunk_rows)


# ---------------------------------------------------------------------------------------------
# The index of the table's rows


class RowIndex:
    """Sign-of-projection hash of unit rows that finds every row within cosine ``threshold`` of a query.

    ``bits`` random unit directions (at most 32); a row whose projection on a direction lies within the
    margin ``sqrt(2 (1 - threshold))`` of zero is entered under both signs of that bit. ``bits`` is the
    largest number that keeps the entries under ``max_entries_per_row`` per row on average.
    """

    def __init__(self, unit_rows: np.ndarray, threshold: float, seed: int = 0, max_entries_per_row: int = 64) -> None:
        n, dim = unit_rows.shape
        self.unit_rows = unit_rows
        self.threshold = threshold
        margin = float(np.sqrt(2.0 * (1.0 - threshold))) * 1.001 + 1e-9
        planes = np.random.default_rng(seed).standard_normal((dim, 32))
        planes /= np.linalg.norm(planes, axis=0, keepdims=True)
        proj = unit_rows @ planes
        unsure = np.abs(proj) <= margin
        # entries with the first b bits: sum over rows of 2 ** (unsure bits among them)
        entries = (2.0 ** np.cumsum(unsure, axis=1)).sum(axis=0) if n else np.ones(32)
        fits = np.nonzero(entries <= max(max_entries_per_row * n, 1))[0]
        self.bits = int(fits[-1]) + 1 if len(fits) else 1
        self.planes = planes[:, : self.bits]
        keys = np.zeros(n, np.int64)
        rows = np.arange(n)
        for b in range(self.bits):
            keys |= (proj[rows, b] >= 0).astype(np.int64) << b
            both = unsure[rows, b]
            keys = np.concatenate([keys, keys[both] ^ (1 << b)])
            rows = np.concatenate([rows, rows[both]])
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]

    def query(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(query index, row, cosine)`` of every pair with cosine >= ``threshold`` (float64 cosines)."""
        signs = (unit @ self.planes) >= 0
        keys = (signs.astype(np.int64) << np.arange(self.bits, dtype=np.int64)).sum(axis=1)
        lo = np.searchsorted(self.keys, keys, "left")
        counts = np.searchsorted(self.keys, keys, "right") - lo
        total = int(counts.sum())
        query = np.repeat(np.arange(len(unit)), counts)
        starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        rows = self.rows[starts + np.arange(total)]
        cos = np.einsum("ij,ij->i", unit[query], self.unit_rows[rows])
        keep = cos >= self.threshold
        return query[keep], rows[keep], cos[keep]


def _unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 unit rows of ``x`` and which rows could be normalised (finite, not zero)."""
    x64 = np.array(x, dtype=np.float64)  # a copy, normalised in place
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    ok = np.isfinite(norms) & (norms > 0)
    if ok.all():
        x64 /= norms[:, None]
        return x64, ok
    return x64[ok] / norms[ok, None], ok


# ---------------------------------------------------------------------------------------------
# Matching


@dataclass
class VocabMatch:
    """What :func:`match_vocabulary` found: ``words[i]`` names row ``i``; ``report`` says how."""

    words: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def match_rate(self) -> float:
        """Rows with a matching source word among the rows that need one (all but the special rows)."""
        return float(self.report["match_rate"])


def _as_numpy(table: Any) -> np.ndarray:
    if hasattr(table, "detach"):  # a torch tensor; half precision goes up to float32 exactly
        t = table.detach().cpu()
        table = (t.float() if t.dtype.itemsize < 4 else t).numpy()
    table = np.asarray(table)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
        raise ValueError(f"the word table must be a 2-D float matrix, got {table.dtype} {table.shape}")
    return table


def _collect(table: np.ndarray, active: np.ndarray, source: Iterable[tuple[Sequence[str], np.ndarray]],
             threshold: float, seed: int) -> tuple[dict[int, list[tuple[int, str, float, bool]]], int]:
    """Every ``(source index, word, cosine, exact)`` within the threshold, per table row; source rows read."""
    rows_of = np.nonzero(active)[0]
    unit_rows, _ = _unit(table[rows_of])
    index = RowIndex(unit_rows, threshold, seed)
    found: dict[int, list[tuple[int, str, float, bool]]] = {}
    offset = 0
    for words, vectors in source:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"a source chunk of {len(words)} words has vectors of shape {vectors.shape}")
        if vectors.shape[1] != table.shape[1]:
            raise ValueError(f"the source's vectors are {vectors.shape[1]}-d but the word table's rows are "
                             f"{table.shape[1]}-d")
        unit, ok = _unit(vectors)
        kept = np.nonzero(ok)[0]
        q, r, cos = index.query(unit)
        q, r = kept[q], rows_of[r]
        exact = np.all(vectors[q].astype(np.float64) == table[r].astype(np.float64), axis=1)
        for qi, ri, c, e in zip(q.tolist(), r.tolist(), cos.tolist(), exact.tolist()):
            found.setdefault(ri, []).append((offset + qi, str(words[qi]), c, e))
        offset += len(words)
    return found, offset


def _writable(word: str) -> bool:
    return bool(word) and word.split() == [word]


def _assign(found: dict[int, list[tuple[int, str, float, bool]]], words: list[str | None],
            report: dict[str, Any]) -> None:
    """Name every matched row: unique matches first, then ambiguous rows take a candidate no row took."""
    taken: dict[str, int] = {w: i for i, w in enumerate(words) if w is not None}
    tiers = {}
    for row, cands in found.items():
        exact = [c for c in cands if c[3]]
        tiers[row] = sorted(exact or cands, key=lambda c: (c[1] != c[1].lower(), c[0]))
    for row in sorted(tiers, key=lambda r: (len(tiers[r]) > 1, r)):
        tier = tiers[row]
        free = [c for c in tier if c[1] not in taken and _writable(c[1])]
        if free:
            words[row] = free[0][1]
            taken[free[0][1]] = row
        elif any(c[1] in taken for c in tier):
            word = next(c[1] for c in tier if c[1] in taken)
            words[row] = f"<duplicate-{row}>"
            report["duplicates"].append({"row": row, "word": word, "same_as": taken[word]})
        else:
            words[row] = f"<unwritable-{row}>"
            report["renamed"].append({"row": row, "word": tier[0][1], "why": "not writable in a vocabulary file"})
        if len(tier) > 1:
            report["ambiguous"].append({"row": row, "word": words[row],
                                        "candidates": [c[1] for c in tier[:MAX_LISTED_CANDIDATES]],
                                        "num_candidates": len(tier)})


def match_vocabulary(table: Any, source: Iterable[tuple[Sequence[str], np.ndarray]],
                     threshold: float = COSINE_THRESHOLD, names: Mapping[int, str] | None = None,
                     seed: int = 0) -> VocabMatch:
    """The word of every row of ``table`` (``[V, D]`` tensor or array) found in ``source``.

    ``source`` yields chunks ``(words, vectors [n, D])`` (:func:`open_vector_source`); it is read once.
    ``names`` fixes the names of some rows (e.g. ``{1: "<bos>"}``); all-zero rows are named from
    :data:`ZERO_ROW_NAMES`. A row matches a source vector when they are equal or their cosine is at
    least ``threshold`` (in [0.999, 1]). Returns a :class:`VocabMatch`; its report lists the special,
    unmatched, ambiguous, duplicate and renamed rows, the match rate and the exact / close counts.
    """
    if not 0.999 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0.999, 1], got {threshold}")
    table = _as_numpy(table)
    n = table.shape[0]
    names = dict(names or {})
    bad = [r for r in names if not 0 <= r < n]
    if bad:
        raise ValueError(f"named rows {bad} outside the table's rows [0, {n})")
    words: list[str | None] = [None] * n
    special = []
    for row, name in sorted(names.items()):
        words[row] = name
        special.append({"row": row, "name": name, "why": "named"})
    zero = ~np.any(table != 0, axis=1)
    free_names = iter([w for w in ZERO_ROW_NAMES if w not in names.values()])
    for row in np.nonzero(zero)[0].tolist():
        if words[row] is None:
            words[row] = next(free_names, f"<zero-{row}>")
            special.append({"row": row, "name": words[row], "why": "all zeros"})
    active = np.array([w is None for w in words], dtype=bool) & np.isfinite(table).all(axis=1)
    found, source_rows = _collect(table, active, source, threshold, seed)
    report: dict[str, Any] = {"rows": n, "dim": int(table.shape[1]), "threshold": threshold,
                              "source_rows": source_rows, "special": special, "ambiguous": [],
                              "duplicates": [], "renamed": []}
    _assign(found, words, report)
    unmatched = [r for r in range(n) if words[r] is None]
    for r in unmatched:
        words[r] = f"<unmatched-{r}>"
    final = [w for w in words if w is not None]
    _lower_case_for_dmvr(final, report)
    needing = n - len(special)
    matched = list(found.values())
    report.update({
        "matched": len(found), "unmatched_count": len(unmatched), "ambiguous_count": len(report["ambiguous"]),
        "match_rate": len(found) / needing if needing else 0.0,
        "exact": sum(any(c[3] for c in cands) for cands in matched),
        "min_cosine": min((max(c[2] for c in cands) for cands in matched), default=None),
        "unmatched": unmatched,
    })
    report["close"] = report["matched"] - report["exact"]
    return VocabMatch(final, report)


def _lower_case_for_dmvr(words: list[str], report: dict[str, Any]) -> None:
    """A DMVR vocabulary (one holding the four special tokens) has only lower-case words: rename the others."""
    present = set(words)
    report["kind"] = "dmvr" if set(DMVR_SPECIAL_TOKENS) <= present else "word-list"
    if report["kind"] != "dmvr":
        return
    for row, w in enumerate(words):
        if w != w.lower():
            words[row] = f"<unwritable-{row}>"
            report["renamed"].append({"row": row, "word": w, "why": "upper case in a DMVR vocabulary"})


# ---------------------------------------------------------------------------------------------
# Writing


def write_vocabulary(words: Sequence[str], path: str | Path) -> str:
    """Write ``idx word`` lines (row order) atomically; returns the kind :func:`load_vocabulary_file`
    reads back (``"dmvr"`` or ``"word-list"``). Raises ``ValueError`` (nothing written) when it would not
    read back the same words."""
    p = Path(path)
    text = "".join(f"{i} {w}\n" for i, w in enumerate(words))
    kind: list[str] = []

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        back, k = load_vocabulary_file(tmp)
        if back != list(words):
            raise ValueError(f"{p}: the vocabulary would not read back as written")
        kind.append(k)

    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, write)
    return kind[0]


def run_vocab_match(table: Any, out: str | Path, vectors: str | Path | None = None, words: str | Path | None = None,
                    json_path: str | Path | None = None, min_match: float = 0.9,
                    names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """``mmv-torch vocab match``: match ``table`` to a source (:func:`open_vector_source`), write the vocabulary
    to ``out`` and the report to ``json_path``. Below ``min_match`` raises :class:`MatchRefused` and
    writes nothing. Returns the report."""
    if not 0.0 <= min_match <= 1.0:
        raise ValueError(f"--min-match must lie in [0, 1], got {min_match}")
    description, chunks = open_vector_source(vectors, words)
    result = match_vocabulary(table, chunks, names=names)
    report = {"source": description, "min_match": min_match, **result.report}
    if result.match_rate < min_match:
        raise MatchRefused(
            f"only {result.report['matched']} of {result.report['rows'] - len(result.report['special'])} rows "
            f"({result.match_rate:.1%}) match a vector of {description}, below --min-match {min_match:g}: "
            "wrong source or not a frozen copy of it; nothing written (--min-match 0 writes it anyway)", report)
    report["written"] = str(out)
    write_vocabulary(result.words, out)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    return report
