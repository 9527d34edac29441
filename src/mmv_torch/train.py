"""The training loop: one explicit loop, no framework (layer L3).

``train(cfg, data, out_dir, resume)`` runs ``cfg.train.steps`` optimizer steps of the MMV objective::

    for step in range(start, steps):
        for micro in range(grad_accum):              # no DDP sync until the last micro-batch
            batch = next(loader)                     # (epoch, index) keys -> seeded samples
            emb = model(video, audio, text, word_mask)
            loss, parts = mmv_loss(emb, cfg.loss, audio_mask, text_mask)
            (loss / grad_accum).backward()
        grad_norm = clip(grads)
        if loss or grad_norm is not finite: skip the update, count it, raise after max_bad_steps
        else: lr = schedule(step); optimizer.step()
        log; checkpoint every ckpt_every steps (atomic)

Exact resume. Everything that shapes step ``s`` is a pure function of saved state:

- the learning rate is :func:`lr_at` ``(step)`` (linear warm-up, then half a cosine period to 0);
- the data: the sample order of an epoch is a permutation drawn from ``(seed, epoch)``
  (:class:`EpochBatchSampler`); rank r takes every W-th sample; micro-batch ``m = step * grad_accum``
  is batch ``m % batches_per_epoch`` of epoch ``m // batches_per_epoch``. Each sample is produced
  with python/numpy/torch RNGs seeded from ``(seed, epoch, index)`` (:class:`SeededSamples`), so its
  augmentation does not depend on which DataLoader worker made it or on what ran before;
- model, optimizer, GradScaler, RNG states of every rank (python, numpy, torch, CUDA) and the
  skipped-step count are in the checkpoint, with the resolved config and the data position.

A resumed run therefore reproduces the losses and weights of an uninterrupted one (bitwise on CPU).

Checkpoints are ``run_dir/checkpoints/ckpt_<step:08d>.pt``, written to a temporary file in the same
folder, fsynced and renamed (``os.replace``), so a kill mid-write leaves only a stray temporary file
that is ignored; ``latest`` is the highest step among the complete files (no pointer file to
corrupt). Only the newest ``keep_ckpts`` are kept.

Run directory: ``config.json`` (resolved config), ``vocab.txt`` (word list of the text table, when
built from manifests), ``log.jsonl`` (one JSON object per logged step), ``tb/`` (TensorBoard),
``checkpoints/``, and at the end ``export/`` (``model.safetensors`` + ``config.json`` + ``vocab.txt``)
which ``create_model(checkpoint=run_dir / "export")`` loads.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from mmv_torch import dist
from mmv_torch.config import (
    Config,
    apply_overrides,
    config_to_dict,
    get_preset,
    load_config,
    save_config,
)
from mmv_torch.fileio import atomic_torch_save, atomic_write, atomic_write_text, remove_temporaries
from mmv_torch.losses import mmv_loss
from mmv_torch.models.mmv import MMV

CKPT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
CHECKPOINT_FORMAT = 1

# Config fields a resumed run may change: they do not affect what is computed.
RESUME_MUTABLE = frozenset({
    "train.log_every", "train.ckpt_every", "train.keep_ckpts", "train.num_workers", "train.max_bad_steps",
    "train.compile",
})


class TrainingDivergedError(RuntimeError):
    """Raised when more than ``train.max_bad_steps`` steps had a non-finite loss or gradient norm."""


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear warm-up ``peak * (step + 1) / warmup`` for ``step < warmup``, then half a cosine period
    from ``peak`` down to 0 at ``step == total``: ``peak * 0.5 * (1 + cos(pi * (step - warmup) /
    (total - warmup)))``.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Deterministic data: an order that is a function of (seed, epoch), samples a function of (seed, epoch, index)


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
class Source:
    """One data source inside the concatenated dataset: rows ``[offset, offset + length)``."""

    name: str
    offset: int
    length: int
    weight: float = 1.0


def epoch_order(sources: Sequence[Source], seed: int, epoch: int) -> np.ndarray:
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

    def __init__(self, sources: Sequence[Source], batch_size: int, seed: int, rank: int = 0, world: int = 1,
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
                 start_batch: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
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
                                num_workers=self.num_workers, pin_memory=self.pin_memory)
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
    sources: list[Source]
    words: list[str] | None = None
    vectors: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def as_train_data(data: TrainData | Dataset) -> TrainData:
    """A bare map-style dataset becomes one :class:`Source` with no vocabulary."""
    if isinstance(data, TrainData):
        return data
    n = len(data)  # type: ignore[arg-type]
    return TrainData(data, [Source("dataset", 0, n)])


def make_loader(data: TrainData, cfg: Config, start_step: int = 0, rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> tuple[Any, EpochBatchSampler | ShardBatches]:
    """The endless batch iterable of one rank, positioned at optimizer step ``start_step``, and the
    object that maps a micro-batch count to ``(epoch, batch)`` (``.position``, ``.batches_per_epoch``)."""
    t = cfg.train
    if isinstance(data.dataset, IterableDataset):
        stream = ShardBatches(data.dataset, t.batch_size, t.num_workers, pin_memory=pin_memory)
        stream.start_epoch, stream.start_batch = stream.position(start_step * t.grad_accum)
        return stream, stream
    sampler = EpochBatchSampler(data.sources, t.batch_size, t.seed, rank, world)
    sampler.start_epoch, sampler.start_batch = sampler.position(start_step * t.grad_accum)
    loader = DataLoader(SeededSamples(data.dataset, t.seed), batch_sampler=sampler, num_workers=t.num_workers,
                        pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=2 if t.num_workers > 0 else None)
    return loader, sampler


# ---------------------------------------------------------------------------------------------
# Checkpoints


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, ``[(step, path)]`` sorted by step (temporary files ignored)."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """``run_dir/checkpoints/ckpt_<step:08d>.pt``."""
    return Path(run_dir) / CKPT_DIR / f"ckpt_{step:08d}.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint on CPU; a ``ValueError`` names the file when it is unreadable or not ours."""
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, unpickling error, ...
        raise ValueError(f"checkpoint {p} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {p} is not an mmv-torch training checkpoint "
                         f"(format {CHECKPOINT_FORMAT})")
    return ckpt


