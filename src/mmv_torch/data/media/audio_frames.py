"""Decoded PyAV audio frames → mono float32: samples read from the frames' plane buffers, scaled to [-1, 1]
and averaged over channels a block of frames at a time (bit for bit the per-frame ``to_ndarray().mean(0)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SAMPLE_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32,
                  "dbl": np.float64}
_MIX_BLOCK = 1 << 17
"""Samples per channel held before a block of frames is mixed down to mono (bounds memory)."""


def to_float(a: np.ndarray) -> np.ndarray:
    """Decoded samples ``[channels, samples]`` (any memory layout) as float32 in [-1, 1], element-wise."""
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.int32:
        return (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    if a.dtype == np.int64:
        return (a.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    return a.astype(np.float32, copy=False)


class MonoMix:
    """Audio frames → mono float32, read from the frames' plane buffers and mixed a block of frames at a time.

    A block keeps the memory layout of one frame's ``to_ndarray()`` (a row per channel for planar formats,
    interleaved for packed ones), and ``mean(axis=0)`` reduces each sample on its own in an order set by
    that layout alone (rows in turn; numpy's pairwise sum along contiguous memory for 8+ channels), so the
    result has the bits of a mean per frame. A lone 1-sample frame is its own block: numpy sums the
    channels of a ``[C, 1]`` array along memory whatever the format.
    """

    def __init__(self) -> None:
        self.out: list[np.ndarray] = []
        self.parts: list[list[np.ndarray]] = []
        self.kind: tuple[str, int] = ("", 0)
        self.held = 0

    def add(self, frame: Any) -> None:
        n, fmt, ch = frame.samples, frame.format, frame.layout.nb_channels
        if n <= 0:
            return
        if self.parts and ((fmt.name, ch) != self.kind or n == 1 or self.held >= _MIX_BLOCK):
            self.flush()
        dtype = _SAMPLE_DTYPES.get(fmt.name[:-1] if fmt.is_planar else fmt.name)
        if dtype is None:
            raise ValueError(f"audio sample format {fmt.name!r} is not supported")
        if not self.parts:
            self.kind, self.parts = (fmt.name, ch), [[] for _ in range(ch if fmt.is_planar else 1)]
        planes = frame.planes
        if fmt.is_planar:
            for parts, plane in zip(self.parts, planes, strict=True):
                parts.append(np.frombuffer(plane, dtype, count=n))
        else:
            self.parts[0].append(np.frombuffer(planes[0], dtype, count=n * ch))
        self.held += n
        if n == 1:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        ch = self.kind[1]
        if len(self.parts) == ch:  # planar (or mono): one row per channel
            a = np.empty((ch, self.held), self.parts[0][0].dtype)
            for row, parts in zip(a, self.parts, strict=True):
                np.concatenate(parts, out=row)
        else:  # packed: interleaved samples
            a = np.concatenate(self.parts[0]).reshape(-1, ch).T
        self.out.append(to_float(a).mean(axis=0))
        self.parts, self.held = [], 0

    def result(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.out) if self.out else np.zeros(0, np.float32)
