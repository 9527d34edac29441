"""DMVR's input contract: the audio spectrogram and the word tokenizer against TensorFlow's outputs.

The references in ``tests/assets/dmvr`` were computed with TensorFlow by ``make_reference.py`` there
(TensorFlow is not a dependency of this package).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mmv_torch.config import Config, DataConfig, apply_overrides
from mmv_torch.data.datasets import audio_features
from mmv_torch.data.media.audio import LogMelSpectrogram, linear_to_mel_weight_matrix, log_mel_spectrogram
from mmv_torch.data.text.dmvr import (
    DmvrTokenizer,
    dmvr_split_words,
    dmvr_tokenizer,
    load_vocabulary_file,
    read_dmvr_vocabulary,
)
from mmv_torch.data.text.tokenizer import Vocabulary
from tests.helpers import ASSETS

REF = ASSETS / "dmvr"


@pytest.fixture(scope="module")
def audio_ref():
    with np.load(REF / "audio_reference.npz") as z:
        return {k: z[k] for k in z.files}


def _names(ref):
    return sorted(k[len("wave_"):] for k in ref if k.startswith("wave_"))


def test_reference_file_is_small_and_complete(audio_ref):
    assert (REF / "audio_reference.npz").stat().st_size < 2_000_000
    assert set(_names(audio_ref)) == {"mix_3p2s", "mix_100001", "burst_1023", "quiet_24000", "silence_48000"}
    assert all(v.dtype == np.float32 for v in audio_ref.values())


def test_mel_matrix_equals_tensorflow(audio_ref):
    ours = linear_to_mel_weight_matrix().numpy()
    tf = audio_ref["mel_matrix"]
    assert ours.shape == tf.shape == (1025, 80)
    assert np.all(ours[0] == 0) and np.all(tf[0] == 0)  # the DC bin has no weight
    np.testing.assert_allclose(ours, tf, atol=1e-5, rtol=0)  # float32 rounding of TF's log


def test_dmvr_spectrogram_equals_tensorflow(audio_ref):
    mod = LogMelSpectrogram(48000, frontend="dmvr")
    for name in _names(audio_ref):
        wave = torch.from_numpy(audio_ref[f"wave_{name}"])
        tf_mel, tf_log = audio_ref[f"mel_{name}"], audio_ref[f"logmel_{name}"]
        n_frames = -(-wave.numel() // 1024)
        assert tf_log.shape == (n_frames, 80), name
        mel = mod.mel_power(wave)[0].numpy()
        log = log_mel_spectrogram(wave, 48000, frontend="dmvr")
        assert log.shape == (1, 1, n_frames, 80), name
        log = log[0, 0].numpy()
        peak = float(tf_mel.max())
        assert np.abs(mel - tf_mel).max() <= 1e-4 * peak, name
        loud = tf_mel >= 1e-3
        if loud.any():
            assert np.abs(log - tf_log)[loud].max() <= 5e-3, name
        np.testing.assert_allclose(log, np.log(mel + 1e-6), rtol=0, atol=1e-6)
    assert audio_ref["logmel_mix_3p2s"].shape == (150, 80)  # 3.2 s at 48 kHz


def test_dmvr_spectrogram_batched_and_float64(audio_ref):
    wave = torch.from_numpy(audio_ref["wave_mix_3p2s"])
    one = log_mel_spectrogram(wave, 48000, frontend="dmvr")
    two = log_mel_spectrogram(torch.stack([wave, wave.flip(0)]), 48000, frontend="dmvr")
    torch.testing.assert_close(two[:1], one, rtol=0, atol=1e-5)
    f64 = log_mel_spectrogram(wave.double(), 48000, frontend="dmvr")
    assert f64.dtype == torch.float64
    tf_mel = audio_ref["mel_mix_3p2s"]
    loud = tf_mel >= 1e-3
    assert np.abs(f64[0, 0].numpy() - audio_ref["logmel_mix_3p2s"])[loud].max() <= 5e-3


def test_sample_rate_is_required_for_every_frontend(audio_ref):
    """issue 25: ``log_mel_spectrogram(wave, frontend="dmvr")`` used to build DMVR's framing on a 16 kHz mel
    matrix without a word. No front-end has a default rate now; the 48 kHz reference arrays show the trap
    (a 16 kHz matrix is off by several log units) and the fix (the right rate matches TensorFlow)."""
    wave = torch.from_numpy(audio_ref["wave_mix_3p2s"])
    for frontend in ("dmvr", "default"):
        with pytest.raises(TypeError, match="sample_rate"):
            log_mel_spectrogram(wave, frontend=frontend)
        with pytest.raises(TypeError, match="sample_rate"):
            LogMelSpectrogram(frontend=frontend)
    tf_log, loud = audio_ref["logmel_mix_3p2s"], audio_ref["mel_mix_3p2s"] >= 1e-3
    wrong = log_mel_spectrogram(wave, 16000, frontend="dmvr")[0, 0].numpy()
    assert np.abs(wrong - tf_log)[loud].max() > 1.0  # what the old default silently returned
    right = log_mel_spectrogram(wave, sample_rate=48000, frontend="dmvr")[0, 0].numpy()
    assert np.abs(right - tf_log)[loud].max() <= 5e-3


def test_dmvr_frontend_options():
    with pytest.raises(ValueError, match="frontend"):
        LogMelSpectrogram(48000, frontend="tf")
    with pytest.raises(ValueError, match=r"\['hop_s', 'power'\]"):
        LogMelSpectrogram(48000, hop_s=0.02, power=1.0, frontend="dmvr")
    with pytest.raises(ValueError, match="no samples"):
        log_mel_spectrogram(torch.zeros(0), 48000, frontend="dmvr")
    with pytest.raises(ValueError, match="upper_edge_hertz"):
        LogMelSpectrogram(8000, frontend="dmvr")  # 7600 Hz is above the Nyquist frequency
    assert log_mel_spectrogram(torch.zeros(1), 48000, frontend="dmvr").shape == (1, 1, 1, 80)
    assert log_mel_spectrogram(torch.zeros(1025), 48000, 40, frontend="dmvr").shape == (1, 1, 2, 40)


def test_config_selects_the_frontend(audio_ref):
    with pytest.raises(ValueError, match="audio_frontend"):
        DataConfig(audio_frontend="tf")
    with pytest.raises(ValueError, match="sample_rate 48000"):
        DataConfig(audio_frontend="dmvr")
    wave = torch.from_numpy(audio_ref["wave_mix_3p2s"])
    feats = audio_features(wave, DataConfig(audio_frontend="dmvr", sample_rate=48000))
    assert feats.shape == (1, 150, 80)
    torch.testing.assert_close(feats, log_mel_spectrogram(wave, 48000, frontend="dmvr")[0])
    cfg = apply_overrides(Config(), ["data.audio_frontend=dmvr", "data.sample_rate=48000"])
    assert (cfg.data.audio_frontend, cfg.data.sample_rate) == ("dmvr", 48000)
    default = audio_features(wave[:16000], DataConfig())
    torch.testing.assert_close(default, log_mel_spectrogram(wave[:16000], 16000, 80)[0])


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.fixture(scope="module")
def tok_ref():
    return json.loads((REF / "tokenizer_reference.json").read_text(encoding="utf-8"))


def test_tokenizer_ids_equal_tensorflow(tok_ref):
    tok = dmvr_tokenizer(REF / tok_ref["vocabulary"], max_words=tok_ref["max_num_tokens"])
    assert isinstance(tok, DmvrTokenizer)
    texts = [c["text"] for c in tok_ref["cases"]]
    out = tok(texts)
    assert out.ids.shape == (len(texts), 16)
    for text, case, row in zip(texts, tok_ref["cases"], out.ids.tolist()):
        assert row == case["ids"], text
    pad = tok.vocab.index["<pad>"]
    assert torch.equal(out.mask, out.ids != pad)


def test_tokenizer_unicode_space_differs_from_tf_text_only_where_tf_text_mis_splits(tok_ref):
    """TF Text keeps the leading bytes of a multi-byte white-space character on the word before it,
    which then maps to <unk>; this tokenizer looks that word up. Everything else is identical."""
    tok = dmvr_tokenizer(REF / tok_ref["vocabulary"])
    unk = tok.vocab.unk_id
    for case in tok_ref["unicode_space_cases"]:
        expected = tok(case["text"]).ids[0].tolist()
        words = re.finditer(r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+", case["text"])
        for i, m in enumerate(words):
            if i < 16 and m.end() < len(case["text"]) and ord(case["text"][m.end()]) > 127:
                assert expected[i] != unk
                expected[i] = unk
        assert expected == case["ids"], case["text"]


def test_tokenizer_rules():
    assert dmvr_split_words("Don't stop, man/dog!") == ["dont", "stop", "mandog"]
    assert dmvr_split_words("ÉCOLE d’été\u00a0A\u3000B\x1cC") == ["École", "d’été", "a", "b\x1cc"]
    assert dmvr_split_words(" \t\n ") == []
    with pytest.raises(ValueError, match="string"):
        dmvr_split_words(None)  # type: ignore[arg-type]


def test_tokenizer_unknown_words_bos_eos(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<pad>\n<bos>\n<eos>\n<unk>\nthe\ndog\nand\n", encoding="utf-8")
    vocab = read_dmvr_vocabulary(path)
    tok = DmvrTokenizer(vocab, max_words=4, prepend_bos=True, append_eos=True)
    out = tok(["The cat and the dog", "dog"])
    assert out.ids.tolist() == [[1, 4, 3, 6], [1, 5, 2, 0]]  # no stop words dropped; cat -> <unk>
    assert out.num_oov.tolist() == [1, 0]
    plain = dmvr_tokenizer(path, max_words=3)
    assert plain("a the").ids.tolist() == [[3, 4, 0]]


def test_load_vocabulary_file_kinds(tmp_path):
    dmvr = tmp_path / "dmvr.txt"
    dmvr.write_text("3 <unk>\n0 <pad>\n1 <bos>\n2 <eos>\n7 dog\n", encoding="utf-8")
    words, kind = load_vocabulary_file(dmvr)
    assert kind == "dmvr" and words == ["<pad>", "<bos>", "<eos>", "<unk>", "", "", "", "dog"]
    plain = tmp_path / "words.txt"
    plain.write_text("\nthe\ndog\n\n", encoding="utf-8")
    words, kind = load_vocabulary_file(plain)
    assert kind == "word-list" and words == ["", "the", "dog", ""]
    assert Vocabulary.from_word_list(plain).words == words
    with pytest.raises(ValueError, match="not a DMVR vocabulary"):
        dmvr_tokenizer(plain)


@pytest.mark.parametrize("text,match", [
    ("<pad>\n<bos>\n<eos>\n<unk>\nDog\n", "not lower case"),
    ("<pad>\n<bos>\n<eos>\n<unk>\ndog\ndog\n", "twice"),
    ("0 <pad>\n0 <bos>\n2 <eos>\n3 <unk>\n", "two words with id 0"),
    ("x <pad>\n", "not an integer"),
    ("-1 <pad>\n", "outside"),
    ("a b c\n", "expected 'word' or 'idx word'"),
    ("", "empty"),
])
def test_load_vocabulary_file_errors(tmp_path, text, match):
    path = tmp_path / "v.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as err:
        load_vocabulary_file(path)
    assert str(path) in str(err.value)


def test_load_vocabulary_file_unreadable(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_vocabulary_file(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="cannot read"):
        load_vocabulary_file(bad)