def resolve_resume(resume: str | Path, run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Find and load the checkpoint named by ``resume``: ``"latest"`` (in ``run_dir``), a run folder
    (its latest), or a checkpoint file. For ``latest``, an unreadable newest file is reported with a
    warning and the next older one is tried. Raises ``ValueError`` when nothing loads."""
    target = Path(run_dir) if str(resume) == "latest" else Path(resume)
    if target.is_file():
        return target, load_checkpoint(target)
    if not target.is_dir():
        raise ValueError(f"--resume {resume}: no such checkpoint file or run folder ({target})")
    ckpts = list_checkpoints(target)
    if not ckpts:
        raise ValueError(f"--resume {resume}: no checkpoint in {target / CKPT_DIR}")
    errors = []
    for _, p in reversed(ckpts):
        try:
            return p, load_checkpoint(p)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}", stacklevel=2)
            errors.append(str(e))
    raise ValueError(f"--resume {resume}: no readable checkpoint in {target / CKPT_DIR}: {errors}")


def _prune_checkpoints(run_dir: Path, keep: int) -> None:
    for _, p in list_checkpoints(run_dir)[:-keep]:
        with contextlib.suppress(OSError):
            p.unlink()


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if dist.world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        name = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, name + ".")
        elif va != vb:
            keys.append(name)
    return keys


# ---------------------------------------------------------------------------------------------
# Logging


class RunLogger:
    """Rank-0 metrics sink: ``log.jsonl`` (one object per line, flushed) and TensorBoard if installed."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool = True) -> None:
        self.enabled = dist.is_main()
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not self.enabled:
            return
        if self.path.exists():  # drop lines of steps after the resumed checkpoint (lost work of a killed run)
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to log.jsonl only", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (``record["step"]`` is the x axis in TensorBoard)."""
        if not self.enabled:
            return
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")  # strict JSON: NaN/Inf become null
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    group = "loss" if k.startswith("loss") else "train"
                    self.writer.add_scalar(f"{group}/{k}", v, record["step"])

    def close(self) -> None:
        """Flush and close the sinks."""
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------------
# Model, optimizer, distributed wrapping


def _device_for_rank(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


def _wrap_for_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the loop calls: SyncBatchNorm + DistributedDataParallel when world size > 1, else
    ``model`` itself. Heads unused by the loss (e.g. ``at`` with ``weight_at = 0``) get no gradient, so
    DDP looks for unused parameters."""
    if dist.world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model = dist.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def _no_sync(model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if last_micro or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam (paper) or AdamW when ``train.weight_decay > 0`` (decay on weights with ndim >= 2 only;
    biases and BatchNorm parameters are not decayed). Frozen parameters (the word table) are left out."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.weight_decay == 0:
        return torch.optim.Adam(params, lr=t.lr)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype, channels_last: bool
               ) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``; floating ones take the model's ``dtype``."""
    out = {k: v.to(device, dtype=dtype if v.is_floating_point() else None, non_blocking=True)
           if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last:
        out["video"] = out["video"].contiguous(memory_format=torch.channels_last_3d)
    return out


def export_model(model: nn.Module, cfg: Config, out: str | Path, words: Sequence[str] | None = None) -> Path:
    """Write ``out/model.safetensors``, ``out/config.json`` (and ``out/vocab.txt``) for
    ``create_model(checkpoint=out)``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    save_config(cfg, out / "config.json")
    if words is not None:
        atomic_write_text(out / "vocab.txt", "".join(w + "\n" for w in words))
    return out


# ---------------------------------------------------------------------------------------------
# The loop


def _resolve_text_config(cfg: Config, data: TrainData) -> Config:
    """Size the model's word table to the vocabulary built from the data."""
    if data.vectors is None:
        return cfg
    v, d = data.vectors.shape
    return apply_overrides(cfg, {"model.text.vocab_size": int(v), "model.text.word_dim": int(d)})


def train(cfg: Config, data: TrainData | Dataset | Sequence[str], out_dir: str | Path,
          resume: str | None = None, *, device: str | None = None, tensorboard: bool = True,
          progress: bool = True) -> dict[str, Any]:
    """Train MMV on ``data`` for ``cfg.train.steps`` optimizer steps; returns a summary dict.

    ``data`` is a :class:`TrainData`, a map-style dataset of sample dicts (see :class:`TrainData`), or
    a list of ``--data`` specs for :func:`build_train_data`. ``out_dir`` is the run directory.
    ``resume``: ``"latest"`` (newest checkpoint of ``out_dir``), a run folder or a checkpoint file;
    the config must equal the checkpoint's except for :data:`RESUME_MUTABLE` fields. Run under
    ``torchrun`` for DDP (the process group is initialised here). ``cfg.train.batch_size`` is per
    process. Raises :class:`TrainingDivergedError` after more than ``train.max_bad_steps`` skipped
    steps. Summary keys: ``run_dir``, ``steps``, ``start_step``, ``final_loss``, ``skipped_steps``,
    ``clips_per_s``, ``wall_s``, ``export``, ``data`` (what :func:`build_train_data` reports).
    """
    run_dir = Path(out_dir)
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    dev = _device_for_rank(device)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    if isinstance(data, (list, tuple)):
        data = build_train_data(list(data), cfg, run_dir)
    tdata = as_train_data(data)  # type: ignore[arg-type]
    cfg = _resolve_text_config(cfg, tdata)
    t = cfg.train

    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt_path, ckpt = resolve_resume(resume, run_dir)
        diff = [k for k in _config_diff(config_to_dict(cfg), ckpt["config"]) if k not in RESUME_MUTABLE]
        if diff:
            raise ValueError(f"--resume {ckpt_path}: the config differs from the checkpoint's in {diff}; "
                             f"resume with the same config (e.g. --config {run_dir / 'config.json'})")
        if ckpt["world_size"] != world:
            raise ValueError(f"--resume {ckpt_path}: saved with {ckpt['world_size']} processes, now {world}; "
                             "exact resume needs the same number of processes")
    start_step = int(ckpt["step"]) if ckpt else 0

    # Model: identical initialisation on every rank (DDP also broadcasts rank 0's weights).
    torch.manual_seed(t.seed)
    model = MMV(cfg.model)
    if tdata.vectors is not None:
        model.text.load_word_vectors(tdata.vectors)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(dev)
    # The towers create their weights channels-last and convert their inputs (S3D, R(2+1)D, audio), and a
    # TSM tower has 4-D weights that channels_last_3d would reject; so the loop only lays out the video
    # batch channels_last_3d (train.channels_last) when it moves it to the device.
    channels_last = t.channels_last
    raw_model = model
    optimizer = build_optimizer(raw_model, cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=t.precision == "fp16")
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
    model = _wrap_for_ddp(raw_model, dev)
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    # Training RNG: per rank, restored exactly on resume.
    torch.manual_seed(t.seed + 1000 * (rank + 1))
    random.seed(t.seed + rank)
    np.random.seed((t.seed + rank) & 0xFFFFFFFF)
    if ckpt:
        _set_rng_state(ckpt["rng"][rank])
    bad_steps = int(ckpt["bad_steps"]) if ckpt else 0

    if dist.is_main():
        save_config(cfg, run_dir / "config.json")
        if tdata.words is not None:
            atomic_write_text(run_dir / "vocab.txt", "".join(w + "\n" for w in tdata.words))
        (run_dir / CKPT_DIR).mkdir(exist_ok=True)
        remove_temporaries(run_dir / CKPT_DIR)
    dist.barrier()

    loader, sampler = make_loader(tdata, cfg, start_step, rank, world, pin_memory=dev.type == "cuda")
    streamed = isinstance(sampler, ShardBatches)
    if ckpt:
        saved = ckpt["data"]
        now = [(s.length, s.weight) for s in tdata.sources]
        was = [(s["length"], s["weight"]) for s in saved["sources"]]
        if saved["batches_per_epoch"] != sampler.batches_per_epoch or was != now:
            raise ValueError(f"--resume: the data changed: {saved['batches_per_epoch']} batches per epoch "
                             f"from sources (length, weight) {was} when saved, {sampler.batches_per_epoch} "
                             f"from {now} now")
        if streamed and saved["num_workers"] != t.num_workers:
            raise ValueError(f"--resume: a shard stream depends on train.num_workers; it was "
                             f"{saved['num_workers']}, now {t.num_workers}")
    logger = RunLogger(run_dir, start_step, tensorboard)
    clips_per_step = t.batch_size * t.grad_accum * world
    params = [p for p in raw_model.parameters() if p.requires_grad]
    param_dtype = params[0].dtype  # float32; float64 when built under torch.set_default_dtype(float64)

    def save(step: int) -> None:
        rng_all = _gather_objects(_rng_state())
        if dist.is_main():
            epoch, batch = sampler.position(step * t.grad_accum)
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "schedule": {"kind": "warmup_cosine", "step": step, "lr": t.lr, "warmup": t.warmup_steps,
                             "total": t.steps},
                "rng": rng_all,
                "data": {"seed": t.seed, "epoch": epoch, "batch": batch,
                         "batches_per_epoch": sampler.batches_per_epoch, "batch_size": t.batch_size,
                         "world_size": world, "sources": [vars(s) for s in tdata.sources],
                         "stream": streamed, "num_workers": t.num_workers},
                "bad_steps": bad_steps,
                "last_loss": last_loss,
                "world_size": world,
                "config": config_to_dict(cfg),
                "words": tdata.words,
            }
            atomic_torch_save(state, checkpoint_path(run_dir, step))
            _prune_checkpoints(run_dir, t.keep_ckpts)
        dist.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(total=t.steps, initial=start_step, disable=not (progress and dist.is_main()),
               dynamic_ncols=True, desc="train", file=sys.stderr)
    raw_model.train()
    it = iter(loader)
    t_start = time.perf_counter()
    window = {"data": 0.0, "step": 0.0, "steps": 0}
    last_loss = float(ckpt["last_loss"]) if ckpt else float("nan")
    step = start_step
    try:
        while step < t.steps:
            t0 = time.perf_counter()
            data_time = 0.0
            lr = lr_at(step, t.lr, t.warmup_steps, t.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64)
            parts_sum: dict[str, float] = {}
            for micro in range(t.grad_accum):
                td = time.perf_counter()
                batch = _to_device(next(it), dev, param_dtype, channels_last)
                data_time += time.perf_counter() - td
                with _no_sync(model, micro == t.grad_accum - 1), _autocast(dev, t.precision):
                    emb = model(video=batch["video"], audio=batch["audio"], text=batch["text"],
                                word_mask=batch["word_mask"])
                    loss, parts = mmv_loss(emb, cfg.loss, audio_mask=batch["has_audio"].bool(),
                                           text_mask=batch["text_mask"].bool())
                    scaler.scale(loss / t.grad_accum).backward()
                loss_sum += loss.detach().double().cpu() / t.grad_accum
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) / t.grad_accum
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf)
            loss_value = float(loss_sum)
            # fp16: overflowing gradients are the GradScaler's business (it skips and lowers the scale).
            finite = math.isfinite(loss_value) and (t.precision == "fp16" or bool(torch.isfinite(grad_norm)))
            finite = bool(dist.all_reduce_sum(torch.tensor(0.0 if finite else 1.0, device=dev)).item() == 0)
            if finite:
                scaler.step(optimizer)
                scaler.update()
                last_loss = loss_value
            else:
                bad_steps += 1
                scaler.update()  # fp16: lowers the scale; a no-op otherwise
                optimizer.zero_grad(set_to_none=True)
                msg = (f"step {step}: non-finite loss {loss_value} or gradient norm {float(grad_norm)}; "
                       f"update skipped ({bad_steps} skipped so far, train.max_bad_steps={t.max_bad_steps})")
                if dist.is_main():
                    warnings.warn(msg, stacklevel=2)
                logger.log({"step": step + 1, "event": "skipped_step", "loss": loss_value,
                            "grad_norm": float(grad_norm), "skipped_steps": bad_steps})
                if bad_steps > t.max_bad_steps:
                    raise TrainingDivergedError(
                        f"training stopped: {bad_steps} steps had a non-finite loss or gradient norm, more "
                        f"than train.max_bad_steps={t.max_bad_steps}; last at step {step}. Lower train.lr, "
                        "set train.grad_clip, or use train.precision=fp32/bf16.")
            step += 1
            step_time = time.perf_counter() - t0
            window["data"] += data_time
            window["step"] += step_time
            window["steps"] += 1
            bar.update(1)
            if step % t.log_every == 0 or step == t.steps:
                record = {"step": step, "loss": loss_value, **{f"loss_{k}": v for k, v in parts_sum.items()},
                          "lr": lr, "grad_norm": float(grad_norm),
                          "clips_per_s": clips_per_step * window["steps"] / max(window["step"], 1e-9),
                          "data_time": window["data"] / window["steps"],
                          "step_time": window["step"] / window["steps"],
                          "skipped_steps": bad_steps, "epoch": sampler.position(step * t.grad_accum)[0]}
                if scaler.is_enabled():
                    record["grad_scale"] = float(scaler.get_scale())
                logger.log(record)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                window = {"data": 0.0, "step": 0.0, "steps": 0}
            if step % t.ckpt_every == 0 or step == t.steps:
                save(step)
    finally:
        bar.close()
        logger.close()
        del it

    wall = time.perf_counter() - t_start
    export_dir = run_dir / "export"
    if dist.is_main():
        export_model(raw_model, cfg, export_dir, tdata.words)
    dist.barrier()
    done = step - start_step
    return {"run_dir": str(run_dir), "steps": step, "start_step": start_step, "final_loss": last_loss,
            "skipped_steps": bad_steps, "clips_per_s": clips_per_step * done / wall if done else 0.0,
            "wall_s": wall, "export": str(export_dir), "data": tdata.info}


