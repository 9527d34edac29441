"""Helpers of tests/train/test_gradcache.py: the tiny MMV in float64 (with dropout on its embeddings, so that
the model draws from the RNG), micro-batches with masks and same-video groups, the one-graph reference
gradient, and a 2-process gloo worker that runs the cached step under DDP."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mmv_torch import dist
from mmv_torch.config import Config, apply_overrides, get_preset
from mmv_torch.losses import mmv_loss
from mmv_torch.train.gradcache import cached_accumulate, concat_embeddings, concat_side, mmv_forward

Batch = dict[str, torch.Tensor]


def small_cfg(**loss: Any) -> Config:
    """The tiny preset with 2 clips per video (groups) and the given ``loss.*`` overrides."""
    over = {"data.clips_per_video": 2, "train.batch_size": 2, **{f"loss.{k}": v for k, v in loss.items()}}
    return apply_overrides(get_preset("tiny"), over)


class DropoutMMV(nn.Module):
    """The tiny MMV in float64 whose embeddings pass through dropout (``p``): its output depends on the RNG."""

    def __init__(self, cfg: Config, p: float = 0.2) -> None:
        super().__init__()
        from mmv_torch.models.mmv import MMV

        self.mmv = MMV(cfg.model).double()
        self.p = p

    def forward(self, **inputs: torch.Tensor) -> dict:
        emb = self.mmv(**inputs)
        return {m: {s: F.dropout(t, self.p, self.training) for s, t in spaces.items()} for m, spaces in emb.items()}


def make_model(cfg: Config, seed: int = 0, p: float = 0.2) -> nn.Module:
    """A seeded :class:`DropoutMMV` in training mode."""
    torch.manual_seed(seed)
    return DropoutMMV(cfg, p).train()


def micro_batches(n_micro: int, b: int, k: int = 3, seed: int = 1, first_index: int = 0) -> list[Batch]:
    """``n_micro`` batches of ``b`` clips (pairs of clips share a video ``index``), with clips without audio, a
    silent audio window, a clip without narration and padded candidates."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for m in range(n_micro):
        has_audio = torch.rand(b, generator=g) > 0.25
        text_mask = torch.rand(b, k, generator=g) > 0.3
        text_mask[:, 0] |= m % 2 == 0
        audio = torch.randn(b, 1, 24, 16, generator=g, dtype=torch.float64)
        if m == 1:
            audio[0] = -13.8  # digital silence: a flat log-mel window
            has_audio[0] = True
            text_mask[b - 1] = False
        base = first_index + m * b // 2
        out.append({"video": torch.rand(b, 3, 4, 24, 24, generator=g, dtype=torch.float64), "audio": audio,
                    "has_audio": has_audio, "text": torch.randint(1, 1000, (b, k, 5), generator=g),
                    "text_mask": text_mask, "word_mask": torch.ones(b, k, 5, dtype=torch.bool),
                    "index": torch.arange(base, base + b // 2).repeat_interleave(2)})
    return out


def loss_of(cfg: Config):
    """``loss_fn(emb, side)`` of :func:`cached_accumulate`: :func:`mmv_loss` without the ``silent`` entry."""
    def loss_fn(emb: dict, side: dict) -> tuple[torch.Tensor, dict]:
        return mmv_loss(emb, cfg.loss, **{k: v for k, v in side.items() if k != "silent"})
    return loss_fn


def reference_step(model: nn.Module, batches: list[Batch], cfg: Config, order: list[int] | None = None
                   ) -> torch.Tensor:
    """One graph: every micro-batch embedded with its graph (its own BatchNorm statistics), the embeddings
    concatenated (rows in ``order``, default as given) and ONE loss backpropagated; returns the loss."""
    outs = [mmv_forward(model, b, cfg) for b in batches]
    emb, side = concat_embeddings([o[0] for o in outs]), concat_side([o[1] for o in outs])
    if order is not None:
        idx = torch.tensor(order)
        emb = {m: {s: t[idx] for s, t in sp.items()} for m, sp in emb.items()}
        side = {k: None if v is None else v[idx] for k, v in side.items()}
    loss, _ = loss_of(cfg)(emb, side)
    loss.backward()
    return loss.detach()


def cached_step(model: nn.Module, batches: list[Batch], cfg: Config,
                sync=lambda last: contextlib.nullcontext()) -> torch.Tensor:
    """The gradient-cached step on ``batches``; returns the loss."""
    loss, _, _ = cached_accumulate(model, batches, lambda m, b: mmv_forward(m, b, cfg), loss_of(cfg),
                                   device=torch.device("cpu"), sync=sync)
    return loss


def grads_and_buffers(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Parameter gradients and buffers (BatchNorm running statistics) by name, cloned."""
    return {"grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            "buffers": {n: b.clone() for n, b in model.named_buffers()}}


def ddp_worker(rank: int, world: int, loss_kw: dict[str, Any], n_micro: int, b: int) -> dict:
    """One rank: the seeded model with SyncBatchNorm under DDP, the cached step on this rank's micro-batches
    (rank r holds micro-batches ``micro_batches(n_micro, b, seed=10 + r)``)."""
    from mmv_torch.train.loop import wrap_for_ddp

    cfg = small_cfg(**loss_kw)
    model = make_model(cfg, p=0.0)  # dropout draws would differ per rank
    ddp = wrap_for_ddp(model, torch.device("cpu"))  # SyncBatchNorm + DDP as the loop wraps it
    assert any(isinstance(m, dist.SyncBatchNorm) for m in model.modules())
    torch.manual_seed(100)
    batches = micro_batches(n_micro, b, seed=10 + rank, first_index=1000 * rank)
    loss = cached_step(ddp, batches, cfg, sync=lambda last: contextlib.nullcontext() if last else ddp.no_sync())
    return {"loss": loss, **grads_and_buffers(model)}
