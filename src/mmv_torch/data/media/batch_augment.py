"""DMVR's training augmentation split in two: the draw in the data worker, the pixels on whole batches.

With ``data.augment_on = "batch"`` a data worker decodes a clip, draws its augmentation with
:func:`~mmv_torch.data.media.transforms.sample_dmvr_params` (the same generator, the same calls in the same
order as the per-clip path ``dmvr_train_transform``: the draws are identical, not only equally
distributed) and returns, instead of ``"video"``:

==============  ==========================  ===============================================================
key             dtype, shape                meaning
==============  ==========================  ===============================================================
``frames``      uint8 ``[T, H, W, 3]``      the decoded frames at the source size (no resize)
``augment``     float32 ``(13,)``           the draw, packed as :data:`AUGMENT_FIELDS` (:func:`pack_params`)
==============  ==========================  ===============================================================

The collate (:func:`collate_samples`, the training loader's) zero-pads ``frames`` of clips of different sizes
at the bottom and right to the batch's largest; each clip's own size travels in its ``augment`` row.

:func:`augment_batch` then turns a batch (on any device) into the ``"video"`` of the per-clip path,
float ``(B, 3, T, crop, crop)`` in [0, 1]:

- resize + crop + flip as one bilinear ``F.grid_sample`` (``align_corners=False``) per batch with a
  per-clip grid that samples the source at exactly the points the per-clip bilinear resize to the
  jittered size (half-pixel centres, no antialias, edge clamping) followed by the crop would read. The
  result equals ``F.interpolate`` of float frames and then the crop up to float rounding; the per-clip
  path resizes uint8 frames and rounds them to uint8 first, so the two differ by at most half a grey
  level (plus that kernel's fixed-point weights): < 1/255.
- DMVR's colour augmentation (brightness, HSV saturation, contrast, HSV hue, clip) vectorised over the
  clips whose colour coin fired, with per-clip parameters (:func:`color_batch`: the per-clip path's
  ``dmvr_color_`` with the parameters broadcast over the clips).

On a CPU (``per_clip``, the default there) the batch stage runs each clip through the per-clip
``apply_dmvr_params`` instead: the uint8 resize kernel is faster there than ``grid_sample`` on float frames,
and the pixels are then exactly the worker path's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate, get_worker_info

from mmv_torch.config import DataConfig
from mmv_torch.data.media.transforms import DmvrColor, DmvrParams, apply_dmvr_params, dmvr_color_, sample_dmvr_params

AUGMENT_FIELDS = ("height", "width", "size_h", "size_w", "top", "left", "flip", "crop", "color", "brightness",
                  "saturation", "contrast", "hue")
"""Columns of the packed draw: source size, resized size, crop offset, flip (0/1), crop size, colour coin
(0/1) and the four colour parameters (0 when the coin did not fire)."""
_COL = {name: i for i, name in enumerate(AUGMENT_FIELDS)}


class BatchAugmentError(ValueError):
    """A batch cannot be augmented (missing keys, bad shapes)."""


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` of sample dicts (the training loader's collate), except ``frames`` (uint8
    ``[T, H, W, 3]``, one size per source video): they are zero-padded at the bottom and right to the batch's
    largest ``H`` and ``W`` and stacked to ``[B, T, H, W, 3]`` (each sample's own size travels in its
    ``augment`` row)."""
    if not samples or "frames" not in samples[0]:
        return default_collate(list(samples))
    frames = [s["frames"] for s in samples]
    if any(f.dim() != 4 or f.shape[0] != frames[0].shape[0] or f.shape[-1] != frames[0].shape[-1] for f in frames):
        raise BatchAugmentError(f"cannot collate frames of shapes {sorted({tuple(f.shape) for f in frames})}")
    h, w = max(f.shape[1] for f in frames), max(f.shape[2] for f in frames)
    shape = (len(frames), frames[0].shape[0], h, w, frames[0].shape[-1])
    if get_worker_info() is not None:  # in a loader worker: straight into shared memory, as default_collate
        storage = frames[0]._typed_storage()._new_shared(math.prod(shape), device=frames[0].device)
        out = frames[0].new(storage).resize_(shape).zero_()
    else:
        out = torch.zeros(shape, dtype=frames[0].dtype)
    for dst, f in zip(out, frames):
        dst[:, :f.shape[1], :f.shape[2]] = f
    batch = default_collate([{k: v for k, v in s.items() if k != "frames"} for s in samples])
    batch["frames"] = out
    return batch


