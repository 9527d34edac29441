"""Captions of labelled entries as text-tower inputs, and a checkpoint folder's word list."""

import pytest
import torch

from mmv_torch.data.captions import CaptionDataset, caption_rows
from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary


def _entries():
    return [LabelledEntry("/a.mp4", "video", "", None, ("a red ball", "the ball is red")),
            LabelledEntry("/b.mp4", "video", "", None, ()),
            LabelledEntry("/c.mp4", "video", "", None, ("blue cube spins",))]


def test_caption_rows_keep_order_and_owner():
    captions, owner = caption_rows(_entries())
    assert captions == ["a red ball", "the ball is red", "blue cube spins"]
    assert owner.tolist() == [0, 0, 2] and owner.dtype.name == "int64"


def test_caption_dataset_items(tmp_path):
    words = tmp_path / "vocab.txt"
    words.write_text("<pad>\nred\nball\nblue\ncube\n")
    tok = Tokenizer(Vocabulary.from_word_list(words), max_words=4)
    ds = CaptionDataset(caption_rows(_entries())[0], tok)
    assert len(ds) == 3
    item = ds[1]
    assert item["text"].tolist() == [2, 1, 0, 0] and item["word_mask"].tolist() == [True, True, False, False]
    assert item["index"].item() == 1 and ds.num_oov.tolist() == [0, 0, 1] and ds.num_words.tolist() == [2, 2, 2]
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    assert batch["text"].shape == (3, 4)
    assert "word_mask" not in CaptionDataset(["red"], tok, word_mask=False)[0]
    with pytest.raises(ValueError, match="no captions"):
        CaptionDataset([], tok)


