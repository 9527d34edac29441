"""``_read_audio`` (plane buffers, one channel mix per block) against the per-frame ``to_ndarray`` + mean it
replaced, bit for bit, on files of every sample format PyAV writes here."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from mmv_torch.data.media.audio_frames import MonoMix
from mmv_torch.data.media.decode import _read_audio, _seek, _start_time

RATE = 16000


def _reference_read(container, stream, t0, t1):
    """The previous implementation: every frame through ``to_ndarray()``, scaled and averaged on its own."""
    origin = _start_time(stream)
    _seek(container, stream, origin + max(t0, 0.0))
    chunks, first_t, expected_t = [], None, None
    rate = int(stream.codec_context.sample_rate or 0)
    for frame in container.decode(stream):
        rate = frame.sample_rate or rate
        t = float(frame.time) - origin if frame.time is not None else expected_t
        t = 0.0 if t is None else t
        chunks.append(_reference_mono(frame))
        first_t = t if first_t is None else first_t
        expected_t = t + len(chunks[-1]) / rate
        if t1 is not None and expected_t >= t1:
            break
    if not chunks:
        return np.zeros(0, np.float32), 0.0, rate
    return np.concatenate(chunks), first_t, rate


def _reference_mono(frame):
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, len(frame.layout.channels)).T
    if a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype == np.int32:
        a = (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    return a.astype(np.float32).mean(axis=0)


def _write(codec, fmt, layout, container, seconds=1.3, frame=1000):
    """Noise with a different level per channel (so a wrong mix shows), near full scale."""
    buf = io.BytesIO()
    rng = np.random.default_rng(len(layout) + len(codec))
    with av.open(buf, "w", format=container) as out:
        st = out.add_stream(codec, rate=RATE, layout=layout)
        st.format = fmt
        ch = st.codec_context.layout.nb_channels
        gain = np.linspace(0.95, 0.1, ch, dtype=np.float32)
        planar = fmt.endswith("p")
        n, pts = int(RATE * seconds), 0
        while pts < n:
            k = min(frame, n - pts)
            x = rng.uniform(-1, 1, (k, ch)).astype(np.float32) * gain
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T) if planar else x.reshape(1, -1),
                                            format="fltp" if planar else "flt", layout=layout)
            fr.sample_rate, fr.pts = RATE, pts
            pts += k
            for p in st.encode(fr):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return buf.getvalue()


CASES = [  # codec, encoder sample format, layout, container -> decoded format
    ("aac", "fltp", "stereo", "mp4"),  # fltp
    ("aac", "fltp", "6.1", "mp4"),  # fltp, 7 channels
    ("pcm_s16le", "s16", "mono", "wav"),
    ("pcm_s16le", "s16", "stereo", "wav"),
    ("pcm_s16le", "s16", "7.1", "matroska"),  # 8 channels packed: numpy's pairwise channel sum
    ("pcm_u8", "u8", "stereo", "wav"),
    ("pcm_u8", "u8", "6.1", "matroska"),
    ("pcm_s32le", "s32", "5.1", "wav"),
    ("pcm_f32le", "flt", "7.1", "matroska"),
    ("pcm_f64le", "dbl", "quad", "matroska"),
    ("flac", "s16", "7.1", "flac"),
    ("flac", "s32", "stereo", "flac"),
    ("pcm_s16le_planar", "s16p", "stereo", "nut"),
    ("pcm_s24le_planar", "s32p", "5.1", "nut"),
    ("pcm_s8_planar", "u8p", "2.1", "nut"),
]
WINDOWS = [(0.0, None), (0.0, 0.5), (0.37, 0.81), (1.0, 3.0), (5.0, 6.0)]  # the last past the end


@pytest.mark.parametrize("case", CASES, ids=["-".join(c[:3]) for c in CASES])
def test_read_audio_matches_per_frame_to_ndarray(case):
    data = _write(*case)
    with av.open(io.BytesIO(data)) as c:
        assert next(c.decode(audio=0)).format.name.rstrip("p") == case[1].rstrip("p")
    for t0, t1 in WINDOWS:
        with av.open(io.BytesIO(data)) as c, av.open(io.BytesIO(data)) as r:
            got = _read_audio(c, c.streams.audio[0], t0, t1)
            want = _reference_read(r, r.streams.audio[0], t0, t1)
        assert got[0].dtype == np.float32 and got[1:] == want[1:]
        assert got[0].tobytes() == want[0].tobytes(), (case, t0, t1)
        if t1 is None:
            assert len(got[0]) >= RATE  # the whole track


def test_mix_scale_and_channel_mean():
    """Known values: s16 left = 16384, right = -8192 -> (0.5 - 0.25) / 2; u8 200 / 56 -> 0."""
    for fmt, left, right, want in (("s16", 16384, -8192, 0.125), ("s16p", 16384, -8192, 0.125),
                                   ("u8", 200, 56, 0.0), ("s32", 2**30, 2**29, 0.375)):
        dtype = {"s16": np.int16, "u8": np.uint8, "s32": np.int32}[fmt.rstrip("p")]
        x = np.array([[left] * 5, [right] * 5], dtype)
        fr = av.AudioFrame.from_ndarray(x if fmt.endswith("p") else np.ascontiguousarray(x.T).reshape(1, -1),
                                        format=fmt, layout="stereo")
        mix = MonoMix()
        mix.add(fr)
        np.testing.assert_array_equal(mix.result(), np.full(5, want, np.float32))


@pytest.mark.parametrize("fmt", ["u8", "u8p", "s16", "s16p", "s32", "s32p", "flt", "fltp", "dbl", "dblp"])
def test_mono_mix_frames_of_every_format(fmt):
    """Synthetic frames of 1 to 8 channels with uneven sizes (1-sample frames included) and a format change."""
    rng = np.random.default_rng(7)
    layouts = ["mono", "stereo", "2.1", "quad", "5.0", "5.1", "6.1", "7.1"]
    dtype = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}[fmt.rstrip("p")]
    for ch, layout in enumerate(layouts, 1):
        if fmt.endswith("p") and ch == 8:
            continue  # PyAV cannot build 8-plane frames from arrays
        frames = []
        for n in (1, 1024, 1, 3, 700, 1, 2048):
            if dtype in (np.float32, np.float64):
                x = (rng.standard_normal((ch, n)) * 10.0 ** rng.integers(-3, 1, (ch, 1))).astype(dtype)
            else:
                info = np.iinfo(dtype)
                x = rng.integers(info.min, info.max, (ch, n), dtype=dtype, endpoint=True)
            arr = x if fmt.endswith("p") else np.ascontiguousarray(x.T).reshape(1, -1)
            frames.append(av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout))
        frames.insert(3, av.AudioFrame.from_ndarray(np.zeros((1, 4 * 2), np.int16), format="s16", layout="stereo"))
        mix = MonoMix()
        for fr in frames:
            mix.add(fr)
        want = np.concatenate([_reference_mono(fr) for fr in frames])
        assert mix.result().tobytes() == want.tobytes(), (fmt, layout)


class _Frame:
    """A planar float32 frame of any channel count (PyAV builds at most 7 planes from arrays)."""

    def __init__(self, x):
        self.x, self.samples = x, x.shape[1]
        self.format = type("F", (), {"name": "fltp", "is_planar": True})()
        self.layout = type("L", (), {"nb_channels": x.shape[0], "channels": list(range(x.shape[0]))})()
        self.planes = [np.ascontiguousarray(np.concatenate([row, row[:5]])) for row in x]  # padded planes

    def to_ndarray(self):
        return np.vstack([np.frombuffer(p, np.float32, count=self.samples) for p in self.planes])


@pytest.mark.parametrize("ch", [3, 8, 9])
def test_mono_mix_planar_many_channels(ch):
    """8+ planar channels: a lone sample's channels are summed in another order than a block's."""
    rng = np.random.default_rng(ch)
    frames = [_Frame((rng.standard_normal((ch, n)) * 10.0 ** rng.integers(-4, 2, (ch, 1))).astype(np.float32))
              for n in (1, 512, 1, 1, 300, 1) * 20]
    mix = MonoMix()
    for fr in frames:
        mix.add(fr)
    want = np.concatenate([_reference_mono(fr) for fr in frames])
    assert mix.result().tobytes() == want.tobytes()
