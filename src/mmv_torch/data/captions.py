"""Captions of labelled entries as text-tower inputs, and the word list of a checkpoint folder.

Zero-shot retrieval and ``mmv-torch embed --modality text`` embed every caption of a labelled
manifest (``"caption"`` or ``"captions"``, see :mod:`mmv_torch.data.datasets`): one row per caption,
with the row of its entry (:func:`caption_rows`). :class:`CaptionDataset` serves the tokenised
captions in the batch contract of :func:`mmv_torch.eval.features.extract_features`.

Raw text needs the vocabulary the checkpoint's word table was built with. A training run's export
folder has it as ``vocab.txt`` (line i = id i); a converted official checkpoint has none (the release
ships no word list), so :func:`checkpoint_vocabulary` raises :class:`MissingVocabularyError`, which
explains how to supply the 65,536-word list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.text.tokenizer import MissingVocabularyError, Tokenizer, Vocabulary

VOCAB_FILE = "vocab.txt"
"""Word list of a checkpoint folder (written by the training run's export)."""


def caption_rows(entries: Sequence[LabelledEntry]) -> tuple[list[str], np.ndarray]:
    """All captions of ``entries`` in order, and for each caption the position of its entry.

    Returns ``(captions [C], caption_entry int64 (C,))``; entries without captions contribute no row.
    """
    captions = [c for e in entries for c in e.captions]
    owner = np.array([i for i, e in enumerate(entries) for _ in e.captions], dtype=np.int64)
    return captions, owner


def checkpoint_vocabulary(checkpoint: str | Path, vocab: str | Path | None = None, vocab_size: int | None = None,
                          option: str = "") -> tuple[Vocabulary, Path]:
    """The vocabulary for raw text with ``checkpoint``: the word list ``vocab`` if given, else
    ``<checkpoint>/vocab.txt``. Returns ``(vocabulary, path read)``.

    ``vocab_size`` (the rows of the checkpoint's word table) is checked against the number of words,
    so ids cannot point at the wrong rows. Without any word list :class:`MissingVocabularyError` is
    raised; ``option`` (e.g. ``"--vocab FILE"``) names how the caller passes one.
    """
    path = Path(vocab) if vocab is not None else Path(checkpoint) / VOCAB_FILE
    if vocab is None and not path.is_file():
        how = f" (pass a word list with {option})" if option else ""
        raise MissingVocabularyError(f"checkpoint folder {checkpoint} has no {VOCAB_FILE}{how}")
    words = Vocabulary.from_word_list(path)
    if vocab_size is not None and len(words) != vocab_size:
        raise ValueError(f"word list {path} has {len(words)} words but the checkpoint's word table has {vocab_size} "
                         f"rows; the list must give one word per row, in row order")
    return words, path


class CaptionDataset(Dataset):
    """Tokenised captions; item ``i`` is ``{"text": int64 (N,), "word_mask": bool (N,), "index": int64 ()}``.

    ``N`` is the tokenizer's ``max_words``. With ``word_mask=False`` items have no ``"word_mask"``
    (the text tower then takes the max over all N positions, padding included, as the official model
    does). ``num_oov`` ``(C,)`` counts each caption's words the vocabulary does not know,
    ``num_words`` ``(C,)`` the words kept and ``num_known`` ``(C,)`` the kept words that are not the
    unknown-word token: a caption with ``num_known == 0`` (empty, or no known word) embeds to the same
    vector as every other such caption.
    """

    def __init__(self, captions: Sequence[str], tokenizer: Tokenizer, word_mask: bool = True) -> None:
        if len(captions) == 0:
            raise ValueError("CaptionDataset: no captions")
        tok = tokenizer(list(captions))
        self.captions = list(captions)
        self.ids = tok.ids
        self.mask = tok.mask
        self.num_oov = tok.num_oov
        self.num_words = tok.mask.sum(dim=1)
        known = tok.mask.clone()
        if tokenizer.vocab.unk_id is not None:
            known &= tok.ids != tokenizer.vocab.unk_id
        self.num_known = known.sum(dim=1)
        self.word_mask = word_mask

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"text": self.ids[index], "index": torch.tensor(int(index), dtype=torch.int64)}
        if self.word_mask:
            item["word_mask"] = self.mask[index]
        return item
