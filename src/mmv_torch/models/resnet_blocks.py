"""Pre-activation (ResNet V2) blocks shared by the TSM-ResNet video tower and the audio ResNet.

Both official towers (``mmv/models/tsm_resnet.py`` and ``mmv/models/resnet.py``) use the same
block maths; only the haiku module names differ, and the TSM block additionally shifts the
pre-activation in time before the residual branch. All tensors are ``(N, C, H, W)``; for video
``N = B*T`` with row ``b*T + t``.

Bottleneck block (depth >= 50), submodules in creation order::

    bn_0 -> relu -> preact ─┬─ shortcut_conv (1x1, stride s; block 0 only) ──────────────┐
                            └─ [temporal shift] -> conv_0 1x1 (C/4) -> bn_1 -> relu       │
                               -> conv_1 3x3 stride s (C/4) -> bn_2 -> relu -> conv_2 1x1 (C) ─+─> out

Without ``shortcut_conv`` the shortcut is the raw block input ``x`` (not ``preact``).

Basic block (depth 18/34), the official "1x1 then 3x3" layout::

    bn_0 -> relu -> preact ─┬─ shortcut_conv (1x1, stride s) ───────────────────────────────┐
                            └─ [temporal shift] -> conv_0 1x1 (C) -> bn_1 -> relu
                               -> conv_1 3x3 stride s (C) ─────────────────────────────────────+─> out

Every conv is bias-free with TF-'SAME' padding (:class:`~mmv_torch.models.layers.Conv2dSame`).

With BN in eval mode, ``bn_1`` (and ``bn_2``) are folded into the conv before them (the same affine
map, exact up to float rounding); without autograd on CPU, conv + bias + ReLU is then one oneDNN call,
and the last conv of the residual branch adds the shortcut in the same call. The pre-activation
``bn_0`` stays a BatchNorm: a ReLU separates it from every following conv, and the residual sum
(which the next block needs raw) separates it from the conv before. Training mode is plain
``nn.BatchNorm2d`` (running statistics updated).
Official haiku BN names map as ``__cross_replica_batch_norm`` → ``bn_0``, ``…_1`` → ``bn_1``,
``…_2`` → ``bn_2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.config import BatchNormConfig
from mmv_torch.models.layers import Conv2dSame, fold_bn

# Blocks per group and whether the bottleneck block is used, per depth (official ResNetV2 table).
NUM_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STRIDES = (1, 2, 2, 2)
BOTTLENECK_CHANNELS = (256, 512, 1024, 2048)
BASIC_CHANNELS = (64, 128, 256, 512)


def group_channels(depth: int, width_mult: float) -> tuple[tuple[int, int, int, int], bool]:
    """Output channels of the four groups for ``depth`` scaled by ``width_mult``, and whether the
    bottleneck block is used (depth >= 50)."""
    if depth not in NUM_BLOCKS:
        raise ValueError(f"ResNet depth={depth} is not one of {sorted(NUM_BLOCKS)}")
    bottleneck = depth >= 50
    base = BOTTLENECK_CHANNELS if bottleneck else BASIC_CHANNELS
    chans = tuple(scale_channels(c, width_mult) for c in base)
    if bottleneck and any(c < 4 for c in chans):
        raise ValueError(f"width_mult={width_mult} leaves fewer than 4 channels in a bottleneck group: {chans}")
    return chans, bottleneck  # type: ignore[return-value]


def scale_channels(channels: int, width_mult: float) -> int:
    """``round(channels * width_mult)``; raises ``ValueError`` when that is below 1."""
    c = int(round(channels * width_mult))
    if c < 1:
        raise ValueError(f"width_mult={width_mult} scales {channels} channels to {c} (< 1)")
    return c


def batch_norm_2d(channels: int, bn: BatchNormConfig) -> nn.BatchNorm2d:
    """``nn.BatchNorm2d`` with the project's BN settings."""
    return nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum)