# ---------------------------------------------------------------------------------------------
# Data specs and the CLI entry point


SYNTHETIC_CLIPS = 256
"""Clips generated for ``--data synthetic`` (``synthetic:N`` asks for N)."""


def parse_data_spec(spec: str) -> tuple[str, float]:
    """``"PATH"`` or ``"PATH@WEIGHT"`` -> ``(PATH, weight)`` (weight 1 by default)."""
    path, sep, tail = spec.rpartition("@")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return spec, 1.0  # an '@' inside a path
        if not weight > 0:
            raise ValueError(f"--data {spec!r}: the weight after '@' must be > 0")
        return path, weight
    return spec, 1.0


def _synthetic_manifest(spec: str, cfg: Config, run_dir: Path) -> Path:
    """Generate (rank 0, once) a synthetic narrated-video set in ``run_dir/synthetic``; its manifest."""
    _, _, count = spec.partition(":")
    try:
        num = int(count) if count else SYNTHETIC_CLIPS
    except ValueError:
        raise ValueError(f"--data {spec!r}: expected 'synthetic' or 'synthetic:N' with N clips") from None
    out = run_dir / "synthetic"
    manifest = out / "pretrain.jsonl"
    d = cfg.data
    span = d.num_frames / d.fps
    settings = {"num_clips": num, "seed": cfg.train.seed, "size": d.resize_short, "fps": d.fps,
                "duration": [max(2.0, 1.5 * span), max(4.0, 3.0 * span)]}
    stamp = out / "train_settings.json"
    fresh = manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings
    if dist.is_main() and not fresh:
        from mmv_torch.data.synthetic import write_dataset

        print(f"generating {num} synthetic clips into {out}", file=sys.stderr)
        write_dataset(out, num, settings["seed"], size=settings["size"], fps=settings["fps"],
                      duration=tuple(settings["duration"]), sample_rate=d.sample_rate, num_probe_train=0,
                      num_probe_test=0, num_retrieval=0)
        stamp.write_text(json.dumps(settings) + "\n")
    dist.barrier()
    return manifest


