"""Video augmentation and evaluation sampling, as in the paper and the official evaluation.

Inputs are clips as decoded, ``[T, H, W, 3]`` uint8 (0..255) or float (0..1). Outputs are float32
``(3, T, H, W)`` (channels first) in [0, 1]; evaluation windows stack to ``(N, 3, T, H, W)``.

Training, two pipelines (``DataConfig.augment``):

- ``"dmvr"`` (the default, :func:`dmvr_train_transform`): DMVR's ``resize_smallest``, then with
  probability 0.8 independent height and width scale factors in [0.8, 1.2] (``scale_jitter_augm``),
  random ``crop_size`` crop, horizontal flip, and with probability 0.8 DMVR's ``color_default_augm``
  (additive brightness +-32/255, HSV saturation x [0.6, 1.4], contrast x [0.6, 1.4], HSV hue +-0.2,
  clip to [0, 1]) with TensorFlow's definitions of those ops.
- ``"default"`` (:func:`train_transform`): resize the short side
  to ``resize_short * s`` with a scale jitter ``s ~ U(0.8, 1.2)`` (never below the crop), random
  ``crop_size`` crop, horizontal flip with probability 0.5, colour jitter (brightness, contrast,
  saturation, hue in random order, the same factors for every frame of a clip), clamp to [0, 1].

Evaluation (:func:`eval_transform`, :func:`eval_windows`): resize the short side, then a centre crop
(zero padding when the image is smaller, like ``tf.image.resize_with_crop_or_pad``); windows start at
``int(linspace(0, max(0, L - span), N))`` as the official UCF101 evaluation.

Resizing is bilinear with half-pixel centres and no antialiasing (``tf.image.resize``); the output
size of the short-side resize is ``max(size, h * size // w)`` x ``max(size, w * size // h)``.
Randomness comes from an explicit ``torch.Generator`` so a seeded run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                           dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator | None, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


# ------------------------------------------------------------------------------------------------
# Temporal sampling


def temporal_indices(length: int, num_frames: int, stride: int = 1, offset: int = 0) -> torch.Tensor:
    """Frame indices ``(offset + i * stride) mod length`` for ``i < num_frames``: int64 ``(T,)``.

    The modulo tiles (loops) a sequence that is too short, as the official sampler does.
    """
    if length <= 0 or num_frames <= 0 or stride <= 0:
        raise ValueError(f"length, num_frames and stride must be > 0, got {length}, {num_frames}, {stride}")
    return (offset + torch.arange(num_frames) * stride) % length


def random_offset(length: int, num_frames: int, stride: int = 1,
                  generator: torch.Generator | None = None) -> int:
    """Official training offset: uniform in ``[0, L - (T-1)*stride)`` when that is non-empty, else ``[0, L)``."""
    reach = (num_frames - 1) * stride
    high = length - reach if length > reach else length
    return _randint(generator, max(high, 1))


def linspace_offsets(length: int, span: int, num_windows: int) -> list[int]:
    """Official evaluation offsets ``int(linspace(0, max(0, length - span), num_windows))``."""
    return [int(v) for v in np.linspace(0, max(0, length - span), num_windows)]


def random_start_time(duration: float, span_s: float, generator: torch.Generator | None = None) -> float:
    """Clip start in seconds, uniform in ``[0, max(0, duration - span_s)]``."""
    return _uniform(generator, 0.0, max(0.0, duration - span_s))


def linspace_start_times(duration: float, span_s: float, num_windows: int) -> list[float]:
    """Evaluation starts in seconds, ``linspace(0, max(0, duration - span_s), num_windows)``."""
    return [float(v) for v in np.linspace(0.0, max(0.0, duration - span_s), num_windows)]


# ------------------------------------------------------------------------------------------------
# Spatial operations on (3, T, H, W) float


def to_float_video(frames: torch.Tensor) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 (0..255) or float (0..1) → float32 ``(3, T, H, W)`` in [0, 1]."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 or float, got {frames.dtype}")
    t, h, w, _ = frames.shape
    out = torch.empty((3, t, h, w), dtype=torch.float32, device=frames.device)
    out.copy_(frames.permute(3, 0, 1, 2))  # one pass: channels-first, contiguous, float
    return out.div_(255.0) if frames.dtype == torch.uint8 else out


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(out_h, out_w) with the short side ``size``: ``max(size, h*size//w)``, ``max(size, w*size//h)``."""
    return max(size, height * size // width), max(size, width * size // height)


def resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, no antialias) of ``(C, T, H, W)`` to ``(C, T, height, width)``."""
    c, t, h, w = video.shape
    if (h, w) == (height, width):
        return video
    out = F.interpolate(video.reshape(1, c * t, h, w), size=(height, width), mode="bilinear",
                        align_corners=False, antialias=False)
    return out.reshape(c, t, height, width)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, T, H, W)`` → ``(C, T, H', W')`` with ``min(H', W') == size`` (see :func:`short_side_size`)."""
    return resize(video, *short_side_size(video.shape[-2], video.shape[-1], size))


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` x ``size`` crop of ``(C, T, H, W)``; zero padding (centred) where H or W is smaller."""
    h, w = video.shape[-2:]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        video = F.pad(video, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = video.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return video[..., top:top + size, left:left + size]


def random_crop(video: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``size`` x ``size`` crop of ``(C, T, H, W)`` (H, W >= size)."""
    h, w = video.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} clip")
    top, left = _randint(generator, h - size + 1), _randint(generator, w - size + 1)
    return video[..., top:top + size, left:left + size]


def _mix3(video: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to ``(3, T, H, W)``."""
    c, t, h, w = video.shape
    out = torch.matmul(matrix.to(video.dtype), video.reshape(3, -1))
    return out.reshape(c, t, h, w)


def _hue_matrix(shift: float) -> torch.Tensor:
    a = 2.0 * math.pi * shift
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]],
                       dtype=torch.float64)
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


COLOR_OPS = ("brightness", "contrast", "saturation", "hue")


def adjust_colors(video: torch.Tensor, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0,
                  hue: float = 0.0, order: tuple[int, ...] = (0, 1, 2, 3)) -> torch.Tensor:
    """Colour adjustment of ``(3, T, H, W)`` in [0, 1], ops applied in ``order`` (indices of :data:`COLOR_OPS`).

    - brightness ``f``: ``x * f``;
    - contrast ``f``: ``m + f * (x - m)``, ``m`` the mean grey level of each frame;
    - saturation ``f``: ``g + f * (x - g)``, ``g`` the pixel's grey level (0.299 R + 0.587 G + 0.114 B);
    - hue ``h`` (turns): rotation of the chroma plane in YIQ space by ``2 pi h``.

    Every op is affine per frame, so the chain is composed into one ``x -> A x + b_t`` and applied in
    one pass; the result is clamped to [0, 1] once at the end.
    """
    gray = torch.tensor(_GRAY, dtype=torch.float64)
    means = video.mean(dim=(-2, -1)).to(torch.float64)  # (3, T)
    a = torch.eye(3, dtype=torch.float64)
    b = torch.zeros_like(means)
    for i in order:
        op = COLOR_OPS[i]
        if op == "brightness":
            a, b = a * brightness, b * brightness
        elif op == "contrast":
            m = gray @ (a @ means + b)  # (T,) mean grey of each frame after the ops so far
            a, b = a * contrast, b * contrast + (1.0 - contrast) * m[None]
        elif op == "saturation":
            mat = saturation * torch.eye(3, dtype=torch.float64) + (1.0 - saturation) * gray[None].expand(3, 3)
            a, b = mat @ a, mat @ b
        else:
            mat = _hue_matrix(hue)
            a, b = mat @ a, mat @ b
    out = _mix3(video, a).add_(b.to(video.dtype)[:, :, None, None])
    return out.clamp_(0.0, 1.0)


def color_jitter(video: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.04, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random colour jitter of ``(3, T, H, W)`` in [0, 1], the same for every frame, ops in random order.

    Factors: brightness, contrast, saturation ``~ U(1 - s, 1 + s)``; hue shift ``~ U(-hue, hue)`` turns
    (see :func:`adjust_colors`). A strength of 0 leaves that op out.
    """
    f_b = _uniform(generator, max(0.0, 1 - brightness), 1 + brightness) if brightness > 0 else 1.0
    f_c = _uniform(generator, max(0.0, 1 - contrast), 1 + contrast) if contrast > 0 else 1.0
    f_s = _uniform(generator, max(0.0, 1 - saturation), 1 + saturation) if saturation > 0 else 1.0
    f_h = _uniform(generator, -hue, hue) if hue > 0 else 0.0
    order = tuple(torch.randperm(4, generator=generator).tolist())
    return adjust_colors(video, f_b, f_c, f_s, f_h, order)


def _resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of ``[T, H, W, 3]`` (uint8 stays uint8, rounded) → ``[T, height, width, 3]``."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W), channels-last in memory: the fast uint8 kernel
    out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return out.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------------
# Pipelines


def train_transform(
    frames: torch.Tensor,
    crop_size: int = 200,
    resize_short: int = 224,
    scale_jitter: tuple[float, float] = (0.8, 1.2),
    flip: bool = True,
    color_strength: float = 0.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training augmentation: ``[T, H, W, 3]`` → float32 ``(3, T, crop_size, crop_size)`` in [0, 1].

    ``color_strength`` s gives brightness/contrast/saturation s and hue s/10; 0 disables colour jitter.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    s = _uniform(generator, *scale_jitter)
    short = max(crop_size, int(round(resize_short * s)))
    h, w = short_side_size(frames.shape[1], frames.shape[2], short)
    # Resize the uint8 frames (as the official pipeline does), crop, and only then go to float.
    resized = _resize_frames(frames, h, w)
    top, left = _randint(generator, h - crop_size + 1), _randint(generator, w - crop_size + 1)
    crop = resized[:, top:top + crop_size, left:left + crop_size]
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        crop = crop.flip(2)  # flipping the uint8 crop is cheaper than flipping floats
    video = to_float_video(crop)  # contiguous, in [0, 1]
    if color_strength > 0:
        video = color_jitter(video, color_strength, color_strength, color_strength, color_strength / 10.0,
                             generator)  # clamps to [0, 1]
    return video


# ------------------------------------------------------------------------------------------------
# DMVR's training augmentation (the default: ``data.augment = "dmvr"``)

DMVR_BRIGHTNESS = 32.0 / 255.0
"""``random_brightness(max_delta=32/255)``: an additive delta ``~ U(-32/255, 32/255)``."""
DMVR_SATURATION = (0.6, 1.4)
"""``random_saturation(0.6, 1.4)``: the HSV saturation times a factor in this range (clipped to [0, 1])."""
DMVR_CONTRAST = (0.6, 1.4)
"""``random_contrast(0.6, 1.4)``: ``m + f (x - m)`` with ``m`` each frame's mean of each channel."""
DMVR_HUE = 0.2
"""``random_hue(max_delta=0.2)``: the HSV hue shifted by a delta ``~ U(-0.2, 0.2)`` turns."""


@dataclass(frozen=True)
class DmvrColor:
    """One draw of DMVR's colour augmentation, applied in this order (the same for every frame)."""

    brightness: float
    saturation: float
    contrast: float
    hue: float


@dataclass(frozen=True)
class DmvrParams:
    """One draw of :func:`dmvr_train_transform` for a clip of a given size.

    ``scale`` is the (height, width) factor pair when the scale jitter fired, else None; ``size`` the
    (height, width) the frames are resized to; ``top``/``left`` the crop offset; ``flip`` the horizontal
    flip; ``color`` the colour draw when the colour augmentation fired, else None.
    """

    scale: tuple[float, float] | None
    size: tuple[int, int]
    top: int
    left: int
    flip: bool
    color: DmvrColor | None


def sample_dmvr_params(height: int, width: int, crop_size: int = 200, resize_short: int = 224,
                       scale_range: tuple[float, float] = (0.8, 1.2), scale_prob: float = 0.8, flip: bool = True,
                       color_prob: float = 0.8, generator: torch.Generator | None = None) -> DmvrParams:
    """Draw DMVR's training augmentation for a ``height`` x ``width`` clip (see :func:`dmvr_train_transform`).

    Draws, in this order: the height and width factors ``~ U(scale_range)`` and the coin of the scale jitter,
    the crop offset, the flip coin, then the colour coin and (when it fires) brightness, saturation, contrast
    and hue. Every draw happens whatever the coins say, so the number of draws per clip is fixed.
    """
    if not 0.0 <= scale_prob <= 1.0 or not 0.0 <= color_prob <= 1.0:
        raise ValueError(f"scale_prob and color_prob must be in [0, 1], got {scale_prob} and {color_prob}")
    h0, w0 = short_side_size(height, width, resize_short)
    s_h, s_w = _uniform(generator, *scale_range), _uniform(generator, *scale_range)
    jitter = _uniform(generator, 0.0, 1.0) < scale_prob
    scale = (s_h, s_w) if jitter else None
    # tf.cast(float32 -> int32) truncates; never below the crop (DMVR's random crop cannot pad).
    h1, w1 = (int(s_h * h0), int(s_w * w0)) if jitter else (h0, w0)
    h1, w1 = max(h1, crop_size), max(w1, crop_size)
    top, left = _randint(generator, h1 - crop_size + 1), _randint(generator, w1 - crop_size + 1)
    flipped = _uniform(generator, 0.0, 1.0) < 0.5
    coin = _uniform(generator, 0.0, 1.0)
    color = DmvrColor(_uniform(generator, -DMVR_BRIGHTNESS, DMVR_BRIGHTNESS), _uniform(generator, *DMVR_SATURATION),
                      _uniform(generator, *DMVR_CONTRAST), _uniform(generator, -DMVR_HUE, DMVR_HUE))
    return DmvrParams(scale, (h1, w1), top, left, flip and flipped, color if coin < color_prob else None)


def _hsv_parts(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value (max), chroma (``s * v``: the range where v > 0, else 0) and the range of ``(3, ...)`` pixels."""
    v = video.amax(dim=0)
    rng = v - video.amin(dim=0)
    return v, torch.where(v > 0, rng, torch.zeros_like(rng)), rng


def adjust_saturation_hsv(video: torch.Tensor, factor: float) -> torch.Tensor:
    """``tf.image.adjust_saturation``: HSV saturation ``s -> clip(s * factor, 0, 1)``, hue and value kept.

    In closed form every channel becomes ``v - c' (v - x) / range`` with ``c' = clip(s factor, 0, 1) v``;
    pixels with ``v <= 0`` (saturation 0 in TensorFlow's conversion) become grey at ``v``.
    """
    v, chroma, rng = _hsv_parts(video)
    s = torch.where(v > 0, rng / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    new_chroma = (s * factor).clamp(0.0, 1.0) * v
    ratio = torch.where(rng > 0, new_chroma / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(rng))
    return v - ratio * (v - video)


def adjust_hue_hsv(video: torch.Tensor, delta: float) -> torch.Tensor:
    """``tf.image.adjust_hue``: the HSV hue of ``(3, ...)`` pixels shifted by ``delta`` turns (mod 1).

    Value and chroma are kept; the channels are rebuilt with ``v - c clip(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6`` for n = 5, 3, 1 (R, G, B). Pixels with ``v <= 0`` become grey at ``v``.
    """
    r, g, b = video[0], video[1], video[2]
    v, chroma, rng = _hsv_parts(video)
    safe = torch.where(rng > 0, rng, torch.ones_like(rng)) * 6.0
    hue = torch.where(r == v, (g - b) / safe,
                      torch.where(g == v, (b - r) / safe + 2.0 / 6.0, (r - g) / safe + 4.0 / 6.0))
    hue = torch.remainder(torch.where(rng > 0, hue, torch.zeros_like(hue)) + delta, 1.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * hue, 6.0)
        out.append(v - chroma * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(out)


def _max3(x: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of the three channels of ``(3, ...)`` (two passes, not a strided reduction)."""
    v = torch.maximum(x[0], x[1])
    return torch.maximum(v, x[2], out=v)


def _min3(x: torch.Tensor) -> torch.Tensor:
    v = torch.minimum(x[0], x[1])
    return torch.minimum(v, x[2], out=v)


_TINY = torch.finfo(torch.float32).tiny
_HUE_CENTRES = (3.0, -1.0, 1.0)
"""R, G, B: the channel at hue ``H`` (in sixths of a turn) is ``v - c clip(2 - d(H, centre), 0, 1)``."""


def dmvr_color_(x: torch.Tensor, brightness: float | torch.Tensor, saturation: float | torch.Tensor,
                contrast: float | torch.Tensor, hue: float | torch.Tensor) -> torch.Tensor:
    """:func:`dmvr_color` in place on float ``(3, ...)``; each parameter a float or a tensor that broadcasts
    against one channel (e.g. ``(B, 1, 1, 1)`` for ``(3, B, T, H, W)``). Returns ``x``.

    The maths of :func:`adjust_saturation_hsv` and :func:`adjust_hue_hsv` in fewer passes over the pixels
    (equal up to float rounding, ~1e-6): the saturation ``s -> clip(s f, 0, 1)`` of a pixel with value
    ``v`` and range ``r`` is ``v + clip(v / r, 0, f) (x - v)`` (grey at ``v`` when ``v <= 0``); the hue works
    on ``H = 6 h`` and the circular distance to each channel's centre (no ``remainder``); the TensorFlow
    case split of the hue (red, else green, else blue is the max) selects with exact 0/1 ``lerp`` weights.
    A pixel with ``v <= 0`` keeps its range as chroma here, which the final clip to [0, 1] makes 0 anyway.
    """
    x.add_(brightness)
    v = _max3(x)
    ratio = torch.sub(v, _min3(x)).clamp_min_(_TINY)
    torch.div(v, ratio, out=ratio)
    if isinstance(saturation, torch.Tensor):
        torch.minimum(ratio.clamp_(min=0.0), saturation, out=ratio)
    else:
        ratio.clamp_(0.0, saturation)
    torch.lerp(v.expand_as(x), x, ratio, out=x)
    mean = x.mean(dim=(-2, -1), keepdim=True)  # each frame's mean of each channel
    torch.lerp(mean.expand_as(x), x, contrast, out=x)
    r, g, b = x[0], x[1], x[2]
    v = _max3(x)
    rng = v - _min3(x)
    h6 = torch.lerp((r - g).add_(rng, alpha=4), (b - r).add_(rng, alpha=2), (g == v).to(x.dtype))
    torch.lerp(h6, g - b, (r == v).to(x.dtype), out=h6)
    h6.div_(rng.clamp_min(_TINY)).add_(hue * 6.0)  # in [-2.2, 6.2): 6 x the shifted hue, not yet wrapped
    centres = torch.tensor(_HUE_CENTRES, dtype=x.dtype, device=x.device).reshape((3,) + (1,) * (x.dim() - 1))
    d = (h6 - centres).abs_()
    torch.minimum(d, (6.0 - d).abs_(), out=d)  # circular distance on the 6-sixths circle
    w = d.neg_().add_(2.0).clamp_(0.0, 1.0)
    torch.addcmul(v, rng, w, value=-1.0, out=x)
    return x.clamp_(0.0, 1.0)


def dmvr_color(video: torch.Tensor, color: DmvrColor) -> torch.Tensor:
    """DMVR's ``color_default_augm`` body on ``(3, T, H, W)`` in [0, 1]: brightness, saturation, contrast,
    hue, then clip to [0, 1] (no clipping in between, as in TensorFlow). A new tensor; see :func:`dmvr_color_`
    for the in-place form the pipelines use."""
    x = video.clone()
    return dmvr_color_(x, color.brightness, color.saturation, color.contrast, color.hue)


def dmvr_color_reference(video: torch.Tensor, color: DmvrColor) -> torch.Tensor:
    """:func:`dmvr_color` op by op (:func:`adjust_saturation_hsv`, the contrast, :func:`adjust_hue_hsv`): the
    slow, literal form the fused one is tested against."""
    x = adjust_saturation_hsv(video + color.brightness, color.saturation)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    x = mean + color.contrast * (x - mean)
    return adjust_hue_hsv(x, color.hue).clamp_(0.0, 1.0)


def apply_dmvr_params(frames: torch.Tensor, params: DmvrParams, crop_size: int) -> torch.Tensor:
    """``[T, H, W, 3]`` → float32 ``(3, T, crop_size, crop_size)`` in [0, 1] for one draw ``params``."""
    resized = _resize_frames(frames, *params.size)
    crop = resized[:, params.top:params.top + crop_size, params.left:params.left + crop_size]
    if params.flip:
        crop = crop.flip(2)
    video = to_float_video(crop)  # a fresh tensor: coloured in place
    c = params.color
    return dmvr_color_(video, c.brightness, c.saturation, c.contrast, c.hue) if c is not None else video


def dmvr_train_transform(frames: torch.Tensor, crop_size: int = 200, resize_short: int = 224,
                         scale_range: tuple[float, float] = (0.8, 1.2), scale_prob: float = 0.8, flip: bool = True,
                         color_prob: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """DMVR's training augmentation: ``[T, H, W, 3]`` → float32 ``(3, T, crop_size, crop_size)`` in [0, 1].

    1. Short side to ``resize_short`` (``resize_smallest``); with probability ``scale_prob`` the height and
       the width are then rescaled by independent factors ``~ U(scale_range)`` (``scale_jitter_augm``:
       the size is ``int(factor * side)``), never below ``crop_size``. The two resizes are done as one
       bilinear resize of the decoded frames to the final size.
    2. Random ``crop_size`` crop, horizontal flip with probability 0.5 (when ``flip``).
    3. With probability ``color_prob`` (``color_default_augm``, one draw per clip): brightness + delta
       (|delta| <= 32/255), HSV saturation x [0.6, 1.4], contrast x [0.6, 1.4], HSV hue +- 0.2 turns, clip
       to [0, 1]. ``color_prob = 0`` turns colour off.

    Deterministic for a seeded ``generator``; :func:`sample_dmvr_params` gives the draw itself.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    params = sample_dmvr_params(frames.shape[1], frames.shape[2], crop_size, resize_short, scale_range, scale_prob,
                                flip, color_prob, generator)
    return apply_dmvr_params(frames, params, crop_size)


def eval_transform(frames: torch.Tensor, crop_size: int = 224, resize_short: int = 224) -> torch.Tensor:
    """Evaluation: ``[T, H, W, 3]`` → resize short side, centre crop → ``(3, T, crop_size, crop_size)``."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    resized = _resize_frames(frames, *short_side_size(frames.shape[1], frames.shape[2], resize_short))
    return center_crop(to_float_video(resized), crop_size).clamp(0.0, 1.0).contiguous()


def eval_windows(frames: torch.Tensor, num_frames: int, stride: int = 1, num_windows: int = 10,
                 crop_size: int = 224, resize_short: int = 224) -> torch.Tensor:
    """Official multi-window evaluation of a whole decoded video ``[L, H, W, 3]``.

    Window ``n`` starts at ``int(linspace(0, max(0, L - num_frames*stride), N))[n]`` and takes
    ``num_frames`` frames at ``stride``, looping when the video is too short.
    Returns float32 ``(N, 3, T, crop_size, crop_size)``.
    """
    length = frames.shape[0]
    out = []
    for off in linspace_offsets(length, num_frames * stride, num_windows):
        idx = temporal_indices(length, num_frames, stride, off)
        out.append(eval_transform(frames[idx], crop_size, resize_short))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------
# Linear-probe views (mmv_torch.data.probe_sampling)


def probe_train_transform(frames: torch.Tensor, crop_size: int = 224, resize_short: int = 224, flip: bool = True,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Probe training augmentation of the official linear evaluations: ``[T, H, W, 3]`` → random
    horizontal flip (probability 0.5), short side ``resize_short``, random ``crop_size`` crop → float32
    ``(3, T, crop_size, crop_size)`` in [0, 1]. No scale or colour jitter. A side shorter than the crop
    is zero-padded (centred) first."""
    video = resize_short_side(to_float_video(frames), resize_short)
    if flip and _randint(generator, 2) == 1:
        video = video.flip(-1)
    h, w = video.shape[-2:]
    pad_h, pad_w = max(crop_size - h, 0), max(crop_size - w, 0)
    if pad_h or pad_w:
        video = F.pad(video, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return random_crop(video, crop_size, generator).clamp(0.0, 1.0).contiguous()


def probe_test_transform(frames: torch.Tensor, crop_size: int = 224, resize_short: int = 224) -> torch.Tensor:
    """Probe test view: short side ``resize_short``, centre ``crop_size`` crop (zero padding where the
    resized clip is smaller) → float32 ``(3, T, crop_size, crop_size)``."""
    return center_crop(resize_short_side(to_float_video(frames), resize_short), crop_size).clamp(0.0, 1.0).contiguous()
