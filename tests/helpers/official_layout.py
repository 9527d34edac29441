"""Test helper: run a model the way the official MMV code does (channels-last numpy inputs, the
official output keys) and record the official intermediate modules in the official layout, to compare
with the arrays in ``tests/assets/official_mmv/``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch.models.mmv import MMV

OUTPUT_KEYS = ("vid_repr", "aud_repr", "vid_embd.toaud", "vid_embd.totxt", "aud_embd.tovid", "aud_embd.totxt",
               "txt_embd.tovid", "txt_embd.toaud")
"""Keys of the official output dict (flattened with '.') returned by :func:`official_outputs`."""

# (modality, space) of this package for each official output key.
_OUTPUT_MAP = {
    "vid_repr": ("video", "repr"), "aud_repr": ("audio", "repr"),
    "vid_embd.toaud": ("video", "va"), "vid_embd.totxt": ("video", "vt"),
    "aud_embd.tovid": ("audio", "va"), "aud_embd.totxt": ("audio", "vt"),
    "txt_embd.tovid": ("text", "vt"), "txt_embd.toaud": ("text", "at"),
}



def _nchw_to_official(t: torch.Tensor) -> np.ndarray:
    x = t.detach()
    if x.dim() == 5:
        x = x.permute(0, 2, 3, 4, 1)
    elif x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    return x.contiguous().cpu().numpy()


def official_intermediate_modules(model: MMV) -> dict[str, nn.Module]:
    """Official intermediate path (without ``text_audio_video/``) → the module recording it."""
    mods: dict[str, nn.Module] = {}
    if model.cfg.video.backbone == "s3d":
        from mmv_torch.models.s3d import ENDPOINTS

        for name in ENDPOINTS[:-1]:
            mods[f"visual_module/~/S3D/{name}"] = getattr(model.video, name.lower())
    elif model.cfg.video.backbone == "tsm_resnet":
        mods["visual_module/~/TSMResNetV2/tsm_resnet_stem"] = model.video.stem
        mods["visual_module/~/TSMResNetV2/max_pool"] = model.video.max_pool
        for i in range(4):
            mods[f"visual_module/~/TSMResNetV2/tsm_resnet_unit_{i}"] = getattr(model.video, f"unit_{i}")
    mods["audio_module/~/res_net_v2/~/initial_conv"] = model.audio.initial_conv
    for i in range(4):
        mods[f"audio_module/~/res_net_v2/~/block_group_{i}"] = getattr(model.audio, f"block_group_{i}")
    mods["text_module/~/embed"] = model.text.embed
    mods["text_module/~/text_conv1"] = model.text.text_conv1
    return mods


@contextlib.contextmanager
def record_intermediates(model: MMV) -> Iterator[dict[str, np.ndarray]]:
    """Context manager: while active, the outputs of the official intermediate modules are stored in
    the yielded dict in the official channels-last layout (NTHWC for S3D, NHWC for TSM with rows
    ``b*T+t`` and for audio, ``[B,N,D]`` for text), keyed as in ``intermediates.npz``."""
    store: dict[str, np.ndarray] = {}
    handles = []
    for name, module in official_intermediate_modules(model).items():
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, name: str = name) -> None:
            store[name] = _nchw_to_official(out)
        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def official_outputs(model: MMV, video: np.ndarray, audio_spectrogram: np.ndarray,
                     word_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` on official-layout numpy inputs and return the official output dict.

    Inputs as the official ``AudioTextVideoEmbedding`` takes them: ``video`` ``[B,T,H,W,C]`` in
    [0,1] (C=3 for TSM; for the space-to-depth S3D the already transformed ``[B,T/2,H/2,W/2,24]``),
    ``audio_spectrogram`` ``[B,T',F,1]``, integer ``word_ids`` ``[B,N]``. Returns ``vid_repr``,
    ``aud_repr``, ``vid_embd.toaud``, ``vid_embd.totxt``, ``aud_embd.tovid``, ``aud_embd.totxt``,
    ``txt_embd.tovid``, ``txt_embd.toaud`` as numpy arrays in the model's dtype. The model must be in
    eval mode (the official eval path; FAC then maps audio into S_vat through the video head).
    """
    if model.training:
        raise ValueError("official_outputs needs the model in eval mode (call model.eval())")
    video, audio_spectrogram, word_ids = map(np.asarray, (video, audio_spectrogram, word_ids))
    if video.ndim != 5:
        raise ValueError(f"video must be [B,T,H,W,C], got shape {list(video.shape)}")
    cv = model.cfg.video
    want_c = 24 if cv.backbone == "s3d" and cv.s3d_stem == "space_to_depth" else 3
    if video.shape[-1] != want_c:
        hint = (" (the released S3D takes the space-to-depth transformed clip, as the official eval script "
                "feeds it; transform [B,T,H,W,3] first, or call the model on (B,3,T,H,W) RGB)") if want_c == 24 else ""
        raise ValueError(f"video has {video.shape[-1]} channels, this model takes {want_c}{hint}")
    if audio_spectrogram.ndim != 4 or audio_spectrogram.shape[-1] != 1:
        raise ValueError(f"audio_spectrogram must be [B,T',F,1], got shape {list(audio_spectrogram.shape)}")
    if word_ids.ndim != 2 or word_ids.dtype.kind not in "iu":
        raise ValueError(f"word_ids must be integer [B,N], got {word_ids.dtype} {list(word_ids.shape)}")
    p = next(model.parameters())
    v = torch.from_numpy(np.ascontiguousarray(video)).to(p.device, p.dtype).permute(0, 4, 1, 2, 3)
    a = torch.from_numpy(np.ascontiguousarray(audio_spectrogram)).to(p.device, p.dtype).permute(0, 3, 1, 2)
    t = torch.from_numpy(word_ids.astype(np.int64)).to(p.device)
    with torch.no_grad():
        emb = model(video=v, audio=a, text=t)
    return {k: emb[m][s].detach().cpu().numpy() for k, (m, s) in _OUTPUT_MAP.items()}
