"""Reference outputs of DMVR's audio spectrogram and word tokenizer, computed with TensorFlow.

Not part of the package or its tests' dependencies: run it in a separate environment that has
TensorFlow and TensorFlow Text (``python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install
tensorflow-cpu tensorflow-text numpy``) from the repository root::

    /tmp/tfenv/bin/python tests/assets/dmvr/make_reference.py

It rewrites ``audio_reference.npz`` and ``tokenizer_reference.json`` next to this file. The TF code
below follows DMVR (github.com/google-deepmind/dmvr) step by step: ``compute_audio_spectrogram`` of
``dmvr/processors.py`` with its defaults, and ``WordTokenizer.string_tensor_to_indices`` of
``dmvr/tokenizers.py`` with its defaults (no ``<bos>``, no ``<eos>``), ``max_num_tokens=16``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_text

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 48000


def dmvr_log_mel(waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DMVR's ``compute_audio_spectrogram`` defaults ('logmf', magnitude): (log-mel, mel) ``(T, 80)``."""
    stfts = tf.signal.stft(tf.constant(waveform, tf.float32), frame_length=2048, frame_step=1024, fft_length=2048,
                           window_fn=tf.signal.hann_window, pad_end=True)
    spectrograms = tf.abs(stfts)
    matrix = tf.signal.linear_to_mel_weight_matrix(80, stfts.shape[-1], SAMPLE_RATE, 80.0, 7600.0)
    mel = tf.tensordot(spectrograms, matrix, 1)
    return tf.math.log(mel + 1e-6).numpy(), mel.numpy()


def audio_signals() -> dict[str, np.ndarray]:
    """Recorded-style test signals at 48 kHz, float32 in [-1, 1]."""
    rng = np.random.default_rng(0)

    def mixture(n: int, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        t = np.arange(n) / SAMPLE_RATE
        tones = sum(a * np.sin(2 * np.pi * f * t + r.uniform(0, 2 * np.pi))
                    for a, f in ((0.2, 220.0), (0.15, 1000.0), (0.1, 3150.0), (0.05, 6800.0)))
        f0, f1 = 100.0, 9000.0  # exponential chirp over the clip
        dur = max(t[-1], 1e-3)
        chirp = 0.2 * np.sin(2 * np.pi * f0 * dur / np.log(f1 / f0) * ((f1 / f0) ** (t / dur) - 1))
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)  # amplitude modulation, like speech or music
        noise = 0.05 * r.standard_normal(n)
        return np.clip((tones + chirp) * envelope + noise, -1.0, 1.0)

    return {
        "mix_3p2s": mixture(153600, 1),  # 3.2 s: the TF-Hub models' input, 150 frames
        "mix_100001": mixture(100001, 2),  # odd length: the last frame is mostly padding
        "burst_1023": 0.5 * rng.standard_normal(1023).clip(-2, 2) * np.hanning(1023),  # shorter than a frame
        "quiet_24000": 1e-3 * mixture(24000, 3),  # low level: mel energies around the log offset
        "silence_48000": np.zeros(48000),
    }


def make_audio() -> None:
    """Write ``audio_reference.npz``: per signal ``wave_*``, ``logmel_*`` and ``mel_*``; and TF's mel matrix."""
    arrays: dict[str, np.ndarray] = {}
    for name, wave in audio_signals().items():
        wave = wave.astype(np.float32)
        logmel, mel = dmvr_log_mel(wave)
        arrays[f"wave_{name}"] = wave
        arrays[f"logmel_{name}"] = logmel.astype(np.float32)
        arrays[f"mel_{name}"] = mel.astype(np.float32)
    arrays["mel_matrix"] = tf.signal.linear_to_mel_weight_matrix(80, 1025, SAMPLE_RATE, 80.0, 7600.0).numpy()
    np.savez_compressed(HERE / "audio_reference.npz", **arrays)


VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "man", "is", "playing", "the", "guitar", "dont", "stop",
         "mandog", "dog", "and", "cat", "on", "mat", "its", "cooking", "pasta", "in", "kitchen", "1", "2",
         "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "école", "hello", "world",
         "don’t", "cafe", "xy"]

SENTENCES = [
    "A man is playing the guitar.",
    "Don't stop!",
    "man/dog and cat-on the mat...",
    "It's   cooking\tpasta\nin the\r\nkitchen",
    "  leading and trailing spaces  ",
    "HELLO WORLD",
    "Hello, World! 1, 2; (three) [four] {five} <six> \"seven\" eight? nine: ten_eleven",
    "don’t stop ‘hello’ “world”",
    "École ÉCOLE école",
    "unknownword another_unknown hello qwertyuiop",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen",
    "",
    "   ",
    "!!! ... ???",
    "x'y x-y x.y x@y x#y x$y x%y x&y x*y x+y x=y x|y x~y x^y x`y x\\y",
    "café cafe",
    "a\x0bman\x0cis playing",
    "a\x1cman is \x1fplaying",  # ASCII separators that are not white space
    " \u00a0hello \u3000 world",  # non-ASCII white space after a space
]

# A word directly followed by non-ASCII white space: TF Text (2.21) keeps the separator's leading
# UTF-8 bytes on that word, which then maps to <unk>; mmv_torch looks the word up (see the test).
UNICODE_SPACE_SENTENCES = ["hello\u00a0world", "the guitar\u2003", "a man\u3000is\u2003playing\u2009the guitar"]


# Ids as a DMVR file may have them: a gap after id 19, lines not in id order.
WORD2IDX = {w: i if i < 20 else i + 5 for i, w in enumerate(VOCAB)}


def dmvr_word_ids(word2idx: dict[str, int], sentences: list[str], max_num_tokens: int = 16) -> list[list[int]]:
    """DMVR's ``WordTokenizer.initialize`` + ``string_tensor_to_indices`` (defaults), in TF ops."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(word2idx), tf.string),
                                            tf.constant(list(word2idx.values()), tf.int32)),
        word2idx["<unk>"])
    strings = tf.strings.regex_replace(tf.constant(sentences), "[[:punct:]]", "")
    strings = tf.strings.lower(strings)
    tokens = tensorflow_text.WhitespaceTokenizer().tokenize(strings)
    ids = table.lookup(tokens).to_tensor(default_value=word2idx["<pad>"], shape=[None, max_num_tokens])
    return ids.numpy().tolist()


def make_tokenizer() -> None:
    """Write ``word_vocab.txt`` (DMVR's ``idx word`` layout) and ``tokenizer_reference.json``."""
    lines = [f"{i} {w}\n" for w, i in WORD2IDX.items()]
    (HERE / "word_vocab.txt").write_text("".join(lines[7:] + lines[:7]), encoding="utf-8")
    head = {"vocabulary": "word_vocab.txt", "max_num_tokens": 16, "tensorflow": tf.__version__,
            "tensorflow_text": tensorflow_text.__version__}
    cases = [json.dumps({"text": t, "ids": i}, ensure_ascii=True)
             for t, i in zip(SENTENCES, dmvr_word_ids(WORD2IDX, SENTENCES))]
    odd = [json.dumps({"text": t, "ids": i}, ensure_ascii=True)
           for t, i in zip(UNICODE_SPACE_SENTENCES, dmvr_word_ids(WORD2IDX, UNICODE_SPACE_SENTENCES))]
    text = (json.dumps(head, ensure_ascii=True)[:-1] + ', "cases": [\n ' + ",\n ".join(cases)
            + '\n], "unicode_space_cases": [\n ' + ",\n ".join(odd) + "\n]}\n")
    (HERE / "tokenizer_reference.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    make_audio()
    make_tokenizer()
