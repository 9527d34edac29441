"""The training loop: one explicit loop, no framework.

``train(cfg, data, out_dir, resume)`` runs ``cfg.train.steps`` optimizer steps of the MMV objective,
each one :func:`train_step`::

    for step in range(start, steps):
        lr = schedule(step)
        for micro in range(grad_accum):              # no DDP sync until the last micro-batch
            batch = next(batches)                    # (epoch, index) keys -> seeded samples
            emb = model(video, audio, text, word_mask)
            loss, parts = mmv_loss(emb, cfg.loss, audio_mask, text_mask)
            (loss / grad_accum).backward()
        grad_norm = clip(grads)
        if loss or grad_norm is not finite on any rank: skip the update, count it, raise after max_bad_steps
        else: optimizer.step()
        log; checkpoint every ckpt_every steps (atomic)
    (train.contrastive_batch = N: ONE loss over the N clips of a step, by gradient caching: train/gradcache.py)

Exact resume. Everything that shapes step ``s`` is a pure function of saved state:

- the learning rate is :func:`lr_at` ``(step)`` (linear warm-up, then half a cosine period to 0);
- the data: :mod:`mmv_torch.train.sampling` makes the sample order of an epoch a function of
  ``(seed, epoch)`` and each sample a function of ``(seed, epoch, index)``; micro-batch
  ``m = step * grad_accum`` is batch ``m % batches_per_epoch`` of epoch ``m // batches_per_epoch``;
- model, optimizer, GradScaler, RNG states of every rank (python, numpy, torch, CUDA) and the
  skipped-step count are in the checkpoint (:mod:`mmv_torch.weights.checkpoint`), with the resolved config
  and the data position.

A resumed run therefore reproduces the losses and weights of an uninterrupted one (bitwise on CPU).

Run directory: ``config.json`` (resolved config), ``vocab.txt`` (word list of the text table, when
built from manifests), ``log.jsonl`` (one JSON object per logged step), ``tb/`` (TensorBoard),
``checkpoints/``, and at the end ``export/`` (``model.safetensors`` + ``config.json`` + ``vocab.txt``)
which ``create_model(checkpoint=run_dir / "export")`` loads.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
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
from torch.utils.data import Dataset

from mmv_torch import dist
from mmv_torch.config import Config, apply_overrides, config_to_dict, get_preset, load_config, save_config
from mmv_torch.data.media.batch_augment import augment_batch
from mmv_torch.fileio import remove_temporaries
from mmv_torch.losses import mmv_loss
from mmv_torch.models.mmv import MMV
from mmv_torch.runs import Interrupted, StopSignals
from mmv_torch.train.data import build_train_data
from mmv_torch.train.gradcache import announce_contrastive_batch, cached_mmv_step, mmv_forward
from mmv_torch.train.run_folder import RunLogger
from mmv_torch.train.sampling import EpochBatchSampler, ShardBatches, TrainData, as_train_data, make_train_loader
from mmv_torch.weights.checkpoint import (
    CKPT_DIR,
    EXPORT_DIR,
    checkpoint_path,
    export_model,
    gather_rng_states,
    resolve_resume,
    save_checkpoint,
    set_rng_state,
)
from mmv_torch.weights.folder import CONFIG_FILE, write_words

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
# Model, optimizer, distributed wrapping


def _device_for_rank(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


def unused_parameters(model: nn.Module, cfg: Config) -> list[str]:
    """Names of the trainable parameters that the loss of ``cfg`` never reaches (e.g. the ``at`` heads
    when ``loss.weight_at = 0``), found by one forward and backward pass of a CPU copy of ``model`` on a
    small random batch (the global RNG state is left as it was). Which parameters get a gradient depends
    on the config only: masks for missing audio or narration keep the graph connected."""
    import copy

    d = cfg.data
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(model).to("cpu").train()
        b, k = 2, d.num_candidates
        emb = probe(video=torch.rand(b, 3, d.num_frames, 64, 64), audio=torch.randn(b, 1, 128, d.num_mel_bins),
                    text=torch.randint(1, cfg.model.text.vocab_size, (b, k, d.max_words)))
        loss, _ = mmv_loss(emb, cfg.loss, audio_mask=torch.ones(b, dtype=torch.bool),
                           text_mask=torch.ones(b, k, dtype=torch.bool))
        loss.backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def freeze_unreached(model: nn.Module, cfg: Config) -> list[str]:
    """Under several processes, make the parameters that the loss never reaches (:func:`unused_parameters`)
    stop requiring gradients, and return their names; a no-op in one process.

    DDP must know every parameter that gets no gradient: either it searches the autograd graph for
    them every step (``find_unused_parameters=True``, which also fails to see heads whose outputs are
    returned but not in the loss) or they are not trainable. Frozen here, they keep their values and
    stay in the checkpoints and the export; the optimizer, built after this, leaves them out (they had
    no gradient, so Adam never moved them)."""
    if dist.world_size() == 1:
        return []
    names = unused_parameters(model, cfg)
    frozen = set(names)
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return names


def wrap_for_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the loop calls: SyncBatchNorm + DistributedDataParallel when world size > 1, else
    ``model`` itself. Every trainable parameter must get a gradient each step (:func:`freeze_unreached`
    first), so DDP does not search the autograd graph for unused ones. Gradients are views into DDP's
    buckets; pointwise convolution weights (all kernel sizes 1), which the towers keep channels-last,
    are given their equivalent contiguous strides, the ones their gradients have, so no gradient is
    copied into a bucket of another layout."""
    if dist.world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model = dist.convert_sync_batchnorm(model)
    for param in model.parameters():
        if param.dim() > 2 and all(n == 1 for n in param.shape[2:]):
            # same memory order; only the (meaningless) strides of the size-1 dims become the canonical ones
            param.data = param.data.clone(memory_format=torch.contiguous_format)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


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


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``train.precision``: none for ``fp32``, bfloat16 for ``bf16``, float16 for ``fp16``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype, channels_last: bool
              ) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``; floating ones take the model's ``dtype``. With
    ``channels_last`` the video is laid out ``channels_last_3d``. Batches of ``data.augment_on=batch``
    (uint8 ``frames`` + drawn ``augment``) get their ``video`` here, on ``device``."""
    out = {k: v.to(device, dtype=dtype if v.is_floating_point() and k != "augment" else None, non_blocking=True)
           if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out = augment_batch(out, dtype)
    if channels_last:
        out["video"] = out["video"].contiguous(memory_format=torch.channels_last_3d)
    return out


# ---------------------------------------------------------------------------------------------
# One optimizer step


@dataclass
class TrainState:
    """What an optimizer step reads and changes.

    ``model`` is the module called (``raw_model``, or its DDP / ``torch.compile`` wrapper); the
    optimizer holds ``raw_model``'s trainable parameters; ``scaler`` is a ``torch.amp.GradScaler``
    (enabled for ``train.precision=fp16`` only); ``batches`` yields sample-dict batches (see
    :class:`~mmv_torch.train.sampling.TrainData`), ``train.micro_batches(world)`` per step. ``step`` (steps done),
    ``bad_steps`` (skipped steps) and ``last_loss`` (loss of the last applied step) are advanced by
    :func:`train_step`; ``logger`` receives the skipped-step events.
    """

    model: nn.Module
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    cfg: Config
    device: torch.device
    batches: Iterator[dict[str, Any]]
    step: int = 0
    bad_steps: int = 0
    last_loss: float = math.nan
    logger: RunLogger | None = None
    silent_clips: int = 0
    params: list[nn.Parameter] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]


@dataclass(frozen=True)
class StepResult:
    """What :func:`train_step` did: ``step`` is the number of steps done after it (the x axis of the log),
    ``loss`` the mean over micro-batches (NaN/Inf when skipped), ``parts`` the per-pair losses,
    ``applied`` whether the optimizer updated the weights (False for a skipped non-finite step; an fp16
    overflow is skipped by the GradScaler itself and counts as applied), ``data_time`` the seconds spent
    waiting for batches and ``step_time`` the seconds of the whole step."""

    step: int
    loss: float
    parts: dict[str, float]
    lr: float
    grad_norm: float
    applied: bool
    data_time: float
    step_time: float


def _skip_step(state: TrainState, loss_value: float, grad_norm: float) -> None:
    """Count a non-finite step (its gradients dropped), log it, and raise after ``train.max_bad_steps``."""
    t = state.cfg.train
    state.bad_steps += 1
    state.scaler.update()  # fp16: lowers the scale; a no-op otherwise
    state.optimizer.zero_grad(set_to_none=True)
    msg = (f"step {state.step}: non-finite loss {loss_value} or gradient norm {grad_norm}; update skipped "
           f"({state.bad_steps} skipped so far, train.max_bad_steps={t.max_bad_steps})")
    if dist.is_main():
        warnings.warn(msg, stacklevel=3)
    if state.logger is not None:
        state.logger.log({"step": state.step + 1, "event": "skipped_step", "loss": loss_value,
                          "grad_norm": grad_norm, "skipped_steps": state.bad_steps})
    if state.bad_steps > t.max_bad_steps:
        raise TrainingDivergedError(
            f"training stopped: {state.bad_steps} steps had a non-finite loss or gradient norm, more than "
            f"train.max_bad_steps={t.max_bad_steps}; last at step {state.step}. Lower train.lr, set "
            "train.grad_clip, or use train.precision=fp32/bf16.")


def train_step(state: TrainState) -> StepResult:
    """One optimizer step of the loop, number ``state.step``; advances ``state``.

    Sets the learning rate :func:`lr_at` ``(state.step)``, accumulates ``train.micro_batches(world)``
    micro-batches (one loss each, or with ``train.contrastive_batch`` one loss over all by gradient caching:
    :mod:`~mmv_torch.train.gradcache`; DDP sync on the last one only) under :func:`autocast_context`, scaled by
    the GradScaler, unscales and clips the gradient norm to ``train.grad_clip``, and checks on every
    rank that loss and gradient norm are finite (fp16 overflows are left to the GradScaler). A finite
    step updates the weights; a non-finite one is skipped and counted, and more than
    ``train.max_bad_steps`` of them raise :class:`TrainingDivergedError`.
    """
    t = state.cfg.train
    t0 = time.perf_counter()
    data_time = 0.0
    lr = lr_at(state.step, t.lr, t.warmup_steps, t.steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)
    param_dtype = state.params[0].dtype  # float32; float64 when built under torch.set_default_dtype(float64)
    n_micro = t.micro_batches(dist.world_size())
    if t.contrastive_batch:  # one loss over all n_micro micro-batches (train/gradcache.py)
        loss_sum, parts_sum, silent, data_time = cached_mmv_step(
            state, n_micro, param_dtype, loss=mmv_loss, to_device=to_device, no_sync=_no_sync,
            autocast=autocast_context)
    else:
        loss_sum, parts_sum, silent = torch.zeros((), dtype=torch.float64), {}, 0
    for micro in range(0 if t.contrastive_batch else n_micro):
        td = time.perf_counter()
        batch = to_device(next(state.batches), state.device, param_dtype, t.channels_last)
        data_time += time.perf_counter() - td
        with _no_sync(state.model, micro == n_micro - 1), autocast_context(state.device, t.precision):
            emb, side = mmv_forward(state.model, batch, state.cfg)
            silent += int(side.pop("silent").sum())  # type: ignore[union-attr]
            loss, parts = mmv_loss(emb, state.cfg.loss, **side)
            state.scaler.scale(loss / n_micro).backward()
        loss_sum += loss.detach().double().cpu() / n_micro
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v) / n_micro
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.params, t.grad_clip if t.grad_clip > 0 else math.inf)
    loss_value = float(loss_sum)
    # fp16: overflowing gradients are the GradScaler's business (it skips and lowers the scale).
    finite = math.isfinite(loss_value) and (t.precision == "fp16" or bool(torch.isfinite(grad_norm)))
    flags = dist.all_reduce_sum(torch.tensor([0.0 if finite else 1.0, float(silent)], device=state.device))
    finite, state.silent_clips = bool(flags[0].item() == 0), state.silent_clips + int(flags[1].item())
    if finite:
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.last_loss = loss_value
    else:
        _skip_step(state, loss_value, float(grad_norm))
    state.step += 1
    return StepResult(state.step, loss_value, parts_sum, lr, float(grad_norm), finite, data_time,
                      time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# The loop and its setup


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


def _resolve_text_config(cfg: Config, data: TrainData) -> Config:
    """Size the model's word table to the vocabulary built from the data."""
    if data.vectors is None:
        return cfg
    v, d = data.vectors.shape
    return apply_overrides(cfg, {"model.text.vocab_size": int(v), "model.text.word_dim": int(d)})