def init_like_haiku(module: nn.Module) -> None:
    """Initialise like the official haiku modules: conv/linear weights truncated normal (±2σ) with
    ``σ = 1/sqrt(fan_in)``, biases 0, BN scale 1 and offset 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = 1.0 / math.sqrt(fan_in)
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _shift_frames(x: torch.Tensor, num_frames: int, n: int) -> torch.Tensor:
    """One-pass official shift of ``(B*T, C, H, W)`` by ``n`` channels each way, keeping the memory
    format (channels_last in, channels_last out). No autograd bookkeeping: see :class:`_TemporalShift`."""
    bt, c, h, w = x.shape
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if nhwc:
        v = x.permute(0, 2, 3, 1).reshape(bt // num_frames, num_frames, h, w, c)
        cd = 4
    else:
        v = x.reshape(bt // num_frames, num_frames, c, h, w)
        cd = 2
    out = torch.empty_like(v)
    # Part 1: last n channels from frame t+1, zero at the last frame.
    out.narrow(cd, 0, n)[:, :-1] = v.narrow(cd, c - n, n)[:, 1:]
    out.narrow(cd, 0, n)[:, -1] = 0
    # Part 2: middle channels unchanged.
    out.narrow(cd, n, c - 2 * n).copy_(v.narrow(cd, n, c - 2 * n))
    # Part 3: first n channels from frame t-1, zero at the first frame.
    out.narrow(cd, c - n, n)[:, 1:] = v.narrow(cd, 0, n)[:, :-1]
    out.narrow(cd, c - n, n)[:, 0] = 0
    if nhwc:
        return out.reshape(bt, h, w, c).permute(0, 3, 1, 2)
    return out.reshape(bt, c, h, w)


class _TemporalShift(torch.autograd.Function):
    """The shift is a symmetric linear map (its matrix equals its transpose: it sends (last block,
    frame t+1) to (first block, frame t) and (first block, frame t-1) to (last block, frame t)), so
    its backward is the same shift applied to the gradient. This avoids the full-size zero tensors
    that autograd's slice-assignment backward would allocate."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num_frames: int, n: int) -> torch.Tensor:  # type: ignore[override]
        ctx.num_frames, ctx.n = num_frames, n
        return _shift_frames(x, num_frames, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return _shift_frames(grad, ctx.num_frames, ctx.n), None, None


def _shift(x: torch.Tensor, num_frames: int | None, fraction: float) -> torch.Tensor:
    """The official temporal shift of ``(B*T, C, H, W)`` (same values and channel order as
    :func:`~mmv_torch.models.layers.temporal_shift`), written in one pass, with a one-pass backward,
    keeping the memory format of ``x``.

    ``num_frames=None`` or ``fraction=0`` means no shift. Output channels ``[0:n]`` (``n =
    int(C*fraction)``) are the last n input channels of frame t+1, ``[n:C-n]`` the unchanged middle,
    ``[C-n:C]`` the first n input channels of frame t-1 (zeros where the neighbour frame is missing).
    """
    if num_frames is None or fraction == 0.0:
        return x
    bt, c = x.shape[:2]
    if bt % num_frames:
        raise ValueError(f"batch*time {bt} is not a multiple of num_frames={num_frames}")
    n = int(c * fraction)
    if n == 0:
        return x
    return _TemporalShift.apply(x, num_frames, n)


def _conv_bn_relu(conv: Conv2dSame, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(conv(x)))``; with BN in eval mode, BN is folded into the conv (fused ReLU for inference)."""
    folded = fold_bn(conv.weight, bn)
    if folded is None:
        return F.relu(bn(conv(x)), inplace=True)
    return conv.conv(x, *folded, relu=True)


def _conv_add(conv: Conv2dSame, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``conv(x) + shortcut`` (one oneDNN call for inference; ``shortcut`` is not modified)."""
    return conv.conv(x, conv.weight, conv.bias, add=shortcut)


class PreActBottleneck(nn.Module):
    """ResNet V2 bottleneck block, optionally with the official temporal shift (see module doc).

    ``(N, C_in, H, W)`` → ``(N, C, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, use_projection: bool,
                 bn: BatchNormConfig, shift_fraction: float = 0.0) -> None:
        super().__init__()
        mid = channels // 4
        self.shift_fraction = shift_fraction
        self.bn_0 = batch_norm_2d(in_channels, bn)
        self.shortcut_conv = Conv2dSame(in_channels, channels, 1, stride) if use_projection else None
        self.conv_0 = Conv2dSame(in_channels, mid, 1)
        self.bn_1 = batch_norm_2d(mid, bn)
        self.conv_1 = Conv2dSame(mid, mid, 3, stride)
        self.bn_2 = batch_norm_2d(mid, bn)
        self.conv_2 = Conv2dSame(mid, channels, 1)

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``x`` ``(N, C_in, H, W)``; ``num_frames`` = T for the temporal shift (None: no shift)."""
        # In-place ReLU/add act on fresh BN/conv outputs that autograd does not keep.
        preact = F.relu(self.bn_0(x), inplace=True)
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(preact)
        r = _conv_bn_relu(self.conv_0, self.bn_1, _shift(preact, num_frames, self.shift_fraction))
        r = _conv_bn_relu(self.conv_1, self.bn_2, r)
        return _conv_add(self.conv_2, r, shortcut)


class PreActBasicBlock(nn.Module):
    """ResNet V2 basic block in the official 1x1-then-3x3 layout (see module doc).

    ``(N, C_in, H, W)`` → ``(N, C, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, use_projection: bool,
                 bn: BatchNormConfig, shift_fraction: float = 0.0) -> None:
        super().__init__()
        self.shift_fraction = shift_fraction
        self.bn_0 = batch_norm_2d(in_channels, bn)
        self.shortcut_conv = Conv2dSame(in_channels, channels, 1, stride) if use_projection else None
        self.conv_0 = Conv2dSame(in_channels, channels, 1)
        self.bn_1 = batch_norm_2d(channels, bn)
        self.conv_1 = Conv2dSame(channels, channels, 3, stride)

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``x`` ``(N, C_in, H, W)``; ``num_frames`` = T for the temporal shift (None: no shift)."""
        preact = F.relu(self.bn_0(x), inplace=True)
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(preact)
        r = _conv_bn_relu(self.conv_0, self.bn_1, _shift(preact, num_frames, self.shift_fraction))
        return _conv_add(self.conv_1, r, shortcut)


class BlockGroup(nn.Module):
    """A group (official "unit" / "block_group") of blocks ``block_0 … block_{n-1}``.

    Block 0 has the stride; it has a projection shortcut when ``always_project`` (official TSM) or
    when its input and output channel counts differ (official audio ResNetV2).
    ``(N, C_in, H, W)`` → ``(N, C, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int, stride: int, bottleneck: bool,
                 bn: BatchNormConfig, always_project: bool, shift_fraction: float = 0.0) -> None:
        super().__init__()
        block_cls = PreActBottleneck if bottleneck else PreActBasicBlock
        self.num_blocks = num_blocks
        for j in range(num_blocks):
            project = j == 0 and (always_project or in_channels != channels)
            self.add_module(f"block_{j}", block_cls(in_channels if j == 0 else channels, channels,
                                                    stride if j == 0 else 1, project, bn, shift_fraction))

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Run the blocks in order; ``num_frames`` is passed to each block's temporal shift."""
        for j in range(self.num_blocks):
            x = getattr(self, f"block_{j}")(x, num_frames)
        return x
