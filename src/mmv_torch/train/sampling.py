"""Deterministic training data: an order that is a function of ``(seed, epoch)``, samples a function of
``(seed, epoch, index)``.

- :func:`epoch_order` draws the sample order of an epoch (a permutation, or a weighted mix of sources);
- :class:`EpochBatchSampler` cuts it into the batches of one rank, from any ``(epoch, batch)`` position;
- :class:`SeededSamples` makes each sample with python/numpy/torch RNGs seeded from
  :func:`sample_seeds` ``(seed, epoch, index)``, so its augmentation does not depend on which
  DataLoader worker made it or on what ran before;
- :class:`ShardBatches` is the same for a streaming (WebDataset-style) dataset;
- :func:`make_train_loader` builds the endless batch iterable of a rank positioned at an optimizer step
  (collating with :attr:`TrainData.collate`).

Micro-batch ``m = step * train.micro_batches(world)`` is batch ``m % batches_per_epoch`` of epoch
``m // batches_per_epoch``, so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from mmv_torch.config import Config
from mmv_torch.runs import ignore_stop_signals


def sample_seeds(seed: int, epoch: int, index: int) -> tuple[int, int, int]:
    """Three 32-bit seeds (python, numpy, torch) for sample ``index`` of ``epoch``."""
    s = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index, 0x5A4D]).generate_state(3)
    return int(s[0]), int(s[1]), int(s[2])


class SeededSamples(Dataset):
    """Wraps a map-style dataset: item ``(epoch, index)`` is ``dataset[index]`` made with seeded RNGs.

    The python, numpy and torch (CPU) global RNGs are seeded from :func:`sample_seeds` before the call
    and restored after it, so random augmentation is a pure function of ``(seed, epoch, index)`` in
    any process (main or DataLoader worker) and never disturbs the training RNG.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s_py, s_np, s_torch = sample_seeds(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s_py)
            np.random.seed(s_np)
            torch.manual_seed(s_torch)
            try:
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)  # datasets that seed their own generator from the epoch
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


@dataclass(frozen=True)
class TrainSource:
    """One data source inside the concatenated dataset: rows ``[offset, offset + length)``."""

    name: str
    offset: int
    length: int
    weight: float = 1.0


