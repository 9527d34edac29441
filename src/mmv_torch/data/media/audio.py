"""Log-mel spectrograms in pure torch (CPU or GPU, batched).

``log_mel_spectrogram(waveform, sample_rate)`` maps float audio ``(B, S)`` (or ``(S,)``) sampled at
``sample_rate`` Hz to ``(B, 1, T, F)``: the layout of the audio tower, T time frames, F mel bins. Defaults
follow the paper: 80 mel bins, 25 ms Hann window, 10 ms hop (at 16 kHz the FFT size is the next power of
two of the window, 512). ``sample_rate`` has no default: each front-end expects another rate (the
paper's 16 kHz, DMVR's 48 kHz), and a wrong rate gives a plausible but wrong spectrogram, never an error.

Steps: ``torch.stft`` (periodic Hann window of ``win_length`` centred in ``n_fft``; with
``center=True`` the signal is padded by ``n_fft // 2`` on both sides) → ``|X|**power`` → mel
filterbank → ``log(mel + log_offset)``. The filterbank is built here (:func:`mel_filterbank`) with
triangles linear in Hz between mel-spaced edges, on the HTK (``2595 log10(1 + f/700)``) or Slaney
(linear below 1 kHz, logarithmic above) mel scale, optionally area-normalised (``norm="slaney"``).
With the same settings this equals ``librosa.feature.melspectrogram`` (a test checks 1e-5 relative).

``frontend="dmvr"`` instead computes DMVR's ``compute_audio_spectrogram`` with its defaults, the input
the released MMV models were trained on (48 kHz audio): ``tf.signal.stft`` with 2048-sample frames, a
1024-sample step, FFT size 2048 and TF's periodic Hann window, no centring, the end zero-padded so
there are ``ceil(S / 1024)`` frames (``pad_end=True``); the magnitude ``|X|`` (not power); TF's
``linear_to_mel_weight_matrix`` (:func:`linear_to_mel_weight_matrix`: triangles in HTK mel space
between 80 and 7600 Hz, no area normalisation, zero weight at the DC bin); ``log(mel + 1e-6)``.
3.2 s at 48 kHz (153,600 samples) gives 150 frames. A test checks it against TensorFlow.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

MEL_SCALES = ("htk", "slaney")
NORMS = (None, "slaney")
FRONTENDS = ("default", "dmvr")
"""``"default"``: the settings given to :class:`LogMelSpectrogram`; ``"dmvr"``: DMVR's spectrogram."""

DMVR_FRAME_LENGTH = 2048
"""Samples per STFT frame (and FFT size) of DMVR's spectrogram."""
DMVR_FRAME_STEP = 1024
"""Samples between DMVR's STFT frames."""
DMVR_LOWER_EDGE_HERTZ = 80.0
"""Lowest frequency of DMVR's mel filters."""
DMVR_UPPER_EDGE_HERTZ = 7600.0
"""Highest frequency of DMVR's mel filters."""
DMVR_SAMPLE_RATE = 48000
"""Sample rate of the audio the released MMV models were fed."""

