"""The build pipeline behind ``index build`` / ``index add``: decoded files in, stored files out.

Files arrive decoded (:func:`~mmv_torch.index.embedding.decode_windows`, in the loader's worker
processes); their windows are queued and embedded in batches of ``batch_size`` windows that cross file
boundaries (a batch may end inside a file, and hold the tail of one file and the head of the next),
so short files do not run the model on small batches. A file leaves the embedder when all its windows
are embedded and waits in a group that is committed in one transaction
(:func:`~mmv_torch.index.store_write.add_files`) when it holds ``group_files`` files or its first file
waited ``group_s`` seconds: a killed build loses at most the files of its open group, never part of a
file, and the same command embeds them again.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.index.embedding import DecodedFile, forward_batch
from mmv_torch.index.store import IndexStore
from mmv_torch.index.store_write import FileWrite, add_files

GROUP_S = 5.0
"""A group of files is committed when its first file has waited this many seconds (or it is full)."""


@dataclass
class _Pending:
    item: DecodedFile
    done: int = 0
    """Windows already taken into a batch."""
    out: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"video_vt": [], "video_va": [], "audio_va": []})
    embedded: int = 0
    """Windows whose embeddings are in ``out``."""

    @property
    def windows(self) -> int:
        assert self.item.audio is not None
        return int(self.item.audio.shape[0])


class WindowBatcher:
    """Embeds the windows of decoded files in batches of ``batch_size`` windows across files; files come
    out in the order they went in, each with all its vectors (``{"video_vt", "video_va", "audio_va"}``,
    ``audio_va`` only for a file with sound, the video spaces only for a file whose video decodes), as
    :func:`~mmv_torch.index.embedding.embed_windows` gives them."""

    def __init__(self, model: Any, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.device, self.batch_size = model, device, batch_size
        self._queue: deque[_Pending] = deque()
        self.windows_embedded = 0

    def queued_windows(self) -> int:
        """Windows waiting for a batch."""
        return sum(p.windows - p.done for p in self._queue)

    def add(self, item: DecodedFile) -> list[tuple[DecodedFile, dict[str, np.ndarray]]]:
        """Queue a decoded file; returns the files finished by the full batches this made possible."""
        self._queue.append(_Pending(item))
        out = []
        while self.queued_windows() >= self.batch_size:
            self._run(self.batch_size)
            out += self._finished()
        return out

    def flush(self) -> list[tuple[DecodedFile, dict[str, np.ndarray]]]:
        """Embed what is queued (a last, smaller batch); returns the files it finished."""
        while self.queued_windows():
            self._run(self.batch_size)
        return self._finished()

    def _run(self, n: int) -> None:
        parts: list[tuple[_Pending, int, int]] = []
        for p in self._queue:
            if n == 0:
                break
            take = min(n, p.windows - p.done)
            if take:
                parts.append((p, p.done, p.done + take))
                p.done += take
                n -= take
        pictures = [p.item.video[a:b] for p, a, b in parts if p.item.video is not None]
        sound = [p.item.audio[a:b] for p, a, b in parts if p.item.has_audio]  # type: ignore[index]
        emb = forward_batch(self.model, torch.cat(pictures) if pictures else None,
                            torch.cat(sound) if sound else None, self.device)
        vrow = arow = 0
        for p, a, b in parts:
            if p.item.video is not None:
                for k in ("video_vt", "video_va"):
                    p.out[k].append(emb[k][vrow:vrow + b - a])
                vrow += b - a
            if p.item.has_audio:
                p.out["audio_va"].append(emb["audio_va"][arow:arow + b - a])
                arow += b - a
            p.embedded += b - a
            self.windows_embedded += b - a

    def _finished(self) -> list[tuple[DecodedFile, dict[str, np.ndarray]]]:
        out = []
        while self._queue and self._queue[0].embedded == self._queue[0].windows:
            p = self._queue.popleft()
            dim = (p.out["video_va"] or p.out["audio_va"])[0].shape[1]  # audio and video share S_va
            out.append((p.item, {k: np.concatenate(v) if v else np.zeros((0, dim), np.float32)
                                 for k, v in p.out.items()}))
        return out


@dataclass
class BuildCounts:
    """What :func:`index_files` did."""

    files: int = 0
    bad: int = 0
    audio_missing: int = 0
    windows: int = 0
    video_missing: int = 0
    dims: dict[str, int] = field(default_factory=dict)


def index_files(store: IndexStore, items: Iterable[DecodedFile], roots: dict[str, int], model: Any, *,
                device: str | torch.device = "cpu", batch_size: int = 16,
                group_files: int = 32, group_s: float | None = None, total_files: int | None = None,
                progress: bool = True) -> BuildCounts:
    """Embed and store decoded files (``roots``: each file's path -> its root id) in group commits; a
    file that could not be decoded is recorded as bad and reported on stderr. Records the dimensions in
    the index's settings with the first vectors. Progress: files, windows/s and the ETA on stderr."""
    from mmv_torch.progress import bar

    group_s = GROUP_S if group_s is None else group_s
    counts = BuildCounts(dims=dict(store.info().get("dims", {})))
    batcher = WindowBatcher(model, device, batch_size)
    group: list[FileWrite] = []
    opened = [0.0]
    pbar = bar(total=total_files, desc="index", unit="file", requested=progress)
    started = time.monotonic()

    def commit() -> None:
        if group:
            add_files(store, group)
            pbar.update(len(group))
            elapsed = max(time.monotonic() - started, 1e-9)
            pbar.set_postfix_str(f"{counts.windows / elapsed:.1f} windows/s", refresh=False)
            group.clear()

    def keep(done: list[tuple[DecodedFile, dict[str, np.ndarray]]]) -> None:
        for item, vectors in done:
            if any(k not in counts.dims and len(v) for k, v in vectors.items()):  # widths from a space's first rows
                counts.dims = {**{k: int(v.shape[1]) for k, v in vectors.items() if len(v)}, **counts.dims}
                store.set_info(dims=counts.dims)
            wins = item.window_rows()
            if not group:
                opened[0] = time.monotonic()
            group.append(FileWrite(item.path, roots[item.path], item.duration, item.has_audio, wins, vectors))
            counts.files += 1
            counts.windows += len(wins)
        if len(group) >= group_files or (group and time.monotonic() - opened[0] >= group_s):
            commit()

    try:
        for item in _reported(items, counts):
            if item.error is not None:
                if not group:
                    opened[0] = time.monotonic()
                group.append(FileWrite(item.path, roots[item.path], error=item.error))
                keep([])
                continue
            keep(batcher.add(item))
        keep(batcher.flush())
        commit()
    finally:
        pbar.close()
    return counts


def _reported(items: Iterable[DecodedFile], counts: BuildCounts) -> Iterator[DecodedFile]:
    """``items``, with each bad file and each file whose sound or video could not be decoded reported on
    stderr."""
    for item in items:
        p = Path(item.path)
        if item.error is not None:
            print(f"skipped {p}: {item.error}", file=sys.stderr)
            counts.bad += 1
        elif item.audio_error is not None:
            print(f"audio of {p} not decoded ({item.audio_error}): its video is indexed without sound", file=sys.stderr)
            counts.audio_missing += 1
        elif item.video_error is not None:
            print(f"video of {p} not decoded ({item.video_error}): its sound is indexed, audio-only", file=sys.stderr)
            counts.video_missing += 1
        yield item
