"""Text inputs: tokenizer and vocabulary.

The text tower takes word ids ``(B, N)`` (N = 16 words) into a frozen ``[V, D]`` word-vector table.
This module turns raw sentences into those ids and builds the table:

- :class:`Tokenizer`: lower case, punctuation stripped, English stop words removed (the list is
  :data:`STOP_WORDS`), unknown words dropped (default) or mapped to ``<unk>``, truncated / padded to
  ``max_words``; returns ids ``int64``, a word mask and the count of out-of-vocabulary words.
- :class:`Vocabulary`: word -> id with padding id 0 (and an optional ``<unk>`` id), plus the vectors
  ``float32 [V, D]`` whose padding row is zeros.

The word-vector files a :class:`Vocabulary` with vectors is read from (word2vec, GloVe, the bundled
GloVe 6B 50-d) are handled by :mod:`mmv_torch.data.text.wordvec`.

The official MMV release ships no vocabulary: its checkpoints hold a ``[65536, 300]`` table whose
word order is unknown. Raw text therefore needs a user-supplied word list
(:meth:`Vocabulary.from_word_list`); without one, :class:`MissingVocabularyError` says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PAD_TOKEN = "<pad>"
"""Word at the padding id (0) of vocabularies built from word-vector files."""
UNK_TOKEN = "<unk>"
"""Word at the unknown-word id (1) when a vocabulary is built with ``add_unk=True``."""

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