def _manifest_of(path: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir() and (p / "pretrain.jsonl").is_file():
        return p / "pretrain.jsonl"
    if p.is_dir():
        raise ValueError(f"--data {path}: a folder without pretrain.jsonl or .tar shards")
    raise ValueError(f"--data {path}: no such manifest file or folder (or use 'synthetic')")


def _is_shard_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and not (p / "pretrain.jsonl").is_file() and any(p.glob("*.tar"))


def _shard_narrations(shards: Sequence[str]) -> tuple[int, list[str]]:
    """Number of samples (``.json`` members) in the shards and the texts of their narrations."""
    import tarfile

    count, texts = 0, []
    for shard in shards:
        try:
            with tarfile.open(shard, "r:*") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".json"):
                        count += 1
                        f = tar.extractfile(member)
                        meta = json.loads(f.read()) if f is not None else {}
                        texts += [seg.get("text", "") for seg in meta.get("narration") or []]
        except (tarfile.TarError, OSError, ValueError) as e:
            raise ValueError(f"--data: cannot read shard {shard}: {e}") from e
    return count, texts


def build_train_data(specs: Sequence[str], cfg: Config, run_dir: str | Path) -> TrainData:
    """The training data named by ``--data`` specs, with its text vocabulary.

    Each spec is a pretraining JSONL manifest, a folder holding ``pretrain.jsonl``, ``synthetic``
    (``synthetic:N``): N clips (default :data:`SYNTHETIC_CLIPS`) generated once into
    ``run_dir/synthetic`` at ``cfg.data`` frame rate and ``resize_short`` size, or a folder of
    WebDataset ``.tar`` shards (``data/shards.py``; streamed through :class:`ShardBatches`, not mixable
    with manifests). ``PATH@W`` gives a manifest weight W for mixing (default 1 each: each source's
    share of an epoch is W / sum(W)).
    The vocabulary holds the words of all narrations that ``cfg.data.word_vectors`` knows, with their
    vectors (float32 ``[V, word_dim]``, row 0 the zero padding vector); when ``run_dir/vocab.txt``
    exists (a resumed run) it must be the same word list.
    """
    from mmv_torch.data.datasets import PretrainDataset, read_pretrain_manifest
    from mmv_torch.data.text import Tokenizer
    from mmv_torch.data.wordvec import vocabulary_for_sentences

    if not specs:
        raise ValueError("--data needs at least one manifest, folder or 'synthetic'")
    run_dir = Path(run_dir)
    parsed = [parse_data_spec(spec) for spec in specs]
    shard_folders = [path for path, _ in parsed if _is_shard_folder(path)]
    manifests: list[Path] = []
    weights = [w for _, w in parsed]
    if shard_folders:
        if len(shard_folders) != len(parsed) or any(w != 1.0 for w in weights):
            raise ValueError("--data: shard folders cannot be mixed with manifests or weighted; give only "
                             "shard folders (their samples are drawn uniformly)")
        from mmv_torch.data.shards import ShardDataset, expand_shards

        shards = expand_shards(shard_folders)
        total, sentences = _shard_narrations(shards)
        if total == 0:
            raise ValueError(f"--data {shard_folders}: the shards hold no samples")
    else:
        for path, _ in parsed:
            synthetic = path == "synthetic" or path.startswith("synthetic:")
            manifests.append(_synthetic_manifest(path, cfg, run_dir) if synthetic else _manifest_of(path))
        sentences = [seg.text for m in manifests for e in read_pretrain_manifest(m) for seg in e.narrations]

    vocab = vocabulary_for_sentences(sentences, cfg.data.word_vectors)
    saved = run_dir / "vocab.txt"
    if saved.is_file() and saved.read_text(encoding="utf-8").splitlines() != vocab.words:
        raise ValueError(f"the vocabulary of the --data narrations differs from {saved} of this run; "
                         "resume with the same data")
    tokenize = Tokenizer(vocab, max_words=cfg.data.max_words).encode

    t = cfg.train
    dataset: Dataset
    if shard_folders:
        streams = dist.world_size() * max(1, t.num_workers)
        per_worker = t.batch_size * max(1, -(-total // (streams * t.batch_size)))
        dataset = ShardDataset(shards, cfg.data, tokenize, train=True, resample=True, num_samples=per_worker,
                               seed=t.seed)
        sources = [Source(",".join(shard_folders), 0, total)]
    else:
        pre = PretrainDataset([str(m) for m in manifests], cfg.data, tokenize=tokenize, weights=weights,
                              train=True, seed=t.seed)
        bounds = zip(pre.bounds, pre.bounds[1:])
        sources = [Source(str(m), a, b - a, w) for m, (a, b), w in zip(manifests, bounds, weights)]
        empty = [src.name for src in sources if src.length == 0]
        if empty:
            raise ValueError(f"--data: the manifests {empty} list no videos")
        dataset = pre
    return TrainData(dataset, sources, list(vocab.words), vocab.vectors_tensor().clone(),
                     {"specs": list(specs), "num_clips": sum(src.length for src in sources),
                      "vocab_size": len(vocab), "num_sentences": len(sentences)})


def run_train(preset: str | None, data: Sequence[str], out: str, overrides: Sequence[str] = (),
              resume: str | None = None, config_path: str | None = None) -> dict[str, Any]:
    """``mmv-torch train``: config from ``--config`` (else ``--preset``), ``--set`` overrides on top,
    then :func:`train` on the ``--data`` specs into ``--out``."""
    if config_path is not None:
        cfg = load_config(config_path)
    elif preset is not None:
        cfg = get_preset(preset)
    else:
        raise ValueError("train needs --preset NAME or --config run.json")
    cfg = apply_overrides(cfg, list(overrides))
    if not data:
        raise ValueError("train needs --data (pretraining manifests, shard folders or 'synthetic')")
    return train(cfg, list(data), out, resume)

