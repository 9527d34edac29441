"""DMVR's input contract: the audio spectrogram and the word tokenizer against TensorFlow's outputs.

The references in ``tests/data/dmvr`` were computed with TensorFlow by ``make_reference.py`` there
(TensorFlow is not a dependency of this package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmv_torch.config import DataConfig
from mmv_torch.data.audio import LogMelSpectrogram, linear_to_mel_weight_matrix, log_mel_spectrogram
from mmv_torch.data.datasets import audio_features

REF = Path(__file__).resolve().parent / "data" / "dmvr"


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
    default = audio_features(wave[:16000], DataConfig())
    torch.testing.assert_close(default, log_mel_spectrogram(wave[:16000], 16000, 80)[0])