def _validated_resume(cfg: Config, resume: str | None, run_dir: Path, world: int) -> dict[str, Any] | None:
    """The checkpoint to resume from (``None`` for a fresh run), after checking that the config differs
    only in :data:`RESUME_MUTABLE` fields and the number of processes is the same."""
    if resume is None:
        return None
    ckpt_path, ckpt = resolve_resume(resume, run_dir)
    diff = [k for k in _config_diff(config_to_dict(cfg), ckpt["config"]) if k not in RESUME_MUTABLE]
    if diff:
        raise ValueError(f"--resume {ckpt_path}: the config differs from the checkpoint's in {diff}; "
                         f"resume with the same config (e.g. --config {run_dir / 'config.json'})")
    if ckpt["world_size"] != world:
        raise ValueError(f"--resume {ckpt_path}: saved with {ckpt['world_size']} processes, now {world}; "
                         "exact resume needs the same number of processes")
    return ckpt


def _build_training(cfg: Config, tdata: TrainData, ckpt: dict[str, Any] | None, dev: torch.device
                    ) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """``(model called, raw model, optimizer, GradScaler)``, restored from ``ckpt`` when given. The
    initialisation is identical on every rank (DDP also broadcasts rank 0's weights)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    raw_model = MMV(cfg.model)
    if tdata.vectors is not None:
        raw_model.text.load_word_vectors(tdata.vectors)
    if ckpt:
        raw_model.load_state_dict(ckpt["model"])
    freeze_unreached(raw_model, cfg)  # before the optimizer is built
    raw_model.to(dev)
    # The towers create their weights channels-last and convert their inputs (S3D, R(2+1)D, audio), and a
    # TSM tower has 4-D weights that channels_last_3d would reject; so the loop only lays out the video
    # batch channels_last_3d (train.channels_last) when it moves it to the device.
    optimizer = build_optimizer(raw_model, cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=t.precision == "fp16")
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
    model = wrap_for_ddp(raw_model, dev)
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model, raw_model, optimizer, scaler


def _seed_training_rng(cfg: Config, rank: int, ckpt: dict[str, Any] | None) -> None:
    """The training RNGs of this rank (dropout, ...): seeded per rank, restored exactly on resume."""
    t = cfg.train
    torch.manual_seed(t.seed + 1000 * (rank + 1))
    random.seed(t.seed + rank)
    np.random.seed((t.seed + rank) & 0xFFFFFFFF)
    if ckpt:
        set_rng_state(ckpt["rng"][rank])


def _prepare_run_dir(run_dir: Path, cfg: Config, tdata: TrainData) -> None:
    """Rank 0 writes ``config.json`` and ``vocab.txt`` and clears stale temporary checkpoint files."""
    if dist.is_main():
        save_config(cfg, run_dir / CONFIG_FILE)
        if tdata.words is not None:
            write_words(run_dir, tdata.words)
        (run_dir / CKPT_DIR).mkdir(exist_ok=True)
        remove_temporaries(run_dir / CKPT_DIR)
    dist.barrier()


def _check_data_unchanged(ckpt: dict[str, Any], tdata: TrainData, sampler: EpochBatchSampler | ShardBatches,
                          num_workers: int) -> None:
    """A resumed run must read the same batches: same sources, same batches per epoch (and, for a shard
    stream, the same number of loader workers)."""
    saved = ckpt["data"]
    now = [(s.length, s.weight) for s in tdata.sources]
    was = [(s["length"], s["weight"]) for s in saved["sources"]]
    if saved["batches_per_epoch"] != sampler.batches_per_epoch or was != now:
        raise ValueError(f"--resume: the data changed: {saved['batches_per_epoch']} batches per epoch "
                         f"from sources (length, weight) {was} when saved, {sampler.batches_per_epoch} "
                         f"from {now} now")
    if isinstance(sampler, ShardBatches) and saved["num_workers"] != num_workers:
        raise ValueError(f"--resume: a shard stream depends on train.num_workers; it was "
                         f"{saved['num_workers']}, now {num_workers}")


def _save(run_dir: Path, state: TrainState, sampler: EpochBatchSampler | ShardBatches, tdata: TrainData) -> None:
    """Checkpoint ``state`` (a collective: every rank gives its RNG state, rank 0 writes)."""
    rng_all = gather_rng_states()
    if dist.is_main():
        t = state.cfg.train
        world = dist.world_size()
        epoch, batch = sampler.position(state.step * t.micro_batches(world))
        save_checkpoint(run_dir, {
            "step": state.step,
            "model": state.raw_model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict(),
            "schedule": {"kind": "warmup_cosine", "step": state.step, "lr": t.lr, "warmup": t.warmup_steps,
                         "total": t.steps},
            "rng": rng_all,
            "data": {"seed": t.seed, "epoch": epoch, "batch": batch,
                     "batches_per_epoch": sampler.batches_per_epoch, "batch_size": t.batch_size,
                     "world_size": world, "sources": [vars(s) for s in tdata.sources],
                     "stream": isinstance(sampler, ShardBatches), "num_workers": t.num_workers},
            "bad_steps": state.bad_steps,
            "last_loss": state.last_loss,
            "world_size": world,
            "config": config_to_dict(state.cfg),
            "words": tdata.words,
        }, t.keep_ckpts)
    dist.barrier()


def _log_record(state: TrainState, result: StepResult, window: dict[str, float], clips_per_step: int,
                sampler: EpochBatchSampler | ShardBatches) -> dict[str, Any]:
    """The ``log.jsonl`` record of a logged step; times are means over the steps since the last record."""
    t = state.cfg.train
    record = {"step": result.step, "loss": result.loss, **{f"loss_{k}": v for k, v in result.parts.items()},
              "lr": result.lr, "grad_norm": result.grad_norm,
              "clips_per_s": clips_per_step * window["steps"] / max(window["step"], 1e-9),
              "data_time": window["data"] / window["steps"], "step_time": window["step"] / window["steps"],
              "skipped_steps": state.bad_steps, "silent_clips": state.silent_clips,  # since the last record
              "epoch": sampler.position(result.step * t.micro_batches(dist.world_size()))[0]}
    state.silent_clips = 0
    if state.scaler.is_enabled():
        record["grad_scale"] = float(state.scaler.get_scale())
    return record


def _stop_requested(stop: StopSignals, dev: torch.device) -> bool:
    """Whether any rank was asked to stop (all ranks agree, so they stop at the same step)."""
    flag = 1.0 if stop.requested else 0.0
    if dist.world_size() > 1:
        flag = float(dist.all_reduce_sum(torch.tensor(flag, device=dev)).item())
    return flag > 0


def train(cfg: Config, data: TrainData | Dataset | Sequence[str], out_dir: str | Path,
          resume: str | None = None, *, device: str | None = None, tensorboard: bool = True,
          progress: bool = True) -> dict[str, Any]:
    """Train MMV on ``data`` for ``cfg.train.steps`` optimizer steps; returns a summary dict.

    ``data`` is a :class:`~mmv_torch.train.sampling.TrainData`, a map-style dataset of sample dicts, or a
    list of ``--data`` specs for :func:`~mmv_torch.train.data.build_train_data`. ``out_dir`` is the run
    directory. ``resume``: ``"latest"`` (newest checkpoint of ``out_dir``), a run folder or a
    checkpoint file; the config must equal the checkpoint's except for :data:`RESUME_MUTABLE` fields.
    Run under ``torchrun`` for DDP (the process group is initialised here). ``cfg.train.batch_size`` is
    per process. Raises :class:`TrainingDivergedError` after more than ``train.max_bad_steps`` skipped
    steps. SIGINT or SIGTERM stop the run after the step in progress with a checkpoint at that step
    and raise :class:`~mmv_torch.runs.Interrupted`. Summary keys: ``run_dir``, ``steps``,
    ``start_step``, ``final_loss``, ``skipped_steps``, ``clips_per_s``, ``wall_s``, ``export``, ``data``
    (what ``build_train_data`` reports).
    """
    run_dir = Path(out_dir)
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    cfg.train.micro_batches(world)  # train.contrastive_batch must divide over the processes: refuse before any work
    dev = _device_for_rank(device)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    if isinstance(data, (list, tuple)):
        data = build_train_data(list(data), cfg, run_dir)
    tdata = as_train_data(data)  # type: ignore[arg-type]
    cfg = _resolve_text_config(cfg, tdata)
    t = cfg.train
    ckpt = _validated_resume(cfg, resume, run_dir, world)
    start_step = int(ckpt["step"]) if ckpt else 0
    model, raw_model, optimizer, scaler = _build_training(cfg, tdata, ckpt, dev)
    _seed_training_rng(cfg, rank, ckpt)
    _prepare_run_dir(run_dir, cfg, tdata)
    loader, sampler = make_train_loader(tdata, cfg, start_step, rank, world, pin_memory=dev.type == "cuda")
    if ckpt:
        _check_data_unchanged(ckpt, tdata, sampler, t.num_workers)
    logger = RunLogger(run_dir, start_step, tensorboard)
    if ckpt is None and tdata.info.get("narrations", {}).get("videos"):  # what the manifests' validation dropped
        logger.log({"step": 0, "event": "narrations", "narrations": tdata.info["narrations"]})
    clips_per_step = t.batch_size * t.micro_batches(world) * world
    announce_contrastive_batch(cfg, world, logger if ckpt is None else None)

    from tqdm.auto import tqdm

    from mmv_torch.progress import enabled as progress_enabled

    bar = tqdm(total=t.steps, initial=start_step, disable=not (dist.is_main() and progress_enabled(progress)),
               dynamic_ncols=True, desc="train", file=sys.stderr)
    raw_model.train()
    state = TrainState(model, raw_model, optimizer, scaler, cfg, dev, iter(loader), step=start_step,
                       bad_steps=int(ckpt["bad_steps"]) if ckpt else 0,
                       last_loss=float(ckpt["last_loss"]) if ckpt else math.nan, logger=logger)
    t_start = time.perf_counter()
    window = {"data": 0.0, "step": 0.0, "steps": 0}
    stop = StopSignals()
    try:
        with stop:
            while state.step < t.steps:
                result = train_step(state)
                window["data"] += result.data_time
                window["step"] += result.step_time
                window["steps"] += 1
                bar.update(1)
                if result.step % t.log_every == 0 or result.step == t.steps:
                    logger.log(_log_record(state, result, window, clips_per_step, sampler))
                    bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}")
                    window = {"data": 0.0, "step": 0.0, "steps": 0}
                saved = result.step % t.ckpt_every == 0 or result.step == t.steps
                if saved:
                    _save(run_dir, state, sampler, tdata)
                if state.step < t.steps and _stop_requested(stop, dev):
                    if not saved:
                        _save(run_dir, state, sampler, tdata)
                    raise Interrupted(state.step, stop.signum or signal.SIGTERM, checkpoint_path(run_dir, state.step))
    finally:
        bar.close()
        logger.close()
        state.batches = iter(())  # lets the DataLoader iterator and its workers go

    wall = time.perf_counter() - t_start
    export_dir = run_dir / EXPORT_DIR
    if dist.is_main():
        export_model(raw_model, cfg, export_dir, tdata.words)
    dist.barrier()
    done = state.step - start_step
    return {"run_dir": str(run_dir), "steps": state.step, "start_step": start_step, "final_loss": state.last_loss,
            "skipped_steps": state.bad_steps, "clips_per_s": clips_per_step * done / wall if done else 0.0,
            "wall_s": wall, "export": str(export_dir), "data": tdata.info}


# ---------------------------------------------------------------------------------------------
# The CLI entry point


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

