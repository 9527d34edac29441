"""WebDataset-style tar shards: the format and a streaming reader (the writer is
:mod:`mmv_torch.data.tools.shard_writer`).

A shard is a plain tar file. Sample ``k`` (a 9-digit key) has two members, as WebDataset expects:
``<key>.<ext>`` holds the encoded media file's bytes unchanged (``ext`` from its name: mp4, mkv, ...)
and ``<key>.json`` the manifest line (with ``"path"``, the original path, and ``"duration"``).
The ``webdataset`` package can read these shards; this module reads them with ``tarfile`` alone.

:class:`ShardDataset` streams the shards: the list is split by rank (``dist``) and then by DataLoader
worker, or, with ``resample=True``, every worker draws shards at random forever (seeded by epoch,
rank and worker). Samples are decoded from memory with PyAV and come out in the pretraining sample
format of ``datasets.py``; broken samples are skipped and counted like there.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mmv_torch import dist
from mmv_torch.config import DataConfig
from mmv_torch.data.datasets import SkipTracker, Tokenize, _decode_reason, av_errors, make_sample
from mmv_torch.data.manifests import _parse_narrations, read_window
from mmv_torch.data.media.decode import DecodeError, probe

logger = logging.getLogger("mmv_torch.data")













def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard paths from a list, a folder (its ``*.tar``), a glob, or a brace range ``a-{000..009}.tar``."""
    if not isinstance(spec, str | Path):
        out = [p for s in spec for p in expand_shards(s)]
    else:
        s = str(spec)
        m = re.search(r"\{(\d+)\.\.(\d+)\}", s)
        if m:
            lo, hi = m.group(1), m.group(2)
            width = len(lo)
            out = [p for i in range(int(lo), int(hi) + 1)
                   for p in expand_shards(s[: m.start()] + f"{i:0{width}d}" + s[m.end():])]
        elif os.path.isdir(s):
            out = sorted(glob.glob(os.path.join(s, "*.tar")))
        elif any(c in s for c in "*?["):
            out = sorted(glob.glob(s))
        else:
            out = [s]
    return out


def iter_tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` for each sample of a tar shard, read as a stream."""
    current: str | None = None
    parts: dict[str, bytes] = {}
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            d, base = os.path.split(member.name)
            if "." not in base:
                continue
            stem, ext = base.split(".", 1)
            key = os.path.join(d, stem)
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if key != current:
                if current is not None:
                    yield current, parts
                current, parts = key, {}
            parts[ext] = data
    if current is not None:
        yield current, parts


class ShardDataset(IterableDataset):
    """Stream pretraining samples (format of ``datasets.py``) from tar shards.

    Args:
        shards: shard paths, a folder, a glob or a brace range (see :func:`expand_shards`).
        cfg: clip/augmentation/audio/text settings and ``max_skip_rate``.
        tokenize: narration → (ids (N,), word mask (N,)); None gives no text.
        train: random clips + augmentation, and shard order shuffled per epoch.
        resample: draw shards at random with replacement, without end (``num_samples`` bounds it).
        shuffle_buffer: samples held for shuffling (0: stream order).
        num_samples: stop each worker after this many samples (None: end of its shards).
        seed: base seed (with the epoch, rank and worker).
        rank, world_size: override the values from ``dist`` (e.g. for tests).
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], cfg: DataConfig, tokenize: Tokenize | None = None,
                 train: bool = True, resample: bool = False, shuffle_buffer: int = 0, num_samples: int | None = None,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 min_attempts: int = 20) -> None:
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError(f"no shards found for {shards!r}")
        self.cfg, self.tokenize, self.train, self.resample = cfg, tokenize, train, resample
        self.shuffle_buffer, self.num_samples, self.seed = int(shuffle_buffer), num_samples, int(seed)
        self._rank, self._world = rank, world_size
        self.epoch = 0
        self.tracker = SkipTracker(cfg.max_skip_rate, min_attempts)

    def set_epoch(self, epoch: int) -> None:
        """New shard order, clips and augmentations for ``epoch``."""
        self.epoch = int(epoch)

    def _slot(self) -> tuple[int, int, int, int]:
        rank = dist.rank() if self._rank is None else self._rank
        world = dist.world_size() if self._world is None else self._world
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def my_shards(self) -> list[str]:
        """Shards this rank and worker read (in order) when not resampling."""
        rank, world, worker, workers = self._slot()
        if len(self.shards) < world:
            raise ValueError(f"{len(self.shards)} shards cannot be split over {world} ranks; write more shards "
                             "or use resample=True")
        order = list(self.shards)
        if self.train:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        mine = order[rank::world][worker::workers]
        if not mine:
            logger.warning("rank %d worker %d has no shard (%d shards, %d workers per rank)", rank, worker,
                           len(self.shards), workers)
        return mine

    def _shard_stream(self, rng: random.Random) -> Iterator[str]:
        if self.resample:
            while True:
                yield rng.choice(self.shards)
        else:
            yield from self.my_shards()

    def _samples(self, rng: random.Random, g: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        for shard in self._shard_stream(rng):
            try:
                for key, parts in iter_tar_samples(shard):
                    name = f"{shard}:{key}"
                    sample = self._decode(name, key, parts, g)
                    if sample is not None:
                        yield sample
            except (tarfile.TarError, OSError, EOFError) as e:
                self.tracker.skip(shard, f"unreadable shard: {type(e).__name__}: {e}")

    def _decode(self, name: str, key: str, parts: dict[str, bytes], g: torch.Generator
                ) -> dict[str, torch.Tensor] | None:
        try:
            meta = json.loads(parts["json"]) if "json" in parts else {}
            ext = meta.get("media_key") or next(e for e in parts if e != "json")
            data = parts[ext]
            narrations = _parse_narrations(meta.get("narration"), name)
            window = read_window(meta, name)
        except (StopIteration, KeyError, ValueError) as e:
            reason = "no media member" if isinstance(e, StopIteration) else f"bad sample: {type(e).__name__}: {e}"
            self.tracker.skip(name, reason)
            return None
        try:
            duration = meta.get("duration")
            if duration is None:
                duration = probe(data, name=name).duration
            index = int(key) if key.isdigit() else -1
            sample = make_sample(data, name, narrations, float(duration), self.cfg, self.tokenize, self.train, g,
                                 index, window=window, batch_augment=self.cfg.batch_augment)
        except (DecodeError, av_errors()) as e:
            self.tracker.skip(name, _decode_reason(e))
            return None
        self.tracker.ok()
        return sample

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world, worker, workers = self._slot()
        seed = hash((self.seed, self.epoch, rank, worker)) & 0x7FFFFFFFFFFFFFFF
        rng = random.Random(seed)
        g = torch.Generator().manual_seed(seed)
        stream = self._samples(rng, g)
        count = 0
        buffer: list[dict[str, torch.Tensor]] = []
        for sample in stream:
            if self.shuffle_buffer > 0:
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(sample)
                    continue
                j = rng.randrange(len(buffer))
                sample, buffer[j] = buffer[j], sample
            yield sample
            count += 1
            if self.num_samples is not None and count >= self.num_samples:
                return
        rng.shuffle(buffer)
        for sample in buffer:
            if self.num_samples is not None and count >= self.num_samples:
                return
            yield sample
            count += 1
