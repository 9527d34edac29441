"""R(2+1)D video tower (Tran et al., "A Closer Look at Spatiotemporal Convolutions", CVPR 2018).

The paper's R(2+1)D-18 (used by MMV's video-audio R(2+1)D-18 row, 33.3M parameters): every 3x3x3
conv of R3D-18 is factorised into a spatial ``(1,d,d)`` conv to ``M`` channels, BN, ReLU and a
temporal ``(t,1,1)`` conv, with ``M = floor(t·d²·N_in·N_out / (d²·N_in + t·N_out))`` so the
factorised conv has about the parameter count of the 3D one. Post-activation basic blocks
(ResNet v1), projection shortcuts (1x1x1 conv + BN) where the shape changes. No official JAX code
exists, so convs use ordinary symmetric PyTorch padding (``k//2``), as the authors' Caffe2 code.

Input ``(B, 3, T, H, W)``; output ``(B, 512)`` (mean over T, H, W). Structure::

    stem                      conv_s (1,7,7)/(1,2,2) 3→45 → bn_s → ReLU → conv_t (3,1,1) 45→64 → bn_t → ReLU
                              (45 mid channels as in the authors' code)           → (B,64,T,H/2,W/2)
    stage_i  i = 0..3         channels (64,128,256,512), blocks (2,2,2,2) for depth 18 ((1,1,1,1) for 10,
                              (3,4,6,3) for 34), stride (1,2,2,2) in T, H and W in block 0
      block_j
        conv_0 (SpatioTemporalConv: spatial (1,3,3)/(1,s,s) → bn_mid → ReLU → temporal (3,1,1)/(s,1,1))
        bn_0 → ReLU → conv_1 (SpatioTemporalConv, stride 1) → bn_1
        shortcut_conv 1x1x1/s + shortcut_bn (only where channels or stride change)
        out = ReLU(bn_1(...) + shortcut)
    output                    mean over (T, H, W)                                 → (B, 512)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.config import BatchNormConfig, VideoConfig
from mmv_torch.models.resnet_blocks import init_like_haiku

NUM_BLOCKS: dict[int, tuple[int, int, int, int]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
CHANNELS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
STEM_MID_CHANNELS = 45
ENDPOINTS = ("stem", "stage_0", "stage_1", "stage_2", "stage_3", "output")


def mid_channels(in_channels: int, out_channels: int, t: int = 3, d: int = 3) -> int:
    """Mid channels ``floor(t·d²·N_in·N_out / (d²·N_in + t·N_out))`` of a (2+1)D factorisation."""
    return (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels)


def _bn3d(channels: int, bn: BatchNormConfig) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=bn.eps, momentum=bn.momentum)


class SpatioTemporalConv(nn.Module):
    """(2+1)D conv: ``spatial`` (1,3,3)/(1,s,s) → ``bn_mid`` → ReLU → ``temporal`` (3,1,1)/(s,1,1).

    ``(B, C_in, T, H, W)`` → ``(B, C_out, ceil(T/s), ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, bn: BatchNormConfig) -> None:
        super().__init__()
        mid = mid_channels(in_channels, out_channels)
        self.spatial = nn.Conv3d(in_channels, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.bn_mid = _bn3d(mid, bn)
        self.temporal = nn.Conv3d(mid, out_channels, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(F.relu(self.bn_mid(self.spatial(x)), inplace=True))


class R2Plus1DBlock(nn.Module):
    """Post-activation basic block with two (2+1)D convs. ``(B,C_in,T,H,W)`` → ``(B,C,T/s,H/s,W/s)``."""

    def __init__(self, in_channels: int, channels: int, stride: int, bn: BatchNormConfig) -> None:
        super().__init__()
        self.conv_0 = SpatioTemporalConv(in_channels, channels, stride, bn)
        self.bn_0 = _bn3d(channels, bn)
        self.conv_1 = SpatioTemporalConv(channels, channels, 1, bn)
        self.bn_1 = _bn3d(channels, bn)
        if stride != 1 or in_channels != channels:
            self.shortcut_conv: nn.Conv3d | None = nn.Conv3d(in_channels, channels, 1, stride, bias=False)
            self.shortcut_bn: nn.BatchNorm3d | None = _bn3d(channels, bn)
        else:
            self.shortcut_conv = None
            self.shortcut_bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU/add act on fresh BN outputs that autograd does not keep.
        r = self.bn_1(self.conv_1(F.relu(self.bn_0(self.conv_0(x)), inplace=True)))
        if self.shortcut_conv is not None and self.shortcut_bn is not None:
            x = self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(r.add_(x), inplace=True)


class R2Plus1DStem(nn.Module):
    """``conv_s`` (1,7,7)/(1,2,2) → ``bn_s`` → ReLU → ``conv_t`` (3,1,1) → ``bn_t`` → ReLU.

    ``(B,3,T,H,W)`` → ``(B,64,T,ceil(H/2),ceil(W/2))``.
    """

    def __init__(self, bn: BatchNormConfig, in_channels: int = 3, out_channels: int = 64,
                 mid: int = STEM_MID_CHANNELS) -> None:
        super().__init__()
        self.conv_s = nn.Conv3d(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
        self.bn_s = _bn3d(mid, bn)
        self.conv_t = nn.Conv3d(mid, out_channels, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.bn_t = _bn3d(out_channels, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_t(self.conv_t(F.relu(self.bn_s(self.conv_s(x)), inplace=True))), inplace=True)


class R2Plus1D(nn.Module):
    """R(2+1)D video tower (see module doc). ``(B,3,T,H,W)`` → ``(B, out_dim)``, ``out_dim = 512·w``.

    Args:
        cfg: video config; uses ``depth`` (10/18/34) and ``width_mult`` (scales stage channels).
        bn: BatchNorm settings.
        channels_last: run in ``torch.channels_last_3d`` memory format.
    """

    def __init__(self, cfg: VideoConfig, bn: BatchNormConfig, channels_last: bool = True) -> None:
        super().__init__()
        if cfg.depth not in NUM_BLOCKS:
            raise ValueError(f"video.depth={cfg.depth} is not an R(2+1)D depth {sorted(NUM_BLOCKS)}")
        chans = [int(round(c * cfg.width_mult)) for c in CHANNELS]
        if min(chans) < 1:
            raise ValueError(f"video.width_mult={cfg.width_mult} leaves an empty stage: {chans}")
        self.channels_last = channels_last
        stem_mid = max(1, int(round(STEM_MID_CHANNELS * cfg.width_mult)))
        self.stem = R2Plus1DStem(bn, out_channels=chans[0], mid=stem_mid)
        in_c = chans[0]
        for i, (c, n, s) in enumerate(zip(chans, NUM_BLOCKS[cfg.depth], STRIDES)):
            stage = nn.Sequential()
            for j in range(n):
                stage.add_module(f"block_{j}", R2Plus1DBlock(in_c, c, s if j == 0 else 1, bn))
                in_c = c
            self.add_module(f"stage_{i}", stage)
        self.out_dim = in_c
        init_like_haiku(self)

    def _run(self, video: torch.Tensor, endpoints: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"R2Plus1D expects video (B,3,T,H,W), got shape {tuple(video.shape)}")
        x = video.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else video
        x = self.stem(x)
        if endpoints is not None:
            endpoints["stem"] = x
        for i in range(4):
            x = getattr(self, f"stage_{i}")(x)
            if endpoints is not None:
                endpoints[f"stage_{i}"] = x
        out = x.mean(dim=(2, 3, 4))
        if endpoints is not None:
            endpoints["output"] = out
        return out

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` ``(B,3,T,H,W)`` → ``(B, out_dim)``."""
        return self._run(video, None)

    def forward_endpoints(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """All endpoints: ``stem`` and ``stage_0..3`` ``(B, C, T', H', W')``, ``output`` ``(B, out_dim)``."""
        endpoints: dict[str, torch.Tensor] = {}
        self._run(video, endpoints)
        return endpoints
