"""Captions of labelled entries as text-tower inputs.

Zero-shot retrieval and ``mmv-torch embed --modality text`` embed every caption of a labelled
manifest (``"caption"`` or ``"captions"``, see :mod:`mmv_torch.data.datasets`): one row per caption,
with the row of its entry (:func:`caption_rows`). :class:`CaptionDataset` serves the tokenised
captions in the batch contract of :func:`mmv_torch.eval.features.extract_features`.

Raw text needs the vocabulary the checkpoint's word table was built with
(:func:`mmv_torch.weights.resolve.checkpoint_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.text.tokenizer import Tokenizer


def caption_rows(entries: Sequence[LabelledEntry]) -> tuple[list[str], np.ndarray]:
    """All captions of ``entries`` in order, and for each caption the position of its entry.

    Returns ``(captions [C], caption_entry int64 (C,))``; entries without captions contribute no row.
    """
    captions = [c for e in entries for c in e.captions]
    owner = np.array([i for i, e in enumerate(entries) for _ in e.captions], dtype=np.int64)
    return captions, owner


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
