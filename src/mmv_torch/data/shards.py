"""WebDataset-style tar shards: writing them from a manifest, and a streaming reader.

A shard is a plain tar file. Sample ``k`` (a 9-digit key) has two members, as WebDataset expects:
``<key>.<ext>`` holds the encoded media file's bytes unchanged (``ext`` from its name: mp4, mkv, ...)
and ``<key>.json`` the manifest line (with ``"path"``, the original path, and ``"duration"``).
The ``webdataset`` package can read these shards; this module reads them with ``tarfile`` alone.

:class:`ShardDataset` streams the shards: the list is split by rank (``dist``) and then by DataLoader
worker, or, with ``resample=True``, every worker draws shards at random forever (seeded by epoch,
rank and worker). Samples are decoded from memory with PyAV and come out in the pretraining sample
format of ``datasets.py``; broken samples are skipped and counted like there.

:func:`write_shards` writes a fresh folder: it refuses a non-empty ``out_dir`` unless ``overwrite``,
and builds the shards in a hidden sibling folder that replaces ``out_dir`` only once every shard is
written, so a folder never mixes the shards of two runs (see :func:`write_shards`).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .. import dist
from ..config import DataConfig
from ..fileio import atomic_folder
from .datasets import (
    MODALITIES,
    SkipTracker,
    Tokenize,
    _decode_reason,
    _parse_narrations,
    _resolve,
    av_errors,
    make_sample,
    read_jsonl,
    read_window,
)
from .decode import DecodeError, probe

logger = logging.getLogger("mmv_torch.data")

_MEDIA_KEYS = ("video",) + tuple(m for m in MODALITIES if m != "video")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def write_shards(manifest: str | Path, out_dir: str | Path, samples_per_shard: int = 1000,
                 max_shard_bytes: int = 1 << 30, prefix: str = "shard", verify: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Pack the files of a JSONL manifest into tar shards in the fresh folder ``out_dir``.

    A shard is closed after ``samples_per_shard`` samples or once it holds ``max_shard_bytes``.
    With ``verify``, each file is probed first and files that cannot be read or probed are left out
    (listed in the report). Returns ``{"shards": [paths], "samples": n, "skipped": [{"path", "reason"}]}``.

    ``out_dir`` must be absent or empty (a ``ValueError`` otherwise), unless ``overwrite``: then all
    of its content is replaced (a folder holding the manifest or the current folder is refused). The
    shards are written into ``.<name>.tmp.<pid>`` next to ``out_dir``, which takes its place only
    when complete (:func:`mmv_torch.fileio.atomic_folder`: the old folder is removed once the new one
    is in place). An error or interrupt leaves ``out_dir`` as it was and removes the temporary folder; one that a
    killed run left behind is removed by the next run.
    """
    if samples_per_shard <= 0 or max_shard_bytes <= 0:
        raise ValueError(f"samples_per_shard and max_shard_bytes must be > 0, got {samples_per_shard}, "
                         f"{max_shard_bytes}")
    mpath = Path(manifest)
    out = Path(os.path.abspath(out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"shard output {out_dir} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"shard output folder {out_dir} is not empty; choose a new folder or pass --overwrite "
                         "to replace its contents")
    if overwrite:
        real = Path(os.path.realpath(out))
        keep = ((Path(os.path.realpath(mpath)), "the manifest"), (Path.cwd().resolve(), "the current folder"))
        for inside, what in keep:
            if inside == real or real in inside.parents:
                raise ValueError(f"shard output folder {out_dir} holds {what}; --overwrite would delete it")
    with atomic_folder(out) as tmp:
        report = _write_into(mpath, tmp, samples_per_shard, max_shard_bytes, prefix, verify)
    report["shards"] = [str(Path(out_dir) / name) for name in report["shards"]]
    return report


def _close(tar: tarfile.TarFile) -> None:
    """Close a finished shard and flush it to disk."""
    tar.close()
    with open(tar.name, "rb+") as f:
        os.fsync(f.fileno())


def _write_into(mpath: Path, out: Path, samples_per_shard: int, max_shard_bytes: int, prefix: str, verify: bool
                ) -> dict[str, Any]:
    """Write the shards into the folder ``out``; the report lists the shards by file name."""
    shards: list[str] = []
    skipped: list[dict[str, str]] = []
    tar: tarfile.TarFile | None = None
    count_in_shard = bytes_in_shard = written = 0
    try:
        for n, obj in read_jsonl(mpath):
            key_name = next((k for k in _MEDIA_KEYS if isinstance(obj.get(k), str)), None)
            if key_name is None:
                raise ValueError(f"{mpath}:{n}: needs a string key 'video', 'audio' or 'image'")
            if "narration" in obj:
                _parse_narrations(obj["narration"], f"{mpath}:{n}")  # fail early on bad narration
            read_window(obj, f"{mpath}:{n}")  # and on a bad start/end window
            path = _resolve(mpath.parent, obj[key_name])
            try:
                data = Path(path).read_bytes()
                meta = dict(obj)
                meta["path"] = obj[key_name]
                if verify:
                    info = probe(data, name=path)
                    meta.setdefault("duration", info.duration)
            except OSError as e:
                skipped.append({"path": path, "reason": f"cannot read: {e}"})
                logger.warning("not sharding %s: cannot read: %s", path, e)
                continue
            except DecodeError as e:
                skipped.append({"path": path, "reason": e.reason})
                logger.warning("not sharding %s: %s", path, e.reason)
                continue
            if tar is None or count_in_shard >= samples_per_shard or bytes_in_shard >= max_shard_bytes:
                if tar is not None:
                    _close(tar)
                    tar = None
                shards.append(f"{prefix}-{len(shards):06d}.tar")
                tar = tarfile.open(out / shards[-1], "w", format=tarfile.USTAR_FORMAT)
                count_in_shard = bytes_in_shard = 0
            key = f"{written:09d}"
            ext = Path(path).suffix.lower().lstrip(".") or "bin"
            if not re.fullmatch(r"[a-z0-9]+", ext):
                ext = "bin"
            meta["media_key"] = ext
            meta["modality"] = key_name
            _add_bytes(tar, f"{key}.{ext}", data)
            _add_bytes(tar, f"{key}.json", json.dumps(meta).encode())
            count_in_shard += 1
            bytes_in_shard += len(data)
            written += 1
    except BaseException:
        if tar is not None:
            tar.close()
        raise
    if tar is not None:
        _close(tar)
    return {"shards": shards, "samples": written, "skipped": skipped}


def run_shard(manifest: str, out_dir: str, samples_per_shard: int = 1000, verify: bool = True,
              overwrite: bool = False) -> dict[str, Any]:
    """``mmv-torch data shard MANIFEST OUT_DIR [--overwrite]``: write the shards into a fresh folder
    (``overwrite`` replaces a non-empty one; see :func:`write_shards`) and print a one-line summary."""
    report = write_shards(manifest, out_dir, samples_per_shard=samples_per_shard, verify=verify,
                          overwrite=overwrite)
    print(f"wrote {report['samples']} samples in {len(report['shards'])} shards to {out_dir}; "
          f"{len(report['skipped'])} files left out")
    for s in report["skipped"]:
        print(f"  left out {s['path']}: {s['reason']}")
    return report


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
                                 index, window=window, batch_augment=self.cfg.augment_on == "batch")
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
