"""Building blocks shared by the towers: TF-'SAME' convolutions and pools, self-gating,
space-to-depth and the official temporal shift.

TensorFlow/XLA 'SAME' padding puts the odd extra pixel at the END of each axis; PyTorch's
``padding=k//2`` is symmetric. The two agree only when the total padding is even, so these layers
compute the pads from the runtime input size and pad asymmetrically when needed. Max-pools pad with
``-inf`` so padded cells never win.
"""

from __future__ import annotations

import math
from typing import Any

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


def _is_channels_last_3d(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)


def _frames_view(x: torch.Tensor) -> torch.Tensor:
    """``(B,C,T,H,W)`` channels_last_3d → ``(B*T,C,H,W)`` channels_last, without a copy.

    Built through the dense ``(B,T,H,W,C)`` view so that size-1 axes get canonical strides (with odd
    strides on a size-1 batch, PyTorch's layout heuristics stop seeing the view as channels-last).
    """
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)


def _unframes_view(y: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of :func:`_frames_view`: ``(B*T,C,H,W)`` channels_last → ``(B,C,T,H,W)`` channels_last_3d."""
    bt, c, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, bt // b, h, w, c).permute(0, 4, 1, 2, 3)


def _time_view(x: torch.Tensor) -> torch.Tensor:
    """``(B,C,T,H,W)`` channels_last_3d → ``(B,C,T,H*W)`` channels_last, without a copy."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b, t, h * w, c).permute(0, 3, 1, 2)


def _untime_view(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_time_view`."""
    b, c, t, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class Conv3dSame(nn.Conv3d):
    """``nn.Conv3d`` with TF-'SAME' padding. Input ``(B,C,T,H,W)``, output ``(B,C',ceil(T/s),...)``.

    Symmetric pads go into the convolution itself; only an asymmetric remainder is padded with
    ``F.pad``. On channels_last_3d inputs, ``(1,k,k)`` and ``(k,1,1)`` kernels run as 2-D convolutions
    on free views (frames ``(B*T,C,H,W)``, resp. ``(B,C,T,H*W)``): the same maths, but it keeps
    oneDNN's fast path for batch 1, where PyTorch would pick its slow native 3-D kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 3), _tuple(stride, 3), padding=0,
                         bias=bias)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             relu: bool = False) -> torch.Tensor:
        """This layer's SAME convolution with the given ``weight``/``bias`` (e.g. BN-folded ones).

        ``relu=True`` applies a ReLU to the result (fused into the oneDNN call when no gradient is needed).
        """
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        (t0, t1), (h0, h1), (w0, w1) = (same_pads(n, k, s, d) for n, k, s, d in
                                        zip(x.shape[-3:], self.kernel_size, self.stride, self.dilation))
        if (t0, h0, w0) != (t1, h1, w1):
            # Pad only the asymmetric remainder; the symmetric part goes into the conv.
            x = F.pad(x, (0, w1 - w0, 0, h1 - h0, 0, t1 - t0))
        if self.dilation == (1, 1, 1) and self.groups == 1 and _is_channels_last_3d(x) and x.shape[0] > 0:
            if kt == 1 and st == 1:
                y = _conv2d(_frames_view(x), weight[:, :, 0], bias, (sh, sw), (h0, w0), relu)
                return _unframes_view(y, x.shape[0])
            if kh == kw == 1 and sh == sw == 1:
                y = _conv2d(_time_view(x), weight[:, :, :, :, 0], bias, (st, 1), (t0, 0), relu)
                return _untime_view(y, *x.shape[3:])
        y = F.conv3d(x, weight, bias, self.stride, (t0, h0, w0), self.dilation, self.groups)
        return torch.relu_(y) if relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, self.bias)


def _fused_relu_ok(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether oneDNN's inference-only conv+bias+ReLU op can run (CPU fp32, no autograd, eager)."""
    if _CONV_POINTWISE is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.compiler.is_compiling():
        return False  # let the compiler do its own fusion
    needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    return not (torch.is_grad_enabled() and needs_grad)


def _fused_add_ok(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, add: torch.Tensor,
                  stride: tuple[int, int], padding: tuple[int, int]) -> bool:
    """Whether oneDNN's inference-only conv+bias+add op can run: as :func:`_fused_relu_ok`, and ``add``
    is a CPU fp32 tensor without autograd of exactly the convolution's output shape (no broadcasting)."""
    if _CONV_POINTWISE_BINARY is None or not _fused_relu_ok(x, weight, bias):
        return False
    if add.device.type != "cpu" or add.dtype != torch.float32 or (torch.is_grad_enabled() and add.requires_grad):
        return False
    out = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(x.shape[2:], padding, weight.shape[2:], stride))
    return tuple(add.shape) == (x.shape[0], weight.shape[0], *out)


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
            padding: tuple[int, int], relu: bool, add: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d``, then ``+ add`` when given, then ReLU when ``relu``; one oneDNN call for inference
    on CPU (conv+bias+ReLU, resp. conv+bias+add(+ReLU))."""
    if add is not None:
        if _fused_add_ok(x, weight, bias, add, stride, padding):
            return _CONV_POINTWISE_BINARY(x, add, weight, bias, list(padding), list(stride), [1, 1], 1, "add",
                                          None, "relu" if relu else None, [], "")
    elif relu and _fused_relu_ok(x, weight, bias):
        return _CONV_POINTWISE(x, weight, bias, list(padding), list(stride), [1, 1], 1, "relu", [], "")
    y = F.conv2d(x, weight, bias, stride, padding)
    if add is not None:
        y = y.add_(add)  # the fresh conv output is not kept by autograd
    return torch.relu_(y) if relu else y


def _find_mkldnn_op(name: str, overload: str) -> Any:
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(getattr(torch.ops.mkldnn, name), overload)
    except (AttributeError, RuntimeError):
        return None


_CONV_POINTWISE = _find_mkldnn_op("_convolution_pointwise", "default")
_CONV_POINTWISE_BINARY = _find_mkldnn_op("_convolution_pointwise", "binary")


def fold_bn(weight: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(weight', bias')`` with ``conv(x, weight', bias') == bn(conv(x, weight))`` for a bias-free conv
    followed by the eval-mode BatchNorm ``bn``, or ``None`` when ``bn`` does not use fixed running
    statistics (training mode, no running statistics, or not a ``torch.nn`` BatchNorm).

    The result keeps gradients to ``weight`` and the BN affine parameters (exact up to float rounding).
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.training:
        return None
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        return None
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    bias = -mean * scale
    if bn.bias is not None:
        bias = bn.bias + bias
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), bias


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF-'SAME' padding. Input ``(B,C,H,W)``, output ``(B,C',ceil(H/s),ceil(W/s))``.

    Symmetric pads go into the convolution; only an asymmetric remainder is padded with ``F.pad``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 2), _tuple(stride, 2), padding=0,
                         bias=bias)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             relu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
        """This layer's SAME convolution with the given ``weight``/``bias`` (e.g. BN-folded ones).

        ``add`` (e.g. a residual) is added to the result, then ``relu=True`` applies a ReLU; both are fused
        into the oneDNN call when no gradient is needed.
        """
        (h0, h1), (w0, w1) = (same_pads(n, k, s, d) for n, k, s, d in
                              zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation))
        if (h0, w0) != (h1, w1):
            x = F.pad(x, (0, w1 - w0, 0, h1 - h0))
        if self.dilation == (1, 1) and self.groups == 1:
            return _conv2d(x, weight, bias, self.stride, (h0, w0), relu, add)
        y = F.conv2d(x, weight, bias, self.stride, (h0, w0), self.dilation, self.groups)
        if add is not None:
            y = y.add_(add)
        return torch.relu_(y) if relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, self.bias)


def _pool_args(sizes: tuple[int, ...], kernel: tuple[int, ...],
               stride: tuple[int, ...]) -> tuple[tuple[int, ...], bool] | None:
    """Native-pool ``padding`` and ``ceil_mode`` equal to SAME with -inf, or ``None`` if there are none.

    Native pools pad with -inf. An extra pixel at the end (pads ``(p, p+1)``) equals ``padding=p`` with
    ``ceil_mode=True`` when the stride is > 1: the ceil adds exactly the last window, which starts
    inside the input.
    """
    padding = []
    ceil = False
    for n, k, s in zip(sizes, kernel, stride):
        b, a = same_pads(n, k, s)
        if a == b + 1 and s > 1:
            ceil = True
        elif a != b:
            return None
        padding.append(b)
    return tuple(padding), ceil


class MaxPoolSame(nn.Module):
    """Max-pool with TF-'SAME' padding by ``-inf`` over the last ``len(kernel)`` axes (2 or 3).

    Input ``(B,C,H,W)`` or ``(B,C,T,H,W)``; output size ``ceil(n / stride)`` per pooled axis.
    A 3-D pool runs as a spatial 2-D pool over frames then a temporal pool (max is separable, so the
    result is exact); on channels_last_3d inputs both are free views, and much faster than
    ``max_pool3d``.
    """

    def __init__(self, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
        super().__init__()
        if len(kernel) not in (2, 3) or len(kernel) != len(stride):
            raise ValueError(f"kernel {kernel} and stride {stride} must both have 2 or 3 entries")
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel)
        sizes = tuple(x.shape[-nd:])
        args = _pool_args(sizes, self.kernel, self.stride)
        if args is None:
            pads, _ = _pad_arg(sizes, self.kernel, self.stride, (1,) * nd)
            x = F.pad(x, pads, value=-math.inf)
            args = ((0,) * nd, False)
        padding, ceil = args
        if nd == 2:
            return F.max_pool2d(x, self.kernel, self.stride, padding, ceil_mode=ceil)
        (kt, kh, kw), (st, sh, sw) = self.kernel, self.stride
        if (kh, kw, sh, sw) != (1, 1, 1, 1):
            if _is_channels_last_3d(x):
                y = F.max_pool2d(_frames_view(x), (kh, kw), (sh, sw), padding[1:], ceil_mode=ceil)
                x = _unframes_view(y, x.shape[0])
            else:
                y = F.max_pool2d(x.flatten(1, 2), (kh, kw), (sh, sw), padding[1:], ceil_mode=ceil)
                x = y.unflatten(1, x.shape[1:3])
        if (kt, st) != (1, 1):
            cl = _is_channels_last_3d(x)
            y = F.max_pool2d(_time_view(x) if cl else x.flatten(3), (kt, 1), (st, 1), (padding[0], 0),
                             ceil_mode=ceil)
            x = _untime_view(y, *x.shape[3:]) if cl else y.unflatten(3, x.shape[3:])
        return x

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=SAME(-inf)"


class SelfGating(nn.Module):
    """S3D-G self-gating: ``x * sigmoid(W mean_{T,H,W}(x) + b)`` per channel. ``(B,C,T,H,W)`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.self_gating = nn.Linear(channels, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate ``sigmoid(W mean_{T,H,W}(x) + b)`` of ``x`` ``(B,C,T,H,W)``, shaped ``(B,C,1,1,1)``."""
        return torch.sigmoid(self.self_gating(x.mean(dim=(2, 3, 4))))[:, :, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def space_to_depth(video: torch.Tensor) -> torch.Tensor:
    """The official S3D space-to-depth input transform, channels-first.

    ``(B,3,T,H,W)`` with T, H, W even → ``(B,24,T/2,H/2,W/2)``. Output channel
    ``((dt*2 + dh)*2 + dw)*3 + c`` holds input channel ``c`` at offset ``(dt, dh, dw)``, exactly as
    ``eval_ucf101.space_to_depth_batch`` orders it in the channels-last layout. The result is in
    ``channels_last_3d`` memory.
    """
    b, c, t, h, w = video.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"space-to-depth needs even T, H, W; got video of shape {tuple(video.shape)}")
    x = video.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
    # axes: 0 b, 1 c, 2 t', 3 dt, 4 h', 5 dh, 6 w', 7 dw  ->  (b, t', h', w', dt, dh, dw, c): one copy,
    # and the result is returned as a channels_last_3d view (the layout the S3D stem wants).
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, t // 2, h // 2, w // 2, 8 * c)
    return x.permute(0, 4, 1, 2, 3)


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
