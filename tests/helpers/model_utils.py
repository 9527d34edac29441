"""Tiny random checkpoints for evaluation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def noise_calibrated_model(cfg: Any, seed: int = 0, **inputs: torch.Tensor) -> torch.nn.Module:
    """``MMV(cfg.model)`` seeded with ``seed``, its BatchNorm statistics the average over one forward of the
    noise ``inputs`` (with the initial mean 0 / variance 1 a random video tower gives nearly the same embedding
    for every clip, and ranks would be ties)."""
    from mmv_torch.models.mmv import MMV

    torch.manual_seed(seed)
    model = MMV(cfg.model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the one calibration batch
    with torch.no_grad():
        model(**inputs)
    return model


def save_checkpoint_folder(model: torch.nn.Module, cfg: Any, folder: Path) -> Path:
    """``folder`` with ``model.safetensors`` and ``config.json`` (the layout ``convert`` writes)."""
    from safetensors.torch import save_file

    from mmv_torch.config import save_config

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    save_config(cfg, folder / "config.json")
    return folder