_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, mel_scale: str = "htk") -> np.ndarray:
    """Frequencies in Hz → mels on the ``"htk"`` or ``"slaney"`` scale (elementwise)."""
    f = np.asarray(hz, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if mel_scale == "slaney":
        lin = f / _SLANEY_F_SP
        logpart = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        return np.where(f >= _SLANEY_MIN_LOG_HZ, logpart, lin)
    raise ValueError(f"mel_scale={mel_scale!r} is not one of {list(MEL_SCALES)}")


def mel_to_hz(mel: np.ndarray | float, mel_scale: str = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if mel_scale == "slaney":
        lin = m * _SLANEY_F_SP
        logpart = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
        return np.where(m >= _SLANEY_MIN_LOG_MEL, logpart, lin)
    raise ValueError(f"mel_scale={mel_scale!r} is not one of {list(MEL_SCALES)}")


@functools.lru_cache(maxsize=32)
def _filterbank_np(num_mel_bins: int, n_fft: int, sample_rate: int, f_min: float, f_max: float,
                   mel_scale: str, norm: str | None) -> np.ndarray:
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    edges_mel = np.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), num_mel_bins + 2)
    edges = mel_to_hz(edges_mel, mel_scale)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (centre - lo)
    falling = (hi - freqs[None, :]) / (hi - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (F, n_freqs)
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights = weights.T.copy()  # (n_freqs, F)
    weights.setflags(write=False)
    return weights


def mel_filterbank(
    num_mel_bins: int = 80,
    n_fft: int = 512,
    sample_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: str = "htk",
    norm: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Triangular mel filters as a matrix ``(n_fft // 2 + 1, F)``: ``mel = power @ filterbank``.

    Filter ``m`` rises linearly (in Hz) from edge ``m`` to 1 at edge ``m+1`` and falls to 0 at edge
    ``m+2``; the ``F + 2`` edges are equally spaced in mels between ``f_min`` and ``f_max``
    (default ``sample_rate / 2``). ``norm="slaney"`` scales filter ``m`` by
    ``2 / (edge[m+2] - edge[m])`` (unit area in Hz).
    """
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"mel_scale={mel_scale!r} is not one of {list(MEL_SCALES)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {list(NORMS)}")
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if num_mel_bins <= 0 or n_fft <= 0 or sample_rate <= 0:
        raise ValueError(f"num_mel_bins, n_fft and sample_rate must be > 0, got {num_mel_bins}, {n_fft}, "
                         f"{sample_rate}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
    w = _filterbank_np(int(num_mel_bins), int(n_fft), int(sample_rate), float(f_min), f_max, mel_scale, norm)
    return torch.tensor(w, dtype=dtype, device=device)


def _linspace_f32(start: np.float32, stop: np.float32, num: int) -> np.ndarray:
    """``tf.linspace`` in float32: ``start + i * (stop - start) / (num - 1)``, the end points exact."""
    out = start + np.arange(num, dtype=np.float32) * ((stop - start) / np.float32(num - 1))
    out[0], out[-1] = start, stop
    return out


@functools.lru_cache(maxsize=8)
def _tf_mel_matrix_np(num_mel_bins: int, num_spectrogram_bins: int, sample_rate: int, lower_edge_hertz: float,
                      upper_edge_hertz: float) -> np.ndarray:
    f32 = np.float32

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return f32(1127.0) * np.log(f32(1.0) + hz / f32(700.0))

    # TF's float32 operations in TF's order; the DC bin gets no weight, the others are compared in mels.
    bins_mel = to_mel(_linspace_f32(f32(0.0), f32(sample_rate) / f32(2.0), num_spectrogram_bins)[1:])[:, None]
    edges = _linspace_f32(to_mel(f32(lower_edge_hertz)), to_mel(f32(upper_edge_hertz)), num_mel_bins + 2)
    lo, centre, hi = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bins_mel - lo) / (centre - lo)
    falling = (hi - bins_mel) / (hi - centre)
    weights = np.zeros((num_spectrogram_bins, num_mel_bins), np.float32)
    weights[1:] = np.maximum(f32(0.0), np.minimum(rising, falling))
    weights.setflags(write=False)
    return weights


def linear_to_mel_weight_matrix(
    num_mel_bins: int = 80,
    num_spectrogram_bins: int = DMVR_FRAME_LENGTH // 2 + 1,
    sample_rate: int = DMVR_SAMPLE_RATE,
    lower_edge_hertz: float = DMVR_LOWER_EDGE_HERTZ,
    upper_edge_hertz: float = DMVR_UPPER_EDGE_HERTZ,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """TensorFlow's ``tf.signal.linear_to_mel_weight_matrix``: ``(num_spectrogram_bins, F)``.

    The spectrogram bins are ``num_spectrogram_bins`` frequencies equally spaced from 0 to
    ``sample_rate / 2``; filter ``m`` is a triangle in mel space (``1127 ln(1 + f / 700)``) rising
    from edge ``m`` to 1 at edge ``m+1`` and falling to 0 at edge ``m+2``, the ``F + 2`` edges
    equally spaced in mels from ``lower_edge_hertz`` to ``upper_edge_hertz``; no area normalisation;
    the DC bin (row 0) is all zeros. The defaults are DMVR's (48 kHz, FFT 2048, 80 .. 7600 Hz).
    Computed in float32 with TF's operations in TF's order: it equals TF's matrix up to TF's own
    float32 rounding of the logarithm (at most 1e-5; a test checks it).
    """
    if num_mel_bins <= 0 or num_spectrogram_bins <= 1 or sample_rate <= 0:
        raise ValueError(f"need num_mel_bins > 0, num_spectrogram_bins > 1 and sample_rate > 0, got "
                         f"{num_mel_bins}, {num_spectrogram_bins}, {sample_rate}")
    if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate/2, got "
                         f"{lower_edge_hertz}, {upper_edge_hertz} at sample_rate={sample_rate}")
    w = _tf_mel_matrix_np(int(num_mel_bins), int(num_spectrogram_bins), int(sample_rate), float(lower_edge_hertz),
                          float(upper_edge_hertz))
    return torch.tensor(w, dtype=dtype, device=device)


def default_n_fft(win_length: int) -> int:
    """The FFT size used when none is given: the next power of two >= ``win_length``."""
    return 1 << max(int(win_length) - 1, 0).bit_length()


class LogMelSpectrogram(nn.Module):
    """``(B, S)`` or ``(S,)`` waveform → ``(B, 1, T, F)`` log-mel spectrogram (see the module doc).

    Args:
        sample_rate: Hz of the input (required: 16000 for the paper's front-end, 48000 for
            ``frontend="dmvr"``, the rate of the released models' input; no default fits both).
        num_mel_bins: F.
        window_s: analysis window length in seconds (``win_length = round(window_s * sample_rate)``).
        hop_s: hop in seconds.
        n_fft: FFT size (default: next power of two of the window length).
        f_min, f_max: frequency range of the filters (default 0 .. sample_rate/2).
        mel_scale: ``"htk"`` or ``"slaney"``.
        norm: None or ``"slaney"`` (area-normalised filters).
        power: 2.0 for power, 1.0 for magnitude.
        log_offset: added before the log.
        center: pad ``n_fft // 2`` on both sides so frame ``t`` is centred at ``t * hop``.
        pad_mode: padding of ``center`` (``"constant"`` zeros, or ``"reflect"``).
        frontend: ``"default"`` (the settings above) or ``"dmvr"`` (DMVR's spectrogram, see the
            module doc: only ``sample_rate``, ``num_mel_bins`` and ``log_offset`` apply, the other
            settings must keep their defaults).

    T is ``1 + S // hop`` with ``center=True``, else ``1 + (S - n_fft) // hop``; ``ceil(S / 1024)``
    with ``frontend="dmvr"``.
    """

    def __init__(
        self,
        sample_rate: int,
        num_mel_bins: int = 80,
        window_s: float = 0.025,
        hop_s: float = 0.010,
        n_fft: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        norm: str | None = None,
        power: float = 2.0,
        log_offset: float = 1e-6,
        center: bool = True,
        pad_mode: str = "constant",
        frontend: str = "default",
    ) -> None:
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend={frontend!r} is not one of {list(FRONTENDS)}")
        self.frontend = frontend
        self.pad_end = frontend == "dmvr"
        if self.pad_end:
            settings = dict(window_s=window_s, hop_s=hop_s, n_fft=n_fft, f_min=f_min, f_max=f_max,
                            mel_scale=mel_scale, norm=norm, power=power, center=center, pad_mode=pad_mode)
            changed = sorted(k for k, v in settings.items() if v != _DEFAULT_SETTINGS[k])
            if changed:
                raise ValueError(f"frontend='dmvr' fixes the STFT and mel settings to DMVR's; do not set {changed}")
            window_s, hop_s = DMVR_FRAME_LENGTH / sample_rate, DMVR_FRAME_STEP / sample_rate
            n_fft, power, center = DMVR_FRAME_LENGTH, 1.0, False
        self.win_length = int(round(window_s * sample_rate))
        self.hop_length = int(round(hop_s * sample_rate))
        if self.win_length <= 0 or self.hop_length <= 0:
            raise ValueError(f"window_s={window_s} and hop_s={hop_s} give an empty window or hop at "
                             f"sample_rate={sample_rate}")
        self.n_fft = default_n_fft(self.win_length) if n_fft is None else int(n_fft)
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is smaller than the window ({self.win_length} samples)")
        if power <= 0 or log_offset <= 0:
            raise ValueError(f"power and log_offset must be > 0, got {power}, {log_offset}")
        if pad_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ValueError(f"pad_mode={pad_mode!r} is not one of constant, reflect, replicate, circular")
        self.power = float(power)
        self.log_offset = float(log_offset)
        self.center = bool(center)
        self.pad_mode = pad_mode
        if self.pad_end:
            self.win_length, self.hop_length = DMVR_FRAME_LENGTH, DMVR_FRAME_STEP  # exact, whatever the rate
            fb = linear_to_mel_weight_matrix(num_mel_bins, self.n_fft // 2 + 1, sample_rate, dtype=torch.float64)
        else:
            fb = mel_filterbank(num_mel_bins, self.n_fft, sample_rate, f_min, f_max, mel_scale, norm,
                                dtype=torch.float64)
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True, dtype=torch.float64),
                             persistent=False)

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` or ``(S,)`` → mel energies ``(B, T, F)`` (before the log), in the input's dtype."""
        if waveform.dim() == 1:
            waveform = waveform[None]
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (S,) or (B, S), got shape {tuple(waveform.shape)}")
        if not waveform.is_floating_point():
            raise ValueError(f"waveform must be floating point, got {waveform.dtype}")
        x = waveform
        if self.center:
            pad = self.n_fft // 2
            if self.pad_mode == "reflect" and x.shape[-1] <= pad:
                raise ValueError(f"reflect padding needs more than {pad} samples, got {x.shape[-1]}")
            x = torch.nn.functional.pad(x[:, None], (pad, pad), mode=self.pad_mode)[:, 0]
        if self.pad_end:  # zeros at the end: ceil(S / hop) frames, as tf.signal.stft(pad_end=True)
            if x.shape[-1] == 0:
                raise ValueError("waveform has no samples")
            frames = -(-x.shape[-1] // self.hop_length)
            x = torch.nn.functional.pad(x, (0, self.n_fft + self.hop_length * (frames - 1) - x.shape[-1]))
        if x.shape[-1] < self.n_fft:
            raise ValueError(f"waveform of {waveform.shape[-1]} samples is shorter than one frame "
                             f"({self.n_fft} samples)")
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window.to(device=x.device, dtype=x.dtype), center=False, return_complex=True)
        mag = spec.abs()
        pw = mag.square() if self.power == 2.0 else mag.pow(self.power)  # (B, n_freqs, T)
        return torch.matmul(pw.transpose(1, 2), self.filterbank.to(device=pw.device, dtype=pw.dtype))  # (B, T, F)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` or ``(S,)`` → ``(B, 1, T, F)``."""
        return torch.log(self.mel_power(waveform) + self.log_offset)[:, None]


_DEFAULT_SETTINGS = dict(window_s=0.025, hop_s=0.010, n_fft=None, f_min=0.0, f_max=None, mel_scale="htk",
                         norm=None, power=2.0, center=True, pad_mode="constant")


@functools.lru_cache(maxsize=8)
def _cached_module(*args: object) -> LogMelSpectrogram:
    return LogMelSpectrogram(*args)  # type: ignore[arg-type]


def log_mel_spectrogram(
    waveform: torch.Tensor,
    sample_rate: int,
    num_mel_bins: int = 80,
    window_s: float = 0.025,
    hop_s: float = 0.010,
    n_fft: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: str = "htk",
    norm: str | None = None,
    power: float = 2.0,
    log_offset: float = 1e-6,
    center: bool = True,
    pad_mode: str = "constant",
    frontend: str = "default",
) -> torch.Tensor:
    """Functional form of :class:`LogMelSpectrogram`: ``(B, S)`` or ``(S,)`` → ``(B, 1, T, F)``.

    Runs on the waveform's device and dtype; the module (and its filterbank) is cached per setting.
    ``sample_rate`` is required (see :class:`LogMelSpectrogram`); ``frontend="dmvr"`` gives DMVR's
    spectrogram (48 kHz input; see the module doc).
    """
    mod = _cached_module(sample_rate, num_mel_bins, window_s, hop_s, n_fft, f_min, f_max, mel_scale, norm,
                         power, log_offset, center, pad_mode, frontend)
    return mod(waveform)
