"""Building blocks shared by the towers: TF-'SAME' convolutions and pools, self-gating,
space-to-depth and the official temporal shift.

TensorFlow/XLA 'SAME' padding puts the odd extra pixel at the END of each axis; PyTorch's
``padding=k//2`` is symmetric. The two agree only when the total padding is even, so these layers
compute the pads from the runtime input size and pad asymmetrically when needed. Max-pools pad with
``-inf`` so padded cells never win.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding ``(before, after)`` of one axis of length ``size``.

    ``out = ceil(size / stride)``; the total padding is ``max((out-1)*stride + k_eff - size, 0)``
    with the extra pixel after.
    """
    k_eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def _tuple(v: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def _pad_arg(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...]) -> tuple[list[int], bool]:
    """``F.pad`` argument (last axis first) and whether the pads are symmetric on every axis."""
    pads: list[int] = []
    symmetric = True
    for n, k, s, d in zip(reversed(sizes), reversed(kernel), reversed(stride), reversed(dilation)):
        b, a = same_pads(n, k, s, d)
        pads += [b, a]
        symmetric &= b == a
    return pads, symmetric


class _ConvSame:
    """Mixin: TF-'SAME' padding for ``nn.ConvNd``. Symmetric cases use the conv's own padding."""

    def _same_forward(self, x: torch.Tensor, nd: int) -> torch.Tensor:
        conv = self  # type: ignore[assignment]
        sizes = tuple(x.shape[-nd:])
        pads, symmetric = _pad_arg(sizes, conv.kernel_size, conv.stride, conv.dilation)
        if symmetric:
            padding = tuple(pads[2 * (nd - 1 - i)] for i in range(nd))
            return conv._conv_forward_padded(x, padding)  # type: ignore[attr-defined]
        return conv._conv_forward_padded(F.pad(x, pads), (0,) * nd)  # type: ignore[attr-defined]


class Conv3dSame(nn.Conv3d, _ConvSame):
    """``nn.Conv3d`` with TF-'SAME' padding. Input ``(B,C,T,H,W)``, output ``(B,C',ceil(T/s),...)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 3), _tuple(stride, 3), padding=0,
                         bias=bias)

    def _conv_forward_padded(self, x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        return F.conv3d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._same_forward(x, 3)


class Conv2dSame(nn.Conv2d, _ConvSame):
    """``nn.Conv2d`` with TF-'SAME' padding. Input ``(B,C,H,W)``, output ``(B,C',ceil(H/s),ceil(W/s))``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 2), _tuple(stride, 2), padding=0,
                         bias=bias)

    def _conv_forward_padded(self, x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._same_forward(x, 2)


class MaxPoolSame(nn.Module):
    """Max-pool with TF-'SAME' padding by ``-inf`` over the last ``len(kernel)`` axes (2 or 3).

    Input ``(B,C,H,W)`` or ``(B,C,T,H,W)``; output size ``ceil(n / stride)`` per pooled axis.
    """

    def __init__(self, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
        super().__init__()
        if len(kernel) not in (2, 3) or len(kernel) != len(stride):
            raise ValueError(f"kernel {kernel} and stride {stride} must both have 2 or 3 entries")
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel)
        pool = F.max_pool3d if nd == 3 else F.max_pool2d
        pads, symmetric = _pad_arg(tuple(x.shape[-nd:]), self.kernel, self.stride, (1,) * nd)
        # Native pooling pads with -inf but allows at most half the kernel; that covers the symmetric cases.
        if symmetric and all(2 * pads[2 * i] <= k for i, k in enumerate(reversed(self.kernel))):
            padding = tuple(pads[2 * (nd - 1 - i)] for i in range(nd))
            return pool(x, self.kernel, self.stride, padding)
        return pool(F.pad(x, pads, value=-math.inf), self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=SAME(-inf)"


class SelfGating(nn.Module):
    """S3D-G self-gating: ``x * sigmoid(W mean_{T,H,W}(x) + b)`` per channel. ``(B,C,T,H,W)`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.self_gating = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.self_gating(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


def space_to_depth(video: torch.Tensor) -> torch.Tensor:
    """The official S3D space-to-depth input transform, channels-first.

    ``(B,3,T,H,W)`` with T, H, W even → ``(B,24,T/2,H/2,W/2)``. Output channel
    ``((dt*2 + dh)*2 + dw)*3 + c`` holds input channel ``c`` at offset ``(dt, dh, dw)``, exactly as
    ``eval_ucf101.space_to_depth_batch`` orders it in the channels-last layout.
    """
    b, c, t, h, w = video.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"space-to-depth needs even T, H, W; got video of shape {tuple(video.shape)}")
    x = video.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
    # axes: 0 b, 1 c, 2 t', 3 dt, 4 h', 5 dh, 6 w', 7 dw  ->  (b, dt, dh, dw, c, t', h', w')
    x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)


def temporal_shift(x: torch.Tensor, num_frames: int, fraction: float = 0.125) -> torch.Tensor:
    """The official TSM shift ("gpu" version), channels-first.

    ``x`` is ``(B*T, C, H, W)`` with row ``b*T + t``. With ``n = int(C * fraction)`` the output
    channels are the concatenation of
      1. the LAST ``n`` input channels taken from frame ``t+1`` (zero at the last frame),
      2. the middle ``C - 2n`` channels unchanged,
      3. the FIRST ``n`` input channels taken from frame ``t-1`` (zero at the first frame).
    The first and last n-blocks therefore swap places, unlike the in-place shift of most TSM ports.
    """
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"batch*time {bt} is not a multiple of num_frames={num_frames}")
    n = int(c * fraction)
    if n == 0:
        return x
    v = x.reshape(bt // num_frames, num_frames, c, h, w)
    from_next = F.pad(v[:, 1:, c - n:], (0, 0, 0, 0, 0, 0, 0, 1))
    from_prev = F.pad(v[:, :-1, :n], (0, 0, 0, 0, 0, 0, 1, 0))
    out = torch.cat([from_next, v[:, :, n:c - n], from_prev], dim=2)
    return out.reshape(bt, c, h, w)