def epoch_order(sources: Sequence[TrainSource], seed: int, epoch: int) -> np.ndarray:
    """The global sample order of ``epoch``: int64 indices into the concatenated dataset.

    One source: a permutation. Several: an epoch has ``sum(length)`` samples, source i contributes
    ``round(total * w_i / sum(w))`` of them (a permutation of its rows, repeated when it must give
    more than it has), and the union is shuffled. Deterministic in ``(seed, epoch)``.
    """
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0xDA7A])
    if len(sources) == 1:
        s = sources[0]
        return s.offset + rng.permutation(s.length).astype(np.int64)
    total = sum(s.length for s in sources)
    wsum = sum(s.weight for s in sources)
    parts = []
    for s in sources:
        count = int(round(total * s.weight / wsum))
        reps = -(-count // s.length) if count else 0
        rows = np.concatenate([rng.permutation(s.length) for _ in range(reps)] or [np.zeros(0, np.int64)])
        parts.append(s.offset + rows[:count].astype(np.int64))
    order = np.concatenate(parts)
    return order[rng.permutation(len(order))]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(epoch, index)`` keys for one rank, starting at a given position.

    Epoch ``e`` uses :func:`epoch_order` ``(sources, seed, e)`` cut to a multiple of ``world``; rank
    ``r`` takes positions ``r, r + world, ...``; batches of ``batch_size`` (the incomplete last one is
    dropped). Iteration starts at batch ``start_batch`` of epoch ``start_epoch`` and never ends.
    """

    def __init__(self, sources: Sequence[TrainSource], batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start_epoch: int = 0, start_batch: int = 0) -> None:
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        n = len(epoch_order(self.sources, seed, 0))
        self.batches_per_epoch = (n // world) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training data has {n} samples per epoch, fewer than train.batch_size "
                             f"({batch_size}) x {world} processes")
        self.start_epoch = start_epoch
        self.start_batch = start_batch

    def rank_order(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``, ``batches_per_epoch * batch_size`` of them."""
        order = epoch_order(self.sources, self.seed, epoch)
        order = order[: (len(order) // self.world) * self.world][self.rank::self.world]
        return order[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, b = self.start_epoch, self.start_batch
        while True:
            order = self.rank_order(epoch)
            bs = self.batch_size
            while b < self.batches_per_epoch:
                yield [(epoch, int(i)) for i in order[b * bs:(b + 1) * bs]]
                b += 1
            epoch, b = epoch + 1, 0

    def position(self, micro_batches: int) -> tuple[int, int]:
        """``(epoch, batch)`` of the ``micro_batches``-th batch counted from epoch 0."""
        return divmod(micro_batches, self.batches_per_epoch)


class ShardBatches:
    """Endless batches of one rank from a streaming (WebDataset-style) ``IterableDataset``.

    An epoch is ``batches_per_epoch`` batches: each of the ``max(1, num_workers)`` loader workers of
    each rank yields ``samples_per_worker`` samples (the dataset's ``num_samples``), drawn from the
    shards with RNGs seeded by (seed, epoch, rank, worker) (``ShardDataset(resample=True)``). The
    stream is therefore a pure function of the seed, the epoch and the number of workers. Starting at
    batch b of an epoch replays and discards its first b batches (their decoding is the price of an
    exact resume from a stream).
    """

    def __init__(self, dataset: Any, batch_size: int, num_workers: int, start_epoch: int = 0,
                 start_batch: int = 0, pin_memory: bool = False, collate: Callable[..., Any] | None = None) -> None:
        self.dataset = dataset
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        per_worker = int(dataset.num_samples)
        if per_worker % batch_size:
            raise ValueError(f"samples per worker ({per_worker}) must be a multiple of the batch size")
        self.batches_per_epoch = max(1, num_workers) * per_worker // batch_size
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.pin_memory = pin_memory

    def position(self, micro_batches: int) -> tuple[int, int]:
        """``(epoch, batch)`` of the ``micro_batches``-th batch counted from epoch 0."""
        return divmod(micro_batches, self.batches_per_epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, skip = self.start_epoch, self.start_batch
        while True:
            self.dataset.set_epoch(epoch)  # before the workers are forked for this epoch
            loader = DataLoader(self.dataset, batch_size=self.batch_size, drop_last=True,
                                num_workers=self.num_workers, pin_memory=self.pin_memory,
                                worker_init_fn=ignore_stop_signals, collate_fn=self.collate)
            count = 0
            for batch in loader:
                if count >= skip:
                    yield batch
                count += 1
            if count != self.batches_per_epoch:
                raise RuntimeError(f"the shard stream gave {count} batches in epoch {epoch}, expected "
                                   f"{self.batches_per_epoch}")
            epoch, skip = epoch + 1, 0


@dataclass
class TrainData:
    """What the loop trains on: a dataset of sample dicts, its sources and the text vocabulary.

    A sample is a dict with "video" float32 (3,T,H,W) in [0,1], "audio" float32 (1,T',F), "has_audio"
    bool, "text" int64 (K,N), "text_mask" bool (K,), "word_mask" bool (K,N). ``dataset`` is map-style
    (then the order comes from :class:`EpochBatchSampler` over ``sources``) or, for shards, a streaming
    ``ShardDataset`` read through :class:`ShardBatches`. ``words`` and ``vectors`` (float32
    [V, word_dim]) fill the model's frozen text table when given; ``None`` keeps the preset's table
    (random) and requires ids below ``cfg.model.text.vocab_size``.
    """

    dataset: Dataset
    sources: list[TrainSource]
    words: list[str] | None = None
    vectors: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None = None
    """The loader's collate (None: torch's default); ``data.collate_samples`` for samples that carry
    ``frames`` of different sizes (``data.augment_on = "batch"``)."""


def as_train_data(data: TrainData | Dataset) -> TrainData:
    """A bare map-style dataset becomes one :class:`TrainSource` with no vocabulary."""
    if isinstance(data, TrainData):
        return data
    n = len(data)  # type: ignore[arg-type]
    return TrainData(data, [TrainSource("dataset", 0, n)])


def refuse_repeated_stream(cfg: Config) -> None:
    """Streams (shard folders) give one clip per sample: ``data.clips_per_video > 1`` needs a manifest."""
    if cfg.data.clips_per_video > 1:
        raise ValueError("data.clips_per_video > 1 needs manifests: shard folders give one clip per sample")


class FlattenCollate:
    """Collate items that may be lists of samples (several clips of one video) as one flat batch."""

    def __init__(self, collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None) -> None:
        self.collate = collate or default_collate

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        return self.collate([s for it in items for s in (it if isinstance(it, list) else [it])])


def make_train_loader(data: TrainData, cfg: Config, start_step: int = 0, rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> tuple[Any, EpochBatchSampler | ShardBatches]:
    """The endless batch iterable of one rank, positioned at optimizer step ``start_step``, and the
    object that maps a micro-batch count to ``(epoch, batch)`` (``.position``, ``.batches_per_epoch``).
    With ``data.clips_per_video = K``, a batch is ``train.batch_size / K`` items of K clips each."""
    t = cfg.train
    per_video = cfg.data.clips_per_video
    if isinstance(data.dataset, IterableDataset):
        refuse_repeated_stream(cfg)
        stream = ShardBatches(data.dataset, t.batch_size, t.num_workers, pin_memory=pin_memory, collate=data.collate)
        stream.start_epoch, stream.start_batch = stream.position(start_step * t.micro_batches(world))
        return stream, stream
    sampler = EpochBatchSampler(data.sources, t.batch_size // per_video, t.seed, rank, world)
    sampler.start_epoch, sampler.start_batch = sampler.position(start_step * t.micro_batches(world))
    loader = DataLoader(SeededSamples(data.dataset, t.seed), batch_sampler=sampler, num_workers=t.num_workers,
                        pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=2 if t.num_workers > 0 else None, worker_init_fn=ignore_stop_signals,
                        collate_fn=FlattenCollate(data.collate) if per_video > 1 else data.collate)
    return loader, sampler