def pack_params(params: DmvrParams, height: int, width: int, crop_size: int) -> torch.Tensor:
    """One draw for a ``height`` x ``width`` clip as float32 ``(13,)`` (:data:`AUGMENT_FIELDS`).

    float32 holds the sizes and offsets exactly; the colour parameters are rounded to float32, which is
    the precision the per-clip path computes them in anyway.
    """
    c = params.color or DmvrColor(0.0, 0.0, 0.0, 0.0)
    return torch.tensor([height, width, *params.size, params.top, params.left, float(params.flip), crop_size,
                         float(params.color is not None), c.brightness, c.saturation, c.contrast, c.hue],
                        dtype=torch.float32)


def unpack_params(row: torch.Tensor) -> tuple[tuple[int, int], DmvrParams, int]:
    """Inverse of :func:`pack_params`: ``((height, width), params, crop_size)``."""
    v = row.tolist()
    color = DmvrColor(*v[9:13]) if v[8] else None
    return ((int(v[0]), int(v[1])), DmvrParams(None, (int(v[2]), int(v[3])), int(v[4]), int(v[5]), bool(v[6]), color),
            int(v[7]))


def deferred_augment(frames: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Worker side: draw DMVR's augmentation for ``frames`` (uint8 ``[T, H, W, 3]``) exactly as
    ``dmvr_train_transform`` would, and return the frames untouched with the packed draw."""
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise BatchAugmentError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    h, w = frames.shape[1], frames.shape[2]
    params = sample_dmvr_params(h, w, cfg.crop_size, cfg.resize_short, cfg.scale_jitter, cfg.scale_prob, cfg.flip,
                                cfg.color_prob, generator)
    return {"frames": frames, "augment": pack_params(params, h, w, cfg.crop_size)}


def _source_coords(dst_offset: torch.Tensor, crop: int, src: torch.Tensor, size: torch.Tensor,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, crop)`` source pixel coordinates that a bilinear resize ``src -> size`` (half-pixel centres,
    ``F.interpolate``'s ``max(0, (i + 0.5) * src / size - 0.5)``, clamped to the last pixel) reads for the
    output pixels ``dst_offset + j``; ``flip`` reverses ``j``."""
    j = torch.arange(crop, device=src.device, dtype=torch.float64)[None].expand(src.shape[0], crop)
    if flip is not None:
        j = torch.where(flip[:, None], crop - 1 - j, j)
    scale = src.double() / size.double()
    x = (dst_offset.double()[:, None] + j + 0.5) * scale[:, None] - 0.5
    return torch.minimum(x.clamp(min=0.0), (src.double() - 1)[:, None])


def resize_crop_flip(frames: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Geometry of a batch: uint8 ``[B, T, Hp, Wp, 3]`` (clip ``b`` in the top-left ``height x width``) and
    packed draws ``(B, 13)`` → float32 ``(B, T, 3, crop, crop)`` in [0, 1], one ``grid_sample``."""
    b, t, hp, wp, _ = frames.shape
    crop = int(params[0, _COL["crop"]])
    p = params.to(frames.device, torch.float64)
    ys = _source_coords(p[:, _COL["top"]], crop, p[:, _COL["height"]], p[:, _COL["size_h"]])
    xs = _source_coords(p[:, _COL["left"]], crop, p[:, _COL["width"]], p[:, _COL["size_w"]], p[:, _COL["flip"]] > 0)
    # grid_sample (align_corners=False) reads pixel x at normalised (2x + 1) / W - 1.
    gy = ((2 * ys + 1) / hp - 1).float()
    gx = ((2 * xs + 1) / wp - 1).float()
    grid = torch.stack((gx[:, None, :].expand(b, crop, crop), gy[:, :, None].expand(b, crop, crop)), dim=-1)
    x = frames.permute(0, 1, 4, 2, 3).reshape(b, t * 3, hp, wp).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.div_(255.0).reshape(b, t, 3, crop, crop)


def color_batch(video: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor,
                hue: torch.Tensor) -> torch.Tensor:
    """``dmvr_color`` of ``(3, B, T, H, W)`` in [0, 1] with per-clip parameters ``(B,)``: brightness,
    HSV saturation, contrast (each frame's mean of each channel), HSV hue, then clip to [0, 1].

    :func:`~mmv_torch.data.media.transforms.dmvr_color_` (the per-clip path's fused maths) with the parameters
    broadcast over the clips; ``video`` is left as it is.
    """
    shape = (-1, 1, 1, 1)
    return dmvr_color_(video.clone(), brightness.reshape(shape), saturation.reshape(shape), contrast.reshape(shape),
                       hue.reshape(shape))


def augment_frames(frames: torch.Tensor, params: torch.Tensor, chunk: int = 8, per_clip: bool | None = None
                   ) -> torch.Tensor:
    """The batch stage: uint8 ``[B, T, Hp, Wp, 3]`` + packed draws ``(B, 13)`` → float32
    ``(B, 3, T, crop, crop)``, equal to the per-clip ``apply_dmvr_params`` (module doc). Works on the
    frames' device, ``chunk`` clips at a time (bounds the float intermediates).

    ``per_clip`` (default: on a CPU): each clip through ``apply_dmvr_params`` itself (uint8 resize, crop, flip,
    colour: the worker path's pixels; on a CPU 1.8x faster than ``grid_sample`` on the float frames), else the
    batched ``grid_sample`` + :func:`color_batch` (the accelerator path)."""
    if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise BatchAugmentError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if params.dim() != 2 or params.shape != (frames.shape[0], len(AUGMENT_FIELDS)):
        raise BatchAugmentError(f"augment must be ({frames.shape[0]}, {len(AUGMENT_FIELDS)}), got "
                                f"{tuple(params.shape)}")
    p = params.to(frames.device, torch.float32)
    crops = p[:, _COL["crop"]]
    if bool((crops != crops[0]).any()):
        raise BatchAugmentError(f"the clips of a batch must share one crop size, got {sorted(set(crops.tolist()))}")
    sizes = p[:, [_COL["height"], _COL["width"]]]
    if bool((sizes > torch.tensor(frames.shape[2:4], device=p.device)).any()) or bool((sizes < 1).any()):
        raise BatchAugmentError(f"clip sizes {sizes.tolist()} do not fit the {tuple(frames.shape[2:4])} frames")
    b, t = frames.shape[:2]
    crop = int(crops[0])
    out = torch.empty((b, 3, t, crop, crop), dtype=torch.float32, device=frames.device)
    if (frames.device.type == "cpu") if per_clip is None else per_clip:
        for i in range(b):
            (h, w), draw, _ = unpack_params(p[i])
            out[i] = apply_dmvr_params(frames[i, :, :h, :w], draw, crop)
        return out
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        video = resize_crop_flip(frames[s:e], p[s:e]).permute(2, 0, 1, 3, 4)  # (3, b', T, crop, crop)
        on = (p[s:e, _COL["color"]] > 0).nonzero().flatten()
        if len(on):
            q = p[s:e][on].reshape(-1, len(AUGMENT_FIELDS), 1, 1, 1)
            video[:, on] = dmvr_color_(video[:, on], q[:, _COL["brightness"]], q[:, _COL["saturation"]],
                                       q[:, _COL["contrast"]], q[:, _COL["hue"]])  # video[:, on] is a copy
        out[s:e] = video.permute(1, 0, 2, 3, 4)
    return out


def augment_batch(batch: dict[str, Any], dtype: torch.dtype | None = None, chunk: int = 8,
                  per_clip: bool | None = None) -> dict[str, Any]:
    """A collated batch with ``frames`` and ``augment`` (the worker side of ``data.augment_on = "batch"``)
    → the same batch with ``"video"`` float ``(B, 3, T, crop, crop)`` (``dtype``, default float32) in their
    place; a batch without ``frames`` is returned as it is. ``per_clip``: see :func:`augment_frames`."""
    if "frames" not in batch:
        return batch
    if "augment" not in batch:
        raise BatchAugmentError("a batch with 'frames' needs 'augment' (the packed draws of its clips)")
    out = {k: v for k, v in batch.items() if k not in ("frames", "augment")}
    video = augment_frames(batch["frames"], batch["augment"], chunk, per_clip)
    out["video"] = video if dtype is None or dtype == video.dtype else video.to(dtype)
    return out
