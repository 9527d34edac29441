"""Exact large-batch contrastive training by gradient caching (``train.contrastive_batch``; layer L4).

A contrastive loss couples every clip of its batch to every other one, so ``train.grad_accum`` (one loss
per micro-batch, gradients averaged) does not give the loss of the larger batch: each clip still sees only
the negatives of its own micro-batch. :func:`cached_accumulate` computes the loss over ALL ``M`` micro-batches
of a step (``N = M x B x W`` clips over ``W`` processes) and its exact gradient, with the activation memory
of one micro-batch (GradCache, Gao et al. 2021)::

    pass 1, for each micro-batch m:  save the RNG state;  emb_m = model(batch_m) without a graph
    loss = L(cat_m emb_m)  over the N embeddings (gathered across ranks in the loss);  g = dL/d emb
    pass 2, for each micro-batch m:  restore the RNG state;  emb_m = model(batch_m) with its graph;
                                     backward(emb_m, g_m)  (DDP syncs on the last micro-batch only)

Since ``emb_m`` depends only on micro-batch m (BatchNorm statistics are per micro-batch, synchronised across
processes per micro-batch by SyncBatchNorm), the chain rule makes the sum of the pass-2 backwards the
gradient of ``L`` through the whole model. Both passes read the same batch tensors (augmentation is drawn
once, in the data loader) and the same RNG state (dropout or any other model RNG), so pass 2 recomputes
exactly the embeddings of pass 1. BatchNorm running statistics are restored after pass 1, so they move once
per micro-batch (in pass 2), as in plain training.

Memory: the micro-batches of a step are held on the host as the loader gave them (``prepare`` moves one
to the device when it is embedded, in each pass), plus the ``N`` embeddings and their gradients on the device;
activations are those of one micro-batch. For the paper's configs (4096 clips of float32 32 x 200 x 200
video) that is 4096 / processes x 14.6 MiB of host memory per process (docs/reproduce.md).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmv_torch import dist
from mmv_torch.config import Config
from mmv_torch.losses import silent_audio

Emb = dict[str, dict[str, torch.Tensor]]
Side = dict[str, torch.Tensor | None]
Forward = Callable[[nn.Module, dict[str, Any]], tuple[Emb, Side]]
LossFn = Callable[[Emb, Side], tuple[torch.Tensor, Any]]


@contextlib.contextmanager
def running_stats_restored(model: nn.Module):
    """Context: the BatchNorm running statistics (mean, var, count) of ``model`` are put back on exit."""
    saved = [(m, [b.detach().clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
             for m in model.modules()
             if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def concat_embeddings(embs: Sequence[Emb]) -> Emb:
    """The embeddings of several micro-batches as one batch: ``emb[mod][space]`` concatenated along dim 0."""
    return {mod: {space: torch.cat([e[mod][space] for e in embs]) for space in embs[0][mod]} for mod in embs[0]}


def concat_side(sides: Sequence[Side]) -> Side:
    """The per-clip side tensors (masks, groups; ``None`` stays ``None``) of several micro-batches, concatenated."""
    return {k: None if sides[0][k] is None else torch.cat([s[k] for s in sides]) for k in sides[0]}  # type: ignore[misc]


def _leaves(emb: Emb) -> Emb:
    return {mod: {sp: t.detach().requires_grad_(True) for sp, t in spaces.items()} for mod, spaces in emb.items()}


def cached_accumulate(model: nn.Module, batches: Sequence[dict[str, Any]], forward: Forward, loss_fn: LossFn, *,
                      device: torch.device, prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b,
                      scale: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                      sync: Callable[[bool], contextlib.AbstractContextManager] = lambda last: contextlib.nullcontext(),
                      autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                      ) -> tuple[torch.Tensor, Any, Side]:
    """Accumulate into the ``.grad`` of ``model``'s parameters the exact gradient of ONE loss over the
    concatenation of ``batches`` (the module doc); returns ``(loss detached, loss_fn's second output, side)``.

    ``forward(model, prepare(batch)) -> (emb, side)``: ``emb[mod][space]`` (B, ...) embeddings and ``side`` the
    per-clip tensors the loss needs (masks (B,) or (B, K), groups (B,), or None), computed from the batch.
    ``loss_fn(emb_cat, side_cat) -> (loss, aux)`` on the concatenations (N_local = sum of the B's, in batch
    order). ``scale`` is applied to the loss before differentiation (a GradScaler's ``scale``), ``sync(last)``
    wraps each pass-2 forward and backward (DDP ``no_sync`` except on the last micro-batch), ``autocast()``
    each forward and the loss. Embeddings the loss does not use get no gradient.
    """
    if not batches:
        raise ValueError("cached_accumulate needs at least one micro-batch")
    rng: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    embs: list[Emb] = []
    sides: list[Side] = []
    with running_stats_restored(model), torch.no_grad():
        for batch in batches:
            rng.append(_rng_state(device))
            with autocast():
                emb, side = forward(model, prepare(batch))
            embs.append(emb)
            sides.append(side)
    sizes = [next(iter(next(iter(e.values())).values())).shape[0] for e in embs]
    leaves = _leaves(concat_embeddings(embs))
    del embs
    side_cat = concat_side(sides)
    with autocast():
        loss, aux = loss_fn(leaves, side_cat)
    keys = [(mod, sp) for mod, spaces in leaves.items() for sp in spaces]
    grads = torch.autograd.grad(scale(loss), [leaves[m][s] for m, s in keys], allow_unused=True)
    cached = {key: g for key, g in zip(keys, grads) if g is not None}
    if not cached:
        raise ValueError("cached_accumulate: the loss depends on none of the embeddings")
    del leaves, grads
    start = 0
    for i, batch in enumerate(batches):
        _set_rng_state(rng[i], device)
        stop = start + sizes[i]
        with sync(i == len(batches) - 1):
            with autocast():
                emb, _ = forward(model, prepare(batch))
            outs = [emb[m][s] for m, s in cached]
            torch.autograd.backward(outs, [g[start:stop].to(o.dtype) for o, g in zip(outs, cached.values())])
        start = stop
    return loss.detach(), aux, side_cat


# ---------------------------------------------------------------------------------------------
# The MMV step's pieces (used by train/loop.py)


def mmv_forward(model: nn.Module, batch: dict[str, Any], cfg: Config) -> tuple[Emb, Side]:
    """Embeddings of a device batch and the loss's per-clip inputs: ``audio_mask`` (B,) bool (clips with an
    audio stream whose window is not silent, :func:`~mmv_torch.losses.silent_audio` with
    ``loss.silence_range``), ``text_mask`` (B, K), ``groups`` (B,) (the source video when
    ``data.clips_per_video > 1``, else None) and ``silent`` (B,) (clips with audio masked as silent)."""
    emb = model(video=batch["video"], audio=batch["audio"], text=batch["text"], word_mask=batch["word_mask"])
    has_audio = batch["has_audio"].bool()
    silent = silent_audio(batch["audio"], cfg.loss.silence_range) & has_audio
    groups = batch["index"] if cfg.data.clips_per_video > 1 else None
    return emb, {"audio_mask": has_audio & ~silent, "text_mask": batch["text_mask"].bool(), "groups": groups,
                 "silent": silent}


def cached_mmv_step(state: Any, n_micro: int, dtype: torch.dtype, *, loss: Callable[..., tuple[torch.Tensor, dict]],
                    to_device: Callable[..., dict[str, Any]],
                    no_sync: Callable[[nn.Module, bool], contextlib.AbstractContextManager],
                    autocast: Callable[[torch.device, str], contextlib.AbstractContextManager],
                    ) -> tuple[torch.Tensor, dict[str, float], int, float]:
    """The gradients of one MMV loss over the next ``n_micro`` batches of ``state.batches`` (a loop
    ``TrainState``), by :func:`cached_accumulate`; returns ``(loss float64 on the CPU, parts, silent clips,
    seconds waiting for data)``. ``loss`` is ``mmv_loss``; the others are the loop's ``to_device``, DDP
    ``no_sync`` and ``autocast_context``."""
    t = state.cfg.train
    td = time.perf_counter()
    batches = [next(state.batches) for _ in range(n_micro)]
    data_time = time.perf_counter() - td

    def loss_fn(emb: Emb, side: Side) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return loss(emb, state.cfg.loss, **{k: v for k, v in side.items() if k != "silent"})

    value, parts, side = cached_accumulate(
        state.model, batches, lambda m, b: mmv_forward(m, b, state.cfg), loss_fn, device=state.device,
        prepare=lambda b: to_device(b, state.device, dtype, t.channels_last), scale=state.scaler.scale,
        sync=lambda last: no_sync(state.model, last), autocast=lambda: autocast(state.device, t.precision))
    silent = side["silent"]
    assert silent is not None
    return value.double().cpu(), {k: float(v) for k, v in parts.items()}, int(silent.sum()), data_time


def contrastive_batch_info(cfg: Config, world: int) -> dict[str, Any]:
    """How many clips enter one loss and how many negatives a clip sees, for ``cfg`` on ``world`` processes.

    Keys: ``clips_per_loss`` N, ``micro_batches``, ``batch_size``, ``world_size``, ``gradient_caching``,
    ``grad_accum``, ``negatives_per_direction`` (N - data.clips_per_video: the other videos' clips) and
    ``negatives_per_softmax`` (twice that under ``loss.form=joint``, whose softmax holds both directions)."""
    t = cfg.train
    micro = t.micro_batches(world)
    n = t.contrastive_batch or t.batch_size * world
    per_dir = n - cfg.data.clips_per_video
    return {"clips_per_loss": n, "micro_batches": micro, "batch_size": t.batch_size, "world_size": world,
            "gradient_caching": bool(t.contrastive_batch), "grad_accum": t.grad_accum,
            "negatives_per_direction": per_dir,
            "negatives_per_softmax": 2 * per_dir if cfg.loss.form == "joint" else per_dir}


def announce_contrastive_batch(cfg: Config, world: int, logger: Any = None) -> str:
    """Print (rank 0, stderr) and log (``logger.log``, event ``contrastive_batch`` at step 0, when given) the line
    of :func:`contrastive_batch_info`; returns the line."""
    info = contrastive_batch_info(cfg, world)
    how = (f"{info['batch_size']} per process x {info['micro_batches']} micro-batches x {world} processes, "
           "gradient caching" if info["gradient_caching"] else f"{info['batch_size']} per process x {world} processes")
    line = (f"contrastive batch: {info['clips_per_loss']} clips per loss ({how}); each clip's softmax holds "
            f"{info['negatives_per_softmax']} negatives ({info['negatives_per_direction']} per direction, "
            f"loss.form={cfg.loss.form})")
    if info["grad_accum"] > 1:
        line += (f"; train.grad_accum={info['grad_accum']} averages {info['grad_accum']} losses' gradients and adds "
                 "no negatives (train.contrastive_batch does)")
    if dist.is_main():
        print(line, file=sys.stderr)
    if logger is not None:
        logger.log({"step": 0, "event": "contrastive_batch", **info})
    return line
