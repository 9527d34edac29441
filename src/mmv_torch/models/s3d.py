"""S3D-G video backbone, as the official MMV release (``mmv/models/s3d.py``).

Input: channels-first RGB video ``(B, 3, T, H, W)`` in [0, 1]. With the space-to-depth stem the
model transforms the clip itself (T, H, W must be even); an already transformed 24-channel clip
``(B, 24, T/2, H/2, W/2)`` (what the official eval feeds) is accepted as well. Output: the pooled
``Embeddings`` vector ``(B, 1024 * width_mult)``.

Module structure (state_dict names; ``N`` = a unit below)::

    conv2d_1a_7x7      Unit3D   conv, bn                     stem: (2,4,4)/1 on 24 ch or (7,7,7)/2 on 3 ch
    maxpool_2a_3x3     MaxPoolSame (1,3,3)/(1,2,2)           no params
    conv2d_2b_1x1      Unit3D   conv, bn
    conv2d_2c_3x3      Unit3D   conv, bn, conv_t, bn_t, gating.self_gating
    maxpool_3a_3x3     MaxPoolSame (1,3,3)/(1,2,2)
    mixed_3b, mixed_3c                         InceptionBlock3D (below)
    maxpool_4a_3x3     MaxPoolSame (3,3,3)/(2,2,2)
    mixed_4b ... mixed_4f                      InceptionBlock3D
    maxpool_5a_2x2     MaxPoolSame (2,2,2)/(2,2,2)
    mixed_5b, mixed_5c                         InceptionBlock3D

    InceptionBlock3D children (the official branch module names lower-cased):
      branch_0_conv2d_0a_1x1   Unit3D conv, bn, gating.self_gating
      branch_1_conv2d_0a_1x1   Unit3D conv, bn
      branch_1_conv2d_0b_3x3   Unit3D conv, bn, conv_t, bn_t, gating.self_gating
      branch_2_conv2d_0a_1x1   Unit3D conv, bn
      branch_2_conv2d_0b_3x3   Unit3D conv, bn, conv_t, bn_t, gating.self_gating
      branch_3_maxpool_0a_3x3  MaxPoolSame (3,3,3)/1, no params
      branch_3_conv2d_0b_1x1   Unit3D conv, bn, gating.self_gating

Official haiku → this module, inside a unit: ``~/conv3_d/w`` → ``conv.weight``,
``__cross_replica_batch_norm`` → ``bn``, ``~/conv3_d_1/w`` → ``conv_t.weight``,
``__cross_replica_batch_norm_1`` → ``bn_t``, ``self_gating/{w,b}`` → ``gating.self_gating.{weight,bias}``.
``conv``/``bn`` is the spatial ``(1,k,k)`` part of a separable unit and ``conv_t``/``bn_t`` its
temporal ``(3,1,1)`` part; ``gating`` exists only where the official model gates (with
``s3d_gating=False`` it is absent everywhere).

Speed (the default path; nothing to switch on):

- ``forward`` moves the input to ``channels_last_3d`` (the fast layout for oneDNN on CPU and cuDNN on
  GPU) and the parameters are created in that layout, so every activation stays channels-last.
- Separable ``(1,3,3)``/``(3,1,1)`` convs run as 2-D convs on free views (frames, resp. time x
  pixels); symmetric SAME pads go into the conv, only the stem pads its asymmetric remainder; the
  -inf SAME max-pools use native padding + ``ceil_mode`` and are split into a spatial and a temporal
  2-D pool (exact). See :mod:`mmv_torch.models.layers`.
- The three 1x1 units of an inception block that read the same input run as one conv.
- Eval-mode BN is folded into the conv; without autograd (inference) conv+bias+ReLU is one oneDNN
  call on CPU, gating multiplies in place and every branch writes into its slice of the block output
  (no concat copy). Training mode uses plain ``nn.BatchNorm3d`` semantics (running stats updated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.config import BatchNormConfig, VideoConfig
from mmv_torch.models.layers import Conv3dSame, MaxPoolSame, SelfGating, space_to_depth

ENDPOINTS = (
    "Conv2d_1a_7x7", "MaxPool_2a_3x3", "Conv2d_2b_1x1", "Conv2d_2c_3x3", "MaxPool_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool_5a_2x2", "Mixed_5b", "Mixed_5c", "Embeddings",
)
"""Official endpoint names in network order (valid ``final_endpoint`` values)."""

# Official inception output channels (b0, b1a, b1b, b2a, b2b, b3) per block.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "MaxPool_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

S2D_CHANNELS = 24
"""Input channels after space-to-depth (3 colours x 2x2x2 offsets)."""


def scaled(channels: int, width_mult: float) -> int:
    """Channel count ``channels`` scaled by ``width_mult``, rounded, at least 1."""
    return max(1, int(round(channels * width_mult)))


class Unit3D(nn.Module):
    """Official ``SUnit3D``: conv + BN + ReLU, or separable ``(1,k,k)`` then ``(kt,1,1)``, then gating.

    ``(B, C_in, T, H, W)`` → ``(B, C_out, ceil(T/st), ceil(H/sh), ceil(W/sw))``. A unit is separable
    when ``separable`` is set and the spatial kernel is not 1; the spatial conv then carries the
    stride and the temporal conv has stride 1 (as in the official code, whose separable units all
    have stride 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1), separable: bool = False, gating: bool = False,
                 bn: BatchNormConfig | None = None) -> None:
        super().__init__()
        bn = bn or BatchNormConfig()
        kt, kh, kw = kernel
        self.separable = separable and (kh, kw) != (1, 1)
        spatial = (1, kh, kw) if self.separable else kernel
        self.conv = Conv3dSame(in_channels, out_channels, spatial, stride)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn.eps, momentum=bn.momentum)
        if self.separable:
            self.conv_t = Conv3dSame(out_channels, out_channels, (kt, 1, 1), 1)
            self.bn_t = nn.BatchNorm3d(out_channels, eps=bn.eps, momentum=bn.momentum)
        self.gating = SelfGating(out_channels) if gating else None

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` → the unit's output; with ``out`` (only without autograd) it is written into ``out``."""
        x = _conv_bn_relu(self.conv, self.bn, x)
        if self.separable:
            x = _conv_bn_relu(self.conv_t, self.bn_t, x)
        return self.finish(x, out)

    def finish(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Self-gating (if any) of the post-ReLU activation ``x``; written into ``out`` when given."""
        if self.gating is not None:
            gate = self.gating.gate(x)
            if out is not None:
                return torch.mul(x, gate, out=out)
            return x.mul_(gate) if not torch.is_grad_enabled() else x * gate
        return x if out is None else out.copy_(x)


def _conv_bn_relu(conv: Conv3dSame, bn: nn.BatchNorm3d, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(conv(x)))``; with BN in eval mode, BN is folded into the conv weight and bias.

    Folding is exact up to float rounding (the same affine map), saves a full pass over the
    activation, and keeps gradients to the conv weight and the BN affine parameters.
    """
    if bn.training or bn.running_var is None or bn.running_mean is None or bn.weight is None:
        return torch.relu_(bn(conv(x)))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    return conv.conv(x, conv.weight * scale[:, None, None, None, None], bias, relu=True)


class InceptionBlock3D(nn.Module):
    """Official ``InceptionBlockV13D``: four branches concatenated on channels, all strides 1.

    ``(B, C_in, T, H, W)`` → ``(B, b0 + b1b + b2b + b3, T, H, W)``. The last unit of every branch is
    self-gated when ``gating`` is set; the 1x1 reductions of branches 1 and 2 are not.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int], gating: bool,
                 bn: BatchNormConfig) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = channels
        one, three = (1, 1, 1), (3, 3, 3)
        self.branch_0_conv2d_0a_1x1 = Unit3D(in_channels, b0, one, gating=gating, bn=bn)
        self.branch_1_conv2d_0a_1x1 = Unit3D(in_channels, b1a, one, bn=bn)
        self.branch_1_conv2d_0b_3x3 = Unit3D(b1a, b1b, three, separable=True, gating=gating, bn=bn)
        self.branch_2_conv2d_0a_1x1 = Unit3D(in_channels, b2a, one, bn=bn)
        self.branch_2_conv2d_0b_3x3 = Unit3D(b2a, b2b, three, separable=True, gating=gating, bn=bn)
        self.branch_3_maxpool_0a_3x3 = MaxPoolSame(three, one)
        self.branch_3_conv2d_0b_1x1 = Unit3D(in_channels, b3, one, gating=gating, bn=bn)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The three 1x1 units reading x (branch 0 and the reductions of branches 1, 2) run as one conv.
        y0, y1, y2 = _pointwise_group(
            (self.branch_0_conv2d_0a_1x1, self.branch_1_conv2d_0a_1x1, self.branch_2_conv2d_0a_1x1), x)
        cl = torch.channels_last_3d
        y1, y2 = y1.contiguous(memory_format=cl), y2.contiguous(memory_format=cl)
        y3 = self.branch_3_maxpool_0a_3x3(x)
        if torch.is_grad_enabled():
            return torch.cat([self.branch_0_conv2d_0a_1x1.finish(y0), self.branch_1_conv2d_0b_3x3(y1),
                              self.branch_2_conv2d_0b_3x3(y2), self.branch_3_conv2d_0b_1x1(y3)], dim=1)
        # Inference: every branch writes its (gated) output straight into its slice of the result.
        b, _, t, h, w = x.shape
        fmt = cl if x.is_contiguous(memory_format=cl) else torch.contiguous_format
        out = torch.empty((b, self.out_channels, t, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
        c0 = self.branch_0_conv2d_0a_1x1.conv.out_channels
        c1 = c0 + self.branch_1_conv2d_0b_3x3.conv.out_channels
        c2 = c1 + self.branch_2_conv2d_0b_3x3.conv.out_channels
        self.branch_0_conv2d_0a_1x1.finish(y0, out[:, :c0])
        self.branch_1_conv2d_0b_3x3(y1, out[:, c0:c1])
        self.branch_2_conv2d_0b_3x3(y2, out[:, c1:c2])
        self.branch_3_conv2d_0b_1x1(y3, out[:, c2:])
        return out


def _pointwise_group(units: tuple[Unit3D, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """``relu(bn(conv(x)))`` of several non-separable 1x1x1 units sharing the input ``x``, as ONE conv.

    The weights (and BN parameters/statistics) are concatenated on the output channels, which is the
    same per-channel maths as running the units one by one, but one larger GEMM and one gradient
    into ``x`` instead of three. BN in eval mode is folded; in training, plain ``nn.BatchNorm3d`` runs
    on the concatenated channels and the updated running statistics are copied back into each unit.
    Any other BN (e.g. ``SyncBatchNorm``) falls back to running the units separately.
    Returns the units' outputs ``(B, C_i, T, H, W)`` (channel slices of one tensor).
    """
    bns = [u.bn for u in units]
    sizes = [u.conv.out_channels for u in units]
    conv = units[0].conv
    plain = all(type(bn) is nn.BatchNorm3d and bn.track_running_stats and bn.affine for bn in bns)
    same = len({(bn.eps, bn.momentum, bn.training) for bn in bns}) == 1
    if not (plain and same and bns[0].momentum is not None):
        return [_conv_bn_relu(u.conv, u.bn, x) for u in units]
    weight = torch.cat([u.conv.weight for u in units])
    if not bns[0].training:
        scales = [bn.weight * torch.rsqrt(bn.running_var + bn.eps) for bn in bns]
        bias = torch.cat([bn.bias - bn.running_mean * sc for bn, sc in zip(bns, scales)])
        scale = torch.cat(scales)
        y = conv.conv(x, weight * scale[:, None, None, None, None], bias, relu=True)
        return list(y.split(sizes, dim=1))
    mean = torch.cat([bn.running_mean for bn in bns])
    var = torch.cat([bn.running_var for bn in bns])
    y = F.batch_norm(conv.conv(x, weight, None), mean, var, torch.cat([bn.weight for bn in bns]),
                     torch.cat([bn.bias for bn in bns]), True, bns[0].momentum, bns[0].eps)
    with torch.no_grad():
        for bn, m, v in zip(bns, mean.split(sizes), var.split(sizes)):
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
            bn.num_batches_tracked.add_(1)
    return list(torch.relu_(y).split(sizes, dim=1))


class S3D(nn.Module):
    """S3D-G (or plain S3D) as in the official MMV code; see the module docstring for the structure.

    ``forward``: ``(B, 3, T, H, W)`` RGB in [0, 1] (or ``(B, 24, T/2, H/2, W/2)`` space-to-depth
    input with the s2d stem) → ``(B, out_dim)`` with ``out_dim = 1024 * width_mult`` (rounded per
    branch). The official endpoint shapes for a 32x224x224 clip are in ``docs/official_checkpoints.md`` (S3D-G).
    """

    def __init__(self, cfg: VideoConfig, bn: BatchNormConfig | None = None) -> None:
        super().__init__()
        bn = bn or BatchNormConfig()
        if cfg.backbone != "s3d":
            raise ValueError(f"S3D built from video.backbone={cfg.backbone!r}; expected 's3d'")
        self.stem = cfg.s3d_stem
        self.width_mult = cfg.width_mult
        gating = cfg.s3d_gating
        w = cfg.width_mult
        c64, c192 = scaled(64, w), scaled(192, w)
        if self.stem == "space_to_depth":
            self.conv2d_1a_7x7 = Unit3D(S2D_CHANNELS, c64, (2, 4, 4), (1, 1, 1), bn=bn)
        else:
            self.conv2d_1a_7x7 = Unit3D(3, c64, (7, 7, 7), (2, 2, 2), bn=bn)
        self.maxpool_2a_3x3 = MaxPoolSame(*POOLS["MaxPool_2a_3x3"])
        self.conv2d_2b_1x1 = Unit3D(c64, c64, (1, 1, 1), bn=bn)
        self.conv2d_2c_3x3 = Unit3D(c64, c192, (3, 3, 3), separable=True, gating=gating, bn=bn)
        self.maxpool_3a_3x3 = MaxPoolSame(*POOLS["MaxPool_3a_3x3"])
        channels = c192
        for name in ENDPOINTS[5:-1]:
            if name in POOLS:
                setattr(self, name.lower(), MaxPoolSame(*POOLS[name]))
                continue
            table = tuple(scaled(c, w) for c in INCEPTION_CHANNELS[name])
            block = InceptionBlock3D(channels, table, gating, bn)  # type: ignore[arg-type]
            setattr(self, name.lower(), block)
            channels = block.out_channels
        self.out_dim = channels
        self.to(memory_format=torch.channels_last_3d)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input, apply space-to-depth when needed, move to channels_last_3d."""
        if x.dim() != 5:
            raise ValueError(f"S3D expects video (B, C, T, H, W); got shape {tuple(x.shape)}")
        c = x.shape[1]
        if self.stem == "space_to_depth":
            if c == 3:
                x = space_to_depth(x)
            elif c != S2D_CHANNELS:
                raise ValueError(f"S3D (space_to_depth stem) expects 3 or {S2D_CHANNELS} input channels; "
                                 f"got shape {tuple(x.shape)}")
        elif c != 3:
            raise ValueError(f"S3D (standard stem) expects 3 input channels; got shape {tuple(x.shape)}")
        return x.contiguous(memory_format=torch.channels_last_3d)

    def forward_endpoints(self, x: torch.Tensor, final_endpoint: str = "Embeddings") -> dict[str, torch.Tensor]:
        """Every official endpoint up to ``final_endpoint``, keyed by its official name.

        Feature maps are ``(B, C, T', H', W')`` (channels_last_3d memory); ``Embeddings`` is ``(B, C)``.
        """
        if final_endpoint not in ENDPOINTS:
            raise ValueError(f"unknown S3D endpoint {final_endpoint!r}; valid: {list(ENDPOINTS)}")
        x = self._prepare(x)
        out: dict[str, torch.Tensor] = {}
        for name in ENDPOINTS[:-1]:
            x = getattr(self, name.lower())(x)
            out[name] = x
            if name == final_endpoint:
                return out
        out["Embeddings"] = x.mean(dim=(2, 3, 4))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` or s2d ``(B, 24, T/2, H/2, W/2)`` → pooled features ``(B, out_dim)``."""
        x = self._prepare(x)
        for name in ENDPOINTS[:-1]:
            x = getattr(self, name.lower())(x)
        return x.mean(dim=(2, 3, 4))
