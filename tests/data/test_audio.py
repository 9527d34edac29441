"""Tests for mmv_torch.data.media.audio: log-mel against a slow numpy reference and (if installed) librosa."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmv_torch.data.media.audio import LogMelSpectrogram, hz_to_mel, log_mel_spectrogram, mel_filterbank, mel_to_hz


def _ref_filterbank(n_mels, n_fft, sr, fmin, fmax, htk, slaney_norm):
    """Independent loop version of the triangular filterbank."""

    def to_mel(f):
        if htk:
            return 2595.0 * math.log10(1.0 + f / 700.0)
        return f * 3.0 / 200.0 if f < 1000 else 15.0 + math.log(f / 1000.0) * 27.0 / math.log(6.4)

    def to_hz(m):
        if htk:
            return 700.0 * (10 ** (m / 2595.0) - 1.0)
        return m * 200.0 / 3.0 if m < 15.0 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)

    lo, hi = to_mel(fmin), to_mel(fmax)
    edges = [to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        a, c, b = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if a < f <= c:
                fb[k, m] = (f - a) / (c - a)
            elif c < f < b:
                fb[k, m] = (b - f) / (b - c)
            if slaney_norm:
                fb[k, m] *= 2.0 / (b - a)
    return fb


def _ref_log_mel(y, sr, n_mels, win, hop, n_fft, htk, slaney_norm, offset=1e-6):
    """Frame-by-frame numpy DFT, zero-padded centre framing, periodic Hann."""
    pad = n_fft // 2
    yp = np.concatenate([np.zeros(pad), y, np.zeros(pad)])
    window = np.zeros(n_fft)
    start = (n_fft - win) // 2
    window[start:start + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    n_frames = 1 + (len(yp) - n_fft) // hop
    fb = _ref_filterbank(n_mels, n_fft, sr, 0.0, sr / 2, htk, slaney_norm)
    out = np.zeros((n_frames, n_mels))
    for t in range(n_frames):
        spec = np.abs(np.fft.rfft(yp[t * hop:t * hop + n_fft] * window)) ** 2
        out[t] = spec @ fb
    return np.log(out + offset)


@pytest.mark.parametrize("mel_scale,norm", [("htk", None), ("slaney", "slaney")])
def test_filterbank_matches_loop_reference(mel_scale, norm):
    fb = mel_filterbank(40, 512, 16000, 0.0, None, mel_scale, norm, dtype=torch.float64).numpy()
    ref = _ref_filterbank(40, 512, 16000, 0.0, 8000.0, mel_scale == "htk", norm == "slaney")
    np.testing.assert_allclose(fb, ref, atol=1e-12)


def test_filterbank_properties():
    fb = mel_filterbank(80, 512, 16000).numpy()  # (257, 80)
    assert fb.shape == (257, 80) and (fb >= 0).all() and fb.max() <= 1.0
    # Neighbouring triangles overlap so that, between the first and last centres, they sum to one.
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 82))
    freqs = np.arange(257) * 16000 / 512
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[inside].sum(1), 1.0, atol=1e-9)
    # Slaney norm: every filter has unit area in Hz (checked on a fine FFT grid).
    fine = mel_filterbank(20, 1 << 16, 16000, mel_scale="slaney", norm="slaney", dtype=torch.float64).numpy()
    np.testing.assert_allclose(fine.sum(0) * 16000 / (1 << 16), 1.0, rtol=1e-3)
    for scale in ("htk", "slaney"):
        f = np.array([0.0, 500.0, 1000.0, 4000.0, 7999.0])
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-9)


def test_shapes_and_batching():
    x = torch.randn(3, 32000) * 0.1
    out = log_mel_spectrogram(x, 16000)
    assert out.shape == (3, 1, 201, 80) and out.dtype == torch.float32
    one = log_mel_spectrogram(x[1], 16000)
    assert one.shape == (1, 1, 201, 80)
    torch.testing.assert_close(one[0], out[1], rtol=1e-5, atol=1e-5)
    assert LogMelSpectrogram(16000, center=False)(x).shape == (3, 1, 1 + (32000 - 512) // 160, 80)


@pytest.mark.parametrize("mel_scale,norm", [("htk", None), ("slaney", "slaney"), ("htk", "slaney")])
def test_matches_numpy_reference(mel_scale, norm):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(4000) * 0.2
    got = log_mel_spectrogram(torch.from_numpy(y), 16000, mel_scale=mel_scale, norm=norm, num_mel_bins=40)[0, 0]
    ref = _ref_log_mel(y, 16000, 40, 400, 160, 512, mel_scale == "htk", norm == "slaney")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)


def test_sine_peaks_in_right_bin():
    sr = 16000
    t = torch.arange(sr) / sr
    out = log_mel_spectrogram(torch.sin(2 * math.pi * 1000.0 * t), 16000)[0, 0]  # (T, F)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(8000.0), 82))
    peak = int(out[50].argmax())
    assert edges[peak] < 1000.0 < edges[peak + 2]


def test_bad_input():
    with pytest.raises(ValueError, match="waveform"):
        log_mel_spectrogram(torch.zeros(2, 3, 100), 16000)
    with pytest.raises(ValueError, match="mel_scale"):
        mel_filterbank(mel_scale="bark")
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(f_max=9000.0)


@pytest.mark.parametrize("htk,norm", [(True, None), (False, "slaney")])
def test_matches_librosa(htk, norm):
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    y = rng.standard_normal(16000) * 0.1
    kw = dict(sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=80, htk=htk, norm=norm,
              center=True, pad_mode="constant", power=2.0)
    ref = librosa.feature.melspectrogram(y=y, **kw).T  # (T, F)
    mod = LogMelSpectrogram(16000, mel_scale="htk" if htk else "slaney", norm=norm)
    got = mod.mel_power(torch.from_numpy(y))[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=0)
    # An absolute error of 1e-5 in the log is a relative error of 1e-5 in mel + offset.
    np.testing.assert_allclose(mod(torch.from_numpy(y))[0, 0].numpy(), np.log(ref + 1e-6), rtol=0, atol=1e-5)
    got32 = mod.mel_power(torch.from_numpy(y).float())[0].numpy()
    np.testing.assert_allclose(got32, ref, rtol=1e-4, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    x = torch.randn(2, 16000) * 0.1
    cpu = log_mel_spectrogram(x, 16000)
    gpu = log_mel_spectrogram(x.cuda(), 16000)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
