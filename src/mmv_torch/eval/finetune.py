"""Fine-tuning: a video backbone plus a linear head trained end to end on a labelled set.

A small explicit loop (eval/ may not import the training loop of ``train.py``): AdamW with a cosine
schedule over all steps, separate learning rates for the backbone and the head, an atomic checkpoint
at the end of every epoch (``<out_dir>/finetune.pt``, written to a temporary file and renamed),
resume from it, and a JSONL log (``<out_dir>/finetune_log.jsonl``). Test accuracy averages the
logits over the windows of each video.

Batches: training ``{"video": (B, 3, T, H, W), "label": (B,)}``; test ``{"video": (B, V, 3, T, H, W)
or (B, 3, T, H, W), "label": (B,)}``.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.eval.metrics import topk_accuracy
from mmv_torch.fileio import atomic_torch_save
from mmv_torch.runs import Interrupted, StopSignals

CHECKPOINT = "finetune.pt"
LOG = "finetune_log.jsonl"


class VideoClassifier(nn.Module):
    """``backbone`` ``(B, 3, T, H, W)`` → ``(B, D)`` followed by a linear head → logits ``(B, num_classes)``."""

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None) -> None:
        super().__init__()
        dim = feature_dim if feature_dim is not None else getattr(backbone, "out_dim", None)
        if dim is None:
            raise ValueError("VideoClassifier: backbone has no out_dim; pass feature_dim")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.backbone = backbone
        self.head = nn.Linear(int(dim), num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(video))


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Iterable[Mapping[str, Any]],
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1/top-5 with logits averaged over the V windows of each test video (eval mode)."""
    was = model.training
    model.eval()
    scores, labels = [], []
    for batch in loader:
        x = torch.as_tensor(batch["video"])
        if x.dim() == 5:
            x = x[:, None]
        if x.dim() != 6:
            raise ValueError(f"test video batch must be (B, 3, T, H, W) or (B, V, 3, T, H, W); got {tuple(x.shape)}")
        b, v = x.shape[:2]
        logits = model(x.reshape(b * v, *x.shape[2:]).to(device)).float().reshape(b, v, -1).mean(dim=1)
        scores.append(logits.cpu().numpy())
        labels.append(np.asarray(torch.as_tensor(batch["label"]).cpu()))
    model.train(was)
    if not scores:
        raise ValueError("evaluate_classifier: the loader yielded no batches")
    return topk_accuracy(np.concatenate(scores), np.concatenate(labels))


def _log(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(dict(record)) + "\n")


def _restore(path: Path, model: nn.Module, opt: torch.optim.Optimizer, num_classes: int, dev: torch.device
             ) -> tuple[int, int, list[dict[str, Any]], dict[str, Any] | None]:
    """Load a fine-tuning checkpoint into ``model`` and ``opt`` (and the torch RNG): (first epoch to run,
    step, history, the position inside that epoch when a signal stopped it, else None)."""
    try:
        state = torch.load(path, map_location=dev, weights_only=False)
    except Exception as e:  # truncated zip, unpickling error, ...
        raise ValueError(f"{path} cannot be read: {type(e).__name__}: {e}") from e
    saved = state["model"]["head.weight"].shape[0]
    if saved != num_classes:
        raise ValueError(f"{path} fine-tunes {saved} classes, the data now have {num_classes}: resume with the "
                         "same data, or choose another --out")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state["epoch"] + 1, state["step"], state["history"], state.get("partial")


