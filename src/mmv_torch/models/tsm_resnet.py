"""TSM-ResNetV2: the official MMV video tower ``TSMResNetV2`` (``mmv/models/tsm_resnet.py``).

Input ``(B, 3, T, H, W)`` RGB in [0, 1] (no normalisation), any T; output ``(B, out_dim)`` with
``out_dim = 2048 * width_mult`` (depth >= 50) or ``512 * width_mult`` (depth 18/34). Frames are
processed as images in the ``(B*T, C, H, W)`` layout (row ``b*T + t``), channels_last by default.

Structure (PyTorch name ← official haiku name under ``visual_module/~/TSMResNetV2/``)::

    stem           Conv2dSame 7x7/2, 64w, no bias   ← tsm_resnet_stem        (no BN/ReLU: pre-activation)
    max_pool       3x3/2 TF-SAME, -inf padding      ← (hk.MaxPool, no params)
    unit_i         i = 0..3, blocks (3,4,6,3) for depth 50, channels (256,512,1024,2048)·w,
                   strides (1,2,2,2)                 ← tsm_resnet_unit_i
      block_j      PreActBottleneck (resnet_blocks)  ← block_j
        bn_0/bn_1/bn_2                               ← __cross_replica_batch_norm / _1 / _2
        conv_0/conv_1/conv_2, shortcut_conv (j=0)    ← conv_0/conv_1/conv_2, shortcut_conv
    final_bn       BN → ReLU (= last_conv)           ← __cross_replica_batch_norm
    output         mean over H,W, then over T

In every block the shortcut (1x1 conv on the UNSHIFTED pre-activation in block 0, the raw input
otherwise) bypasses the shift; the residual branch sees the official temporal shift of the
pre-activation (``shift_fraction`` of the channels each way, with the official channel order).

Depth 18/34 (not official for TSM) use the official 1x1-then-3x3 basic block with the same shift
placement and a projection in block 0 of every unit.

``shift=False`` (constructor, or the ``shift`` attribute) or :meth:`TSMResNet.forward_images` turns
the shift off: the network is then a plain ResNetV2 on single frames (the paper's deflation of TSM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.config import BatchNormConfig, VideoConfig
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

ENDPOINTS = ("stem", "max_pool", "unit_0", "unit_1", "unit_2", "unit_3", "last_conv", "output")


class TSMResNet(nn.Module):
    """TSM-ResNetV2 video tower (see module doc). ``(B,3,T,H,W)`` → ``(B, out_dim)``.

    Args:
        cfg: video config; uses ``depth`` (18/34/50/101/152), ``width_mult`` and ``shift_fraction``.
        bn: BatchNorm settings.
        shift: apply the temporal shift (False: plain per-frame ResNetV2).
        channels_last: run the 2D convs in ``torch.channels_last`` memory format (faster on CPU/GPU).
    """

    def __init__(self, cfg: VideoConfig, bn: BatchNormConfig, shift: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__()
        if cfg.depth not in NUM_BLOCKS:
            raise ValueError(f"video.depth={cfg.depth} is not a TSM-ResNet depth {sorted(NUM_BLOCKS)}")
        chans, bottleneck = group_channels(cfg.depth, cfg.width_mult)
        self.depth = cfg.depth
        self.shift = shift
        self.shift_fraction = cfg.shift_fraction
        self.channels_last = channels_last
        stem_c = scale_channels(64, cfg.width_mult)
        self.stem = Conv2dSame(3, stem_c, 7, 2)
        self.max_pool = MaxPoolSame((3, 3), (2, 2))
        in_c = stem_c
        for i, (c, n, s) in enumerate(zip(chans, NUM_BLOCKS[cfg.depth], STRIDES)):
            self.add_module(f"unit_{i}", BlockGroup(in_c, c, n, s, bottleneck, bn, always_project=True,
                                                    shift_fraction=cfg.shift_fraction))
            in_c = c
        self.final_bn = batch_norm_2d(in_c, bn)
        self.out_dim = in_c
        init_like_haiku(self)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,T,H,W)`` → ``(B*T,3,H,W)`` (row ``b*T + t``) in the chosen memory format."""
        b, c, t, h, w = x.shape
        if self.channels_last:
            # One copy into NHWC order; the permuted view is a channels_last (B*T,C,H,W) tensor.
            return x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        return x.transpose(1, 2).reshape(b * t, c, h, w)

    def _run(self, x: torch.Tensor, num_frames: int, shift: bool,
             endpoints: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Frames ``(B*T,3,H,W)`` → ``(B, out_dim)``; fills ``endpoints`` when given."""
        nf = num_frames if shift else None
        x = self.stem(x)
        if endpoints is not None:
            endpoints["stem"] = x
        x = self.max_pool(x)
        if endpoints is not None:
            endpoints["max_pool"] = x
        for i in range(4):
            x = getattr(self, f"unit_{i}")(x, nf)
            if endpoints is not None:
                endpoints[f"unit_{i}"] = x
        x = F.relu(self.final_bn(x), inplace=True)
        if endpoints is not None:
            endpoints["last_conv"] = x
        x = x.mean(dim=(2, 3))
        out = x.reshape(-1, num_frames, x.shape[1]).mean(dim=1)
        if endpoints is not None:
            endpoints["output"] = out
        return out

    @staticmethod
    def _check_video(video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"TSMResNet expects video (B,3,T,H,W), got shape {tuple(video.shape)}")

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` ``(B,3,T,H,W)`` in [0,1] → ``(B, out_dim)`` (mean over frames of pooled features)."""
        self._check_video(video)
        return self._run(self._frames(video), video.shape[2], self.shift, None)

    def forward_endpoints(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """All endpoints for ``video`` ``(B,3,T,H,W)``.

        ``stem``, ``max_pool``, ``unit_0..3`` and ``last_conv`` (after the final BN/ReLU, as
        official) are ``(B*T, C, H', W')`` with row ``b*T + t``; ``output`` is ``(B, out_dim)``.
        """
        self._check_video(video)
        endpoints: dict[str, torch.Tensor] = {}
        self._run(self._frames(video), video.shape[2], self.shift, endpoints)
        return endpoints

    def forward_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B,3,H,W)`` → ``(B, out_dim)`` with the shift off (deflated TSM = ResNetV2)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"TSMResNet.forward_images expects (B,3,H,W), got shape {tuple(images.shape)}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._run(images, 1, False, None)
