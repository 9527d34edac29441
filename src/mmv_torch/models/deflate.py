"""Video → image networks ("deflation", MMV paper §3.3); the image evaluations built on them are in
:mod:`mmv_torch.eval.image`.

Three ways to apply a video network to a still image ``(B, 3, H, W)``:

1. **naive deflation** (:func:`deflate`): S3D-G becomes a 2D network by summing every 3D filter over
   time; TSM-ResNet becomes a ResNetV2 by switching the temporal shift off.
2. **deflation + BN re-training** (:func:`retrain_bn`): only the BatchNorm scales/offsets (γ, β) of
   the deflated network are trained, with an L1 loss between the deflated network on an image and
   the video network on a static video of that image.
3. **input inflation** (:class:`InflatedImageEncoder`): feed the video network a static video that
   repeats the image T times.

S3D-G deflation, layer by layer (:class:`DeflatedS3D`):
- a conv ``(kt, kh, kw)`` becomes ``(kh, kw)`` with the weights summed over ``kt``; the separable
  units' temporal conv ``(3, 1, 1)`` therefore becomes a per-unit 1×1 conv (a full C×C channel mix,
  not a per-channel scale), with its BN and ReLU kept;
- the space-to-depth stem ``(2, 4, 4)`` on 24 channels becomes a 2D space-to-depth of the image
  (12 channels ``(dh*2+dw)*3+c``) and a 4×4 conv whose weights are summed over ``kt`` AND over the
  two time offsets ``dt`` of the 24 input channels (both hold the same frame in a static video);
  the standard stem ``(7, 7, 7)/2`` becomes a 7×7/2 conv;
- temporal strides and the temporal extent of max-pools disappear (a max over identical frames is
  the identity); the gating's mean over (T, H, W) becomes a mean over (H, W); the output is the mean
  over (H, W).

**The temporal-padding effect.** Summing filters over time equals the video network on a static
video only where no temporal tap reads padding. The official convs use TF 'SAME' zero padding in
time, so on a static video of T frames the border frames see zeros: their activations are smaller
than the interior ones, and S3D-G's self-gating (a mean over T) and the final mean over T carry the
border frames into every output. So:
- with the temporal padding neutralised (replicate padding in time, :func:`temporal_padding`), the
  video network on a static video equals the deflated network exactly (to float rounding), at every
  layer and for any T: the deflated network IS the video network on an infinitely long static video;
- with the official zero padding, interior frames are exact until the first gated layer
  (``Conv2d_2c_3x3``); after it every frame differs and the gap shrinks as T grows (measured by
  :func:`padding_gap`; numbers in the tests and the report).

**TSM.** With the official shift, the channels a block's ``conv_0`` sees are the pre-activation with
its first and last ``n = C*fraction`` channels swapped (from frames t+1 and t-1; §3.2 of the spec).
On a static video the interior frames therefore see a *channel permutation* of the image's
pre-activation, not the pre-activation itself, and the border frames see zeros in the shifted
channels. "Switching the shift off" (``fold_channel_order=False``, the paper's wording) drops that
permutation; ``fold_channel_order=True`` (default) folds it into ``conv_0``'s input channels, which
makes the deflated ResNet exactly the TSM network on the interior frames of a static video. Each
frame is otherwise processed independently, so only the first and last frames differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mmv_torch.models.layers import Conv2dSame, Conv3dSame, MaxPoolSame, SelfGating
from mmv_torch.models.s3d import ENDPOINTS, S2D_CHANNELS, S3D, InceptionBlock3D, Unit3D
from mmv_torch.models.tsm_resnet import TSMResNet

STRATEGIES = ("naive", "bn_retrained", "inflation")


# ---------------------------------------------------------------------------------------------
# Static videos and temporal padding


def static_video(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B, 3, H, W)`` → ``(B, 3, T, H, W)`` repeating the image ``T = num_frames`` times."""
    if images.dim() != 4:
        raise ValueError(f"static_video expects images (B, C, H, W), got shape {tuple(images.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return images[:, :, None].expand(-1, -1, num_frames, -1, -1).contiguous()


def _replicate_time(conv: Conv3dSame, method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap ``conv``'s SAME method (``forward(x)`` or ``conv(x, weight, bias, ...)``) so that time is
    padded by replicating the border frames instead of zeros.

    The input gets ``kt`` replicated frames on each side, the wrapped method runs unchanged (its own
    zero padding then only touches replicated frames) and the ``ceil(T / st)`` output frames whose
    taps stay inside are kept. For temporal stride 1 this is replicate 'SAME' padding for any input;
    for a temporal stride (the standard stem) it is exact on static videos, the only use here.
    """
    kt, st = conv.kernel_size[0], conv.stride[0]

    def wrapped(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        t = x.shape[2]
        x = torch.cat([x[:, :, :1].expand(-1, -1, kt, -1, -1), x, x[:, :, -1:].expand(-1, -1, kt, -1, -1)], dim=2)
        y = method(x, *args, **kwargs)
        start = -(-kt // st)
        return y[:, :, start:start + -(-t // st)]

    return wrapped


@contextmanager
def temporal_padding(video_net: nn.Module, mode: str = "replicate") -> Iterator[nn.Module]:
    """Temporarily change the temporal padding of every ``Conv3dSame`` in ``video_net``.

    ``mode='zeros'`` is the official TF 'SAME' padding (no change); ``'replicate'`` repeats the first
    and last frames instead, which neutralises the temporal-padding effect on static videos.
    Max-pools already pad with -inf, which is neutral. Restores the modules on exit.
    """
    if mode not in ("zeros", "replicate"):
        raise ValueError(f"temporal padding mode must be 'zeros' or 'replicate', got {mode!r}")
    patched: list[tuple[nn.Module, str]] = []
    if mode == "replicate":
        for m in video_net.modules():
            if isinstance(m, Conv3dSame) and m.kernel_size[0] > 1:
                # The layer's primitive is conv(x, weight, bias, ...) when it has one (forward and the
                # BN-folded eval path both call it), else forward(x).
                name = "conv" if callable(getattr(type(m), "conv", None)) else "forward"
                setattr(m, name, _replicate_time(m, getattr(m, name)))
                patched.append((m, name))
    try:
        yield video_net
    finally:
        for m, name in patched:
            delattr(m, name)


# ---------------------------------------------------------------------------------------------
# S3D-G deflation


def _copy_bn(bn3: nn.BatchNorm3d) -> nn.BatchNorm2d:
    bn2 = nn.BatchNorm2d(bn3.num_features, eps=bn3.eps, momentum=bn3.momentum)
    bn2.load_state_dict(bn3.state_dict())
    bn2.train(bn3.training)
    return bn2


def _deflate_conv(conv: Conv3dSame, in_groups: int = 1) -> Conv2dSame:
    """``(O, I*in_groups, kt, kh, kw)`` → ``(O, I, kh, kw)``: sum over kt and over ``in_groups`` input blocks."""
    w = conv.weight.detach()
    o, i_all, kt, kh, kw = w.shape
    w2 = w.reshape(o, in_groups, i_all // in_groups, kt, kh, kw).sum(dim=(1, 3))
    out = Conv2dSame(i_all // in_groups, o, (kh, kw), conv.stride[1:], bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(w2)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


class SelfGating2D(nn.Module):
    """Deflated self-gating: ``x * sigmoid(W mean_{H,W}(x) + b)``; ``(B, C, H, W)`` in and out."""

    def __init__(self, gating: SelfGating) -> None:
        super().__init__()
        self.self_gating = copy.deepcopy(gating.self_gating)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.self_gating(x.mean(dim=(2, 3))))
        return x * gate[:, :, None, None]


class DeflatedUnit(nn.Module):
    """A deflated :class:`~mmv_torch.models.s3d.Unit3D`: ``(B, C_in, H, W)`` → ``(B, C_out, H', W')``.

    ``conv``/``bn`` (spatial part or the whole conv, summed over time), then for separable units
    ``conv_t`` (the temporal conv summed into a 1×1) and ``bn_t``, then the 2D gating. Submodule names
    follow the video unit's.
    """

    def __init__(self, unit: Unit3D, in_groups: int = 1) -> None:
        super().__init__()
        self.conv = _deflate_conv(unit.conv, in_groups)
        self.bn = _copy_bn(unit.bn)
        self.separable = unit.separable
        if unit.separable:
            self.conv_t = _deflate_conv(unit.conv_t)
            self.bn_t = _copy_bn(unit.bn_t)
        self.gating = SelfGating2D(unit.gating) if unit.gating is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        if self.separable:
            x = torch.relu(self.bn_t(self.conv_t(x)))
        if self.gating is not None:
            x = self.gating(x)
        return x


def _deflate_pool(pool: MaxPoolSame) -> MaxPoolSame:
    return MaxPoolSame(pool.kernel[1:], pool.stride[1:])


class DeflatedInception(nn.Module):
    """A deflated :class:`~mmv_torch.models.s3d.InceptionBlock3D` (same branch names), 2D."""

    def __init__(self, block: InceptionBlock3D) -> None:
        super().__init__()
        for name, child in block.named_children():
            setattr(self, name, _deflate_pool(child) if isinstance(child, MaxPoolSame) else DeflatedUnit(child))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.branch_0_conv2d_0a_1x1(x)
        y1 = self.branch_1_conv2d_0b_3x3(self.branch_1_conv2d_0a_1x1(x))
        y2 = self.branch_2_conv2d_0b_3x3(self.branch_2_conv2d_0a_1x1(x))
        y3 = self.branch_3_conv2d_0b_1x1(self.branch_3_maxpool_0a_3x3(x))
        return torch.cat([y0, y1, y2, y3], dim=1)


def space_to_depth_2d(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` → ``(B, 12, H/2, W/2)``, channel ``(dh*2 + dw)*3 + c`` (H, W even)."""
    b, c, h, w = images.shape
    if h % 2 or w % 2:
        raise ValueError(f"space-to-depth needs even H, W; got images of shape {tuple(images.shape)}")
    x = images.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


class DeflatedS3D(nn.Module):
    """S3D-G deflated to images (see the module doc). ``(B, 3, H, W)`` → ``(B, out_dim)``.

    Built from a video :class:`~mmv_torch.models.s3d.S3D` by :func:`deflate_s3d`; endpoint and
    submodule names are the video network's.
    """

    def __init__(self, video: S3D) -> None:
        super().__init__()
        self.stem = video.stem
        groups = 2 if video.stem == "space_to_depth" else 1  # the two dt offsets of the 24 s2d channels
        if video.stem == "space_to_depth" and video.conv2d_1a_7x7.conv.weight.shape[1] != S2D_CHANNELS:
            raise ValueError("S3D space_to_depth stem must take 24 channels")
        for name in ENDPOINTS[:-1]:
            child = getattr(video, name.lower())
            if isinstance(child, MaxPoolSame):
                mod: nn.Module = _deflate_pool(child)
            elif isinstance(child, InceptionBlock3D):
                mod = DeflatedInception(child)
            else:
                mod = DeflatedUnit(child, groups if name == "Conv2d_1a_7x7" else 1)
            setattr(self, name.lower(), mod)
        self.out_dim = video.out_dim
        self.train(video.training)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DeflatedS3D expects images (B, 3, H, W); got shape {tuple(images.shape)}")
        return space_to_depth_2d(images) if self.stem == "space_to_depth" else images

    def forward_endpoints(self, images: torch.Tensor, final_endpoint: str = "Embeddings") -> dict[str, torch.Tensor]:
        """Every endpoint up to ``final_endpoint``: maps ``(B, C, H', W')``, ``Embeddings`` ``(B, C)``."""
        if final_endpoint not in ENDPOINTS:
            raise ValueError(f"unknown S3D endpoint {final_endpoint!r}; valid: {list(ENDPOINTS)}")
        x = self._prepare(images)
        out: dict[str, torch.Tensor] = {}
        for name in ENDPOINTS[:-1]:
            x = getattr(self, name.lower())(x)
            out[name] = x
            if name == final_endpoint:
                return out
        out["Embeddings"] = x.mean(dim=(2, 3))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] → ``(B, out_dim)``."""
        x = self._prepare(images)
        for name in ENDPOINTS[:-1]:
            x = getattr(self, name.lower())(x)
        return x.mean(dim=(2, 3))


def deflate_s3d(video: S3D) -> DeflatedS3D:
    """S3D-G → 2D network by summing 3D filters over time (a new module; ``video`` is unchanged)."""
    if not isinstance(video, S3D):
        raise ValueError(f"deflate_s3d needs an S3D backbone, got {type(video).__name__}")
    return DeflatedS3D(video)


# ---------------------------------------------------------------------------------------------
# TSM deflation


class DeflatedTSM(nn.Module):
    """TSM-ResNet with the shift off: a ResNetV2 on images. ``(B, 3, H, W)`` → ``(B, out_dim)``."""

    def __init__(self, video: TSMResNet, fold_channel_order: bool = True) -> None:
        super().__init__()
        self.net = copy.deepcopy(video)
        self.net.shift = False
        self.fold_channel_order = fold_channel_order
        self.out_dim = video.out_dim
        if fold_channel_order and video.shift_fraction > 0:
            for unit in range(4):
                group = getattr(self.net, f"unit_{unit}")
                for j in range(group.num_blocks):
                    conv = getattr(group, f"block_{j}").conv_0
                    c = conv.weight.shape[1]
                    n = int(c * video.shift_fraction)
                    if n == 0:
                        continue
                    # conv_0 sees cat([x[C-n:], x[n:C-n], x[:n]]) on static interior frames: position j
                    # holds input channel perm[j], so the folded weight has column perm[j] = old column j.
                    perm = torch.cat([torch.arange(c - n, c), torch.arange(n, c - n), torch.arange(0, n)])
                    with torch.no_grad():
                        w = conv.weight.detach().clone()
                        conv.weight[:, perm] = w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_images(images)


def deflate_tsm(video: TSMResNet, fold_channel_order: bool = True) -> DeflatedTSM:
    """TSM-ResNet → ResNetV2 on images (module doc: ``fold_channel_order``). ``video`` is unchanged."""
    if not isinstance(video, TSMResNet):
        raise ValueError(f"deflate_tsm needs a TSMResNet backbone, got {type(video).__name__}")
    return DeflatedTSM(video, fold_channel_order)


def deflate(video: nn.Module, fold_channel_order: bool = True) -> nn.Module:
    """Deflate an S3D or TSM-ResNet video backbone to an image network ``(B, 3, H, W)`` → ``(B, D)``."""
    if isinstance(video, S3D):
        return deflate_s3d(video)
    if isinstance(video, TSMResNet):
        return deflate_tsm(video, fold_channel_order)
    raise ValueError(f"deflation is defined for S3D and TSMResNet backbones, not {type(video).__name__}")


class InflatedImageEncoder(nn.Module):
    """Input inflation: ``(B, 3, H, W)`` → video network on the static video of T frames → ``(B, D)``."""

    def __init__(self, video: nn.Module, num_frames: int) -> None:
        super().__init__()
        self.video = video
        self.num_frames = num_frames
        self.out_dim = getattr(video, "out_dim", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.video(static_video(images, self.num_frames))


# ---------------------------------------------------------------------------------------------
# Measuring the gap and re-training BN


@torch.no_grad()
def padding_gap(video: nn.Module, images: torch.Tensor, num_frames: int,
                deflated: nn.Module | None = None) -> dict[str, float]:
    """Relative L1 gap between the deflated network on ``images`` and the video network on static videos.

    Returns ``{"zeros": ..., "replicate": ...}``: ``mean|d - v| / mean|v|`` with the official zero
    temporal padding and with it neutralised (replicate). Both networks are run in eval mode.
    """
    deflated = deflated if deflated is not None else deflate(video)
    was = video.training, deflated.training
    video.eval()
    deflated.eval()
    d = deflated(images)
    out = {}
    for mode in ("zeros", "replicate"):
        with temporal_padding(video, mode):
            v = video(static_video(images, num_frames))
        out[mode] = float((d - v).abs().mean() / v.abs().mean().clamp_min(1e-12))
    video.train(was[0])
    deflated.train(was[1])
    return out


def _images_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping) and "image" in batch:
        return torch.as_tensor(batch["image"])
    raise ValueError("BN re-training batches must be image tensors (B, 3, H, W) or dicts with an 'image' key")


def retrain_bn(deflated: nn.Module, video: nn.Module, images: Iterable[Any], num_frames: int, steps: int,
               lr: float = 1e-3, update_running_stats: bool = False, device: torch.device | str = "cpu",
               log: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train only the BN γ/β of ``deflated`` to match ``video`` on static videos (paper's strategy 2).

    Loss: mean L1 between ``deflated(x)`` ``(B, D)`` and ``video(static_video(x, num_frames))`` (the
    target, from the video network in eval mode with the official zero padding, no gradient).
    ``images`` yields batches ``(B, 3, H, W)`` (or dicts with ``"image"``) and is cycled for
    ``steps`` Adam steps. BN running statistics stay frozen (eval mode) unless
    ``update_running_stats``. Every other parameter keeps ``requires_grad=False`` afterwards too.
    Returns ``{"l1_first", "l1_last", "history", "bn_params"}`` (``l1_first`` is the loss of the first
    batch before any step, ``l1_last`` the mean of the last 10 steps' losses before their update).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dev = torch.device(device)
    deflated.to(dev)
    video.to(dev).eval()
    bn_params = []
    for m in deflated.modules():
        for p in m.parameters(recurse=False):
            is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
            p.requires_grad_(is_bn)
            if is_bn:
                bn_params.append(p)
    if not bn_params:
        raise ValueError("retrain_bn: the deflated network has no BatchNorm parameters")
    opt = torch.optim.Adam(bn_params, lr=lr)
    history: list[float] = []
    it = iter(images)
    for step in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(images)
            batch = next(it)
        x = _images_of(batch).to(dev)
        deflated.train(update_running_stats)
        with torch.no_grad():
            target = video(static_video(x, num_frames))
        loss = (deflated(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if log is not None:
            log({"step": step, "l1": history[-1]})
    deflated.eval()
    return {"l1_first": history[0], "l1_last": float(sum(history[-10:]) / len(history[-10:])),
            "history": history, "bn_params": int(sum(p.numel() for p in bn_params))}


@torch.no_grad()
def l1_gap(deflated: nn.Module, video: nn.Module, images: torch.Tensor, num_frames: int) -> float:
    """Mean L1 between ``deflated(images)`` and ``video`` on static videos (both in eval mode)."""
    deflated.eval()
    video.eval()
    return float((deflated(images) - video(static_video(images, num_frames))).abs().mean())


TSM_NAIVE = ("folded", "paper")
"""How a TSM tower is deflated: ``paper`` switches the shift off (the paper's n-def), ``folded`` also
folds the shift's channel order into the next convolution (module doc)."""


def image_encoder(video: nn.Module, strategy: str, num_frames: int, bn_images: Iterable[Any] | None = None,
                  bn_steps: int = 200, bn_lr: float = 1e-3, device: torch.device | str = "cpu",
                  tsm_naive: str = "folded") -> tuple[nn.Module, dict[str, Any]]:
    """An image network ``(B, 3, H, W)`` → ``(B, D)`` from a video backbone by one of :data:`STRATEGIES`.

    ``naive``: :func:`deflate`; ``bn_retrained``: deflate, then :func:`retrain_bn` on ``bn_images``
    for ``bn_steps``; ``inflation``: :class:`InflatedImageEncoder` with ``num_frames``. ``tsm_naive``
    (:data:`TSM_NAIVE`) chooses how a TSM tower is deflated. Returns the network (eval mode) and a
    settings dict for the report.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if tsm_naive not in TSM_NAIVE:
        raise ValueError(f"tsm_naive must be one of {list(TSM_NAIVE)}, got {tsm_naive!r}")
    video.eval()
    settings: dict[str, Any] = {"strategy": strategy, "num_frames": num_frames}
    if strategy == "inflation":
        return InflatedImageEncoder(video, num_frames).eval(), settings
    if isinstance(video, TSMResNet):
        settings["tsm_naive"] = tsm_naive
    net = deflate(video, fold_channel_order=tsm_naive == "folded")
    if strategy == "bn_retrained":
        if bn_images is None:
            raise ValueError("strategy 'bn_retrained' needs bn_images")
        res = retrain_bn(net, video, bn_images, num_frames, bn_steps, bn_lr, device=device)
        settings.update(bn_steps=bn_steps, bn_lr=bn_lr, l1_first=res["l1_first"], l1_last=res["l1_last"])
    return net.eval(), settings