def finetune(backbone: nn.Module, train_loader: Iterable[Mapping[str, Any]], test_loader: Iterable[Mapping[str, Any]],
             num_classes: int, out_dir: str | Path, epochs: int = 10, lr: float = 1e-3,
             backbone_lr: float | None = None, weight_decay: float = 1e-4, warmup_steps: int = 0,
             resume: bool = True, device: torch.device | str = "cpu", log_every: int = 10,
             seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``backbone`` + a linear head; returns ``{"task", "metrics", "settings", "history"}``.

    ``lr`` is the head's peak learning rate and ``backbone_lr`` the backbone's (default ``lr / 10``);
    both follow linear warm-up then cosine decay over ``epochs * len(train_loader)`` steps. With
    ``resume`` an existing ``<out_dir>/finetune.pt`` is loaded and training continues after its
    epoch (the result equals an uninterrupted run when the loader is deterministic per epoch).
    SIGINT or SIGTERM stop after the step in progress: the checkpoint then records the position inside
    the epoch (and the RNG state its shuffle started from), a resume replays the epoch's first batches
    without training on them, and :class:`~mmv_torch.runs.Interrupted` is raised.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = VideoClassifier(backbone, num_classes).to(dev)
    backbone_lr = lr / 10 if backbone_lr is None else backbone_lr
    opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": backbone_lr},
                             {"params": model.head.parameters(), "lr": lr}], weight_decay=weight_decay)
    peaks = [backbone_lr, lr]
    try:
        steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("finetune needs a train loader with a length (for the cosine schedule)") from None
    total = epochs * steps_per_epoch
    ckpt_path = out / CHECKPOINT
    start_epoch, step, history, partial = 0, 0, [], None
    if resume and ckpt_path.is_file():
        start_epoch, step, history, partial = _restore(ckpt_path, model, opt, num_classes, dev)
    log_path = out / LOG

    def lr_factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup_steps) / max(1, total - warmup_steps))))

    stop = StopSignals()
    with stop:
        for epoch in range(start_epoch, epochs):
            model.train()
            t0, losses, skip = time.time(), [], 0
            epoch_rng = torch.get_rng_state()  # what the loader's shuffle draws from, kept for a mid-epoch stop
            if partial is not None and partial["epoch"] == epoch:
                losses, skip = list(partial["losses"]), int(partial["batches"])
            for i, batch in enumerate(train_loader):
                if i < skip:  # batches done before the stop: replayed in the same order, not trained again
                    continue
                for group, peak in zip(opt.param_groups, peaks):
                    group["lr"] = peak * lr_factor(step)
                x = torch.as_tensor(batch["video"]).to(dev)
                y = torch.as_tensor(batch["label"]).long().to(dev)
                loss = F.cross_entropy(model(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"fine-tuning loss is {float(loss)} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                if step % log_every == 0:
                    _log(log_path, {"step": step, "epoch": epoch, "loss": losses[-1],
                                    "lr": opt.param_groups[1]["lr"]})
                if stop.requested and i + 1 < steps_per_epoch:
                    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch - 1,
                                       "step": step, "history": history, "rng": epoch_rng,
                                       "partial": {"epoch": epoch, "batches": i + 1, "losses": losses}}, ckpt_path)
                    raise Interrupted(step, stop.signum or signal.SIGTERM, ckpt_path)
            acc = evaluate_classifier(model, test_loader, dev)
            record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                      "test_top1": acc["top1"], "test_top5": acc["top5"], "seconds": time.time() - t0}
            history.append(record)
            _log(log_path, record)
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                               "step": step, "history": history, "rng": torch.get_rng_state()}, ckpt_path)
            if stop.requested and epoch + 1 < epochs:
                raise Interrupted(step, stop.signum or signal.SIGTERM, ckpt_path)
    final = history[-1]
    return {"task": "finetune",
            "metrics": {"test_top1": final["test_top1"], "test_top5": final["test_top5"],
                        "train_loss": final["train_loss"]},
            "settings": {"epochs": epochs, "lr_head": lr, "lr_backbone": backbone_lr, "weight_decay": weight_decay,
                         "warmup_steps": warmup_steps, "schedule": "cosine", "optimizer": "AdamW",
                         "num_classes": num_classes, "score_averaging": "logits mean over windows",
                         "checkpoint": str(ckpt_path)},
            "history": history, "model": model}
