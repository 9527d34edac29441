"""DMVR's word tokenizer: the text input the released MMV models were trained with.

DeepMind's data library DMVR (github.com/google-deepmind/dmvr, ``dmvr/tokenizers.py``) feeds MMV's
text tower through ``WordTokenizer.string_tensor_to_indices``:

1. every ASCII punctuation mark is deleted (RE2's ``[[:punct:]]``, the 32 characters of
   ``string.punctuation``: "don't" -> "dont", "man/dog" -> "mandog"; "’" is not ASCII and stays);
2. ASCII upper-case letters are lower-cased (``tf.strings.lower``: "É" stays "É");
3. the text is split on runs of Unicode white space (``tensorflow_text.WhitespaceTokenizer``);
4. each word is looked up; unknown words become ``<unk>`` (nothing is dropped, no stop words);
5. the ids are padded with ``<pad>`` or truncated to ``max_num_tokens``. By default no ``<bos>`` or
   ``<eos>`` is added.

A DMVR vocabulary file has one ``idx word`` or ``word`` line per word (line number = id) and must
hold ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>``. :func:`load_vocabulary_file` reads it, or a plain
word list (line ``i`` = id ``i``), and says which it is. A test checks the ids against TensorFlow.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary

DMVR_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Words every DMVR vocabulary holds: padding, begin and end of sentence, unknown word."""
VOCABULARY_KINDS = ("dmvr", "word-list")
"""What :func:`load_vocabulary_file` finds: a DMVR vocabulary, or a plain word list."""
MAX_VOCABULARY_ID = (1 << 24) - 1
"""Largest id accepted in an ``idx word`` line."""

# Delete ASCII punctuation, lower-case ASCII letters only.
_DMVR_NORMALIZE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
# Unicode's White_Space property (the separators of TF Text's WhitespaceTokenizer).
_WHITESPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def dmvr_split_words(text: str) -> list[str]:
    """``text`` -> DMVR's words: ASCII punctuation deleted, ASCII lower case, split on white space."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}: {text!r}")
    return [w for w in _WHITESPACE.split(text.translate(_DMVR_NORMALIZE)) if w]


def _parse_lines(p: Path, text: str) -> list[tuple[int, str]]:
    """``(id, word)`` per line as DMVR reads them: ``idx word`` or ``word`` (id = line number)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line
    entries = []
    for n, line in enumerate(lines):
        parts = line.strip().split(" ")
        if len(parts) == 2:
            try:
                idx = int(parts[0])
            except ValueError:
                raise ValueError(f"vocabulary {p}, line {n + 1}: {parts[0]!r} is not an integer id") from None
            if not 0 <= idx <= MAX_VOCABULARY_ID:
                raise ValueError(f"vocabulary {p}, line {n + 1}: id {idx} outside [0, {MAX_VOCABULARY_ID}]")
            entries.append((idx, parts[1]))
        elif len(parts) == 1:
            entries.append((n, parts[0]))
        else:
            raise ValueError(f"vocabulary {p}, line {n + 1}: expected 'word' or 'idx word', got {line[:80]!r}")
    return entries


def load_vocabulary_file(path: str | Path) -> tuple[list[str], str]:
    """Read a vocabulary file: ``(words, kind)``, ``words[i]`` the word of id ``i``.

    Lines are ``idx word`` or ``word`` (its line number, from 0, is its id); ids missing from the
    file get the placeholder ``""``. ``kind`` is ``"dmvr"`` when the file holds all of
    :data:`DMVR_SPECIAL_TOKENS` (then DMVR's rules apply: ids and words unique, words lower case;
    use :func:`dmvr_tokenizer`), otherwise ``"word-list"`` (a plain word list as
    :meth:`Vocabulary.from_word_list` reads). Raises ``ValueError`` naming the file on bad input.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read vocabulary {p}: {e}") from e
    entries = _parse_lines(p, text)
    if not entries:
        raise ValueError(f"vocabulary {p} is empty")
    kind = "dmvr" if set(DMVR_SPECIAL_TOKENS) <= {w for _, w in entries} else "word-list"
    words = [""] * (max(i for i, _ in entries) + 1)
    ids: set[int] = set()
    seen: dict[str, int] = {}
    for idx, word in entries:
        if idx in ids:
            raise ValueError(f"vocabulary {p} has two words with id {idx}")
        if word in seen and (word or kind == "dmvr"):  # empty lines: placeholders of a word list
            raise ValueError(f"vocabulary {p} has the word {word!r} twice (ids {seen[word]} and {idx})")
        if kind == "dmvr" and word != word.lower():
            raise ValueError(f"vocabulary {p}: word {word!r} (id {idx}) is not lower case")
        ids.add(idx)
        seen[word] = idx
        words[idx] = word
    return words, kind


def read_dmvr_vocabulary(path: str | Path) -> Vocabulary:
    """A DMVR vocabulary file as a :class:`Vocabulary` (padding id: ``<pad>``'s, unknown: ``<unk>``'s)."""
    words, kind = load_vocabulary_file(path)
    if kind != "dmvr":
        missing = [t for t in DMVR_SPECIAL_TOKENS if t not in words]
        raise ValueError(f"{path} is not a DMVR vocabulary: it lacks {missing}")
    index = {w: i for i, w in enumerate(words)}
    return Vocabulary(words, None, padding_id=index["<pad>"], unk_id=index["<unk>"])


class DmvrTokenizer(Tokenizer):
    """DMVR's ``WordTokenizer``: sentences -> ids ``(B, max_words)`` as its ``string_tensor_to_indices``.

    Words come from :func:`dmvr_split_words`; unknown words map to ``<unk>`` (and count in
    ``num_oov``); ``prepend_bos`` / ``append_eos`` add ``<bos>`` / ``<eos>`` (DMVR's defaults: no);
    rows are padded with ``<pad>`` or truncated to ``max_words``. The mask is True at every word,
    ``<unk>`` included. Build it with :func:`dmvr_tokenizer`.
    """

    def __init__(self, vocab: Vocabulary, max_words: int = 16, prepend_bos: bool = False,
                 append_eos: bool = False) -> None:
        missing = [t for t in DMVR_SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"a DMVR vocabulary needs the words {list(DMVR_SPECIAL_TOKENS)}; missing {missing}")
        if (vocab.padding_id, vocab.unk_id) != (vocab.index["<pad>"], vocab.index["<unk>"]):
            raise ValueError("a DMVR vocabulary pads with '<pad>' and maps unknown words to '<unk>'; build it "
                             "with read_dmvr_vocabulary()")
        super().__init__(vocab, max_words, oov="unk", remove_stop_words=False)
        self.prepend_bos = bool(prepend_bos)
        self.append_eos = bool(append_eos)

    def words(self, text: str) -> list[str]:
        """The words of ``text`` (with ``<bos>`` / ``<eos>`` when asked) before vocabulary lookup."""
        return ["<bos>"] * self.prepend_bos + dmvr_split_words(text) + ["<eos>"] * self.append_eos


def dmvr_tokenizer(path: str | Path, max_words: int = 16) -> DmvrTokenizer:
    """DMVR's ``WordTokenizer`` on a DMVR vocabulary file, as the released MMV models were fed.

    ASCII punctuation deleted, ASCII lower case, split on white space, unknown words -> ``<unk>``,
    no stop-word removal, no ``<bos>``/``<eos>``, padded with ``<pad>``.
    """
    return DmvrTokenizer(read_dmvr_vocabulary(path), max_words)
