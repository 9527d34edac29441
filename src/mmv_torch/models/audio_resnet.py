"""Audio ResNetV2: the official MMV audio tower (``mmv/models/resnet.py`` ``ResNetV2``).

Input: log-mel spectrogram ``(B, 1, T, F)`` treated as a one-channel image with H = T (time) and
W = F (frequency). Output ``(B, out_dim)`` with ``out_dim = 2048 * width_mult`` (depth 50/101) or
``512 * width_mult`` (depth 18/34).

Structure (PyTorch name ← official haiku name under ``audio_module/~/res_net_v2/``)::

    initial_conv    Conv2dSame 7x7/2, 64w, no bias   ← ~/initial_conv          (no BN/ReLU)
    max_pool        3x3/2 TF-SAME, -inf padding      ← (hk.max_pool, no params)
    block_group_i   i = 0..3, strides (1,2,2,2)      ← ~/block_group_i
      block_j       PreActBottleneck (depth 50/101: (3,4,6,3) / (3,4,23,3) blocks, channels
                    (256,512,1024,2048)·w) or PreActBasicBlock (depth 18/34: (2,2,2,2) / (3,4,6,3),
                    channels (64,128,256,512)·w, official 1x1-then-3x3 layout)
        conv_k, shortcut_conv                        ← block_j/~/conv_k, block_j/~/shortcut_conv
        bn_k (precedes conv_k)                       ← block_j/__cross_replica_batch_norm{,_1,_2}
    final_bn        BN → ReLU                        ← __cross_replica_batch_norm
    output          mean over (H, W)

A block has ``shortcut_conv`` (1x1, stride s, on the pre-activated input) only when it is block 0
of its group and its input and output channel counts differ (official ``use_projection``); so the
basic-block nets have none in ``block_group_0``. Otherwise the shortcut is the raw block input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.config import AudioConfig, BatchNormConfig
from mmv_torch.models.layers import Conv2dSame, MaxPoolSame
from mmv_torch.models.resnet_blocks import (
    NUM_BLOCKS,
    STRIDES,
    BlockGroup,
    batch_norm_2d,
    group_channels,
    init_like_haiku,
    scale_channels,
)

ENDPOINTS = ("initial_conv", "max_pool", "block_group_0", "block_group_1", "block_group_2", "block_group_3",
             "last_conv", "output")


class AudioResNet(nn.Module):
    """ResNetV2 audio tower (see module doc). ``(B,1,T,F)`` → ``(B, out_dim)``.

    Args:
        cfg: audio config; uses ``depth`` (18/34/50/101) and ``width_mult``.
        bn: BatchNorm settings.
        channels_last: run the convs in ``torch.channels_last`` memory format.
    """

    def __init__(self, cfg: AudioConfig, bn: BatchNormConfig, channels_last: bool = True) -> None:
        super().__init__()
        if cfg.depth not in NUM_BLOCKS:
            raise ValueError(f"audio.depth={cfg.depth} is not one of {sorted(NUM_BLOCKS)}")
        chans, bottleneck = group_channels(cfg.depth, cfg.width_mult)
        self.depth = cfg.depth
        self.channels_last = channels_last
        stem_c = scale_channels(64, cfg.width_mult)
        self.initial_conv = Conv2dSame(1, stem_c, 7, 2)
        self.max_pool = MaxPoolSame((3, 3), (2, 2))
        in_c = stem_c
        for i, (c, n, s) in enumerate(zip(chans, NUM_BLOCKS[cfg.depth], STRIDES)):
            self.add_module(f"block_group_{i}", BlockGroup(in_c, c, n, s, bottleneck, bn, always_project=False))
            in_c = c
        self.final_bn = batch_norm_2d(in_c, bn)
        self.out_dim = in_c
        init_like_haiku(self)

    def _run(self, spec: torch.Tensor, endpoints: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if spec.dim() != 4 or spec.shape[1] != 1:
            raise ValueError(f"AudioResNet expects a spectrogram (B,1,T,F), got shape {tuple(spec.shape)}")
        x = spec.contiguous(memory_format=torch.channels_last) if self.channels_last else spec
        x = self.initial_conv(x)
        if endpoints is not None:
            endpoints["initial_conv"] = x
        x = self.max_pool(x)
        if endpoints is not None:
            endpoints["max_pool"] = x
        for i in range(4):
            x = getattr(self, f"block_group_{i}")(x)
            if endpoints is not None:
                endpoints[f"block_group_{i}"] = x
        if endpoints is not None:
            endpoints["last_conv"] = x
        out = F.relu(self.final_bn(x), inplace=True).mean(dim=(2, 3))
        if endpoints is not None:
            endpoints["output"] = out
        return out

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``spec`` ``(B,1,T,F)`` log-mel → ``(B, out_dim)``."""
        return self._run(spec, None)

    def forward_endpoints(self, spec: torch.Tensor) -> dict[str, torch.Tensor]:
        """All endpoints for ``spec`` ``(B,1,T,F)``: maps ``(B, C, H', W')`` for ``initial_conv``
        (before the max-pool), ``max_pool``, ``block_group_0..3`` and ``last_conv`` (BEFORE the final
        BN/ReLU, as official); ``output`` ``(B, out_dim)``."""
        endpoints: dict[str, torch.Tensor] = {}
        self._run(spec, endpoints)
        return endpoints
