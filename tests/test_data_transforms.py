"""Tests for mmv_torch.data.transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmv_torch.data import transforms as T


def _frames(t=4, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def test_temporal_helpers():
    assert T.temporal_indices(5, 7, 2, 1).tolist() == [1, 3, 0, 2, 4, 1, 3]
    assert T.linspace_offsets(100, 64, 10) == [int(v) for v in np.linspace(0, 36, 10)]
    assert T.linspace_offsets(30, 64, 3) == [0, 0, 0]
    g = torch.Generator().manual_seed(0)
    offs = {T.random_offset(100, 32, 2, g) for _ in range(400)}
    assert min(offs) == 0 and max(offs) == 100 - 62 - 1  # official: [0, L - 62)
    offs = {T.random_offset(20, 32, 2, g) for _ in range(200)}
    assert offs == set(range(20))  # too short: [0, L)
    starts = [T.random_start_time(10.0, 3.2, g) for _ in range(200)]
    assert 0.0 <= min(starts) and max(starts) <= 6.8
    assert T.random_start_time(2.0, 3.2, g) == 0.0
    assert T.linspace_start_times(10.0, 4.0, 3) == [0.0, 3.0, 6.0]


def test_short_side_size_official():
    assert T.short_side_size(240, 320, 224) == (224, 298)
    assert T.short_side_size(320, 240, 224) == (298, 224)
    assert T.short_side_size(224, 224, 224) == (224, 224)


def test_resize_matches_reference_interpolate():
    fr = _frames()
    got = T.resize_short_side(T.to_float_video(fr), 36)
    assert got.shape == (3, 4, 36, 48)
    ref = F.interpolate(fr.permute(0, 3, 1, 2).float() / 255, size=(36, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, ref.permute(1, 0, 2, 3))


def test_center_crop_and_pad():
    v = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    assert torch.equal(T.center_crop(v, 2), v[..., 1:3, 2:4])
    p = T.center_crop(v, 8)
    assert p.shape == (2, 1, 8, 8)
    assert torch.equal(p[..., 2:6, 1:7], v) and p[..., 0, :].abs().sum() == 0


def test_train_transform_output_and_determinism():
    fr = _frames(t=5)
    a = T.train_transform(fr, crop_size=32, resize_short=40, generator=torch.Generator().manual_seed(3))
    b = T.train_transform(fr, crop_size=32, resize_short=40, generator=torch.Generator().manual_seed(3))
    c = T.train_transform(fr, crop_size=32, resize_short=40, generator=torch.Generator().manual_seed(4))
    assert a.shape == (3, 5, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_transform_without_jitter_is_a_crop_of_the_resize():
    fr = _frames(t=2, h=48, w=64)
    out = T.train_transform(fr, crop_size=40, resize_short=48, scale_jitter=(1.0, 1.0), flip=False,
                            color_strength=0.0, generator=torch.Generator().manual_seed(0))
    full = T.to_float_video(fr)  # resize is the identity at scale 1: the output is an exact crop
    found = any(torch.equal(out, full[..., i:i + 40, j:j + 40]) for i in range(9) for j in range(25))
    assert found


def test_flip_happens_about_half_the_time():
    fr = _frames(t=1, h=8, w=8)
    g = torch.Generator().manual_seed(0)
    full = T.to_float_video(fr)
    flips = 0
    for _ in range(200):
        out = T.train_transform(fr, crop_size=8, resize_short=8, scale_jitter=(1.0, 1.0), color_strength=0.0,
                                generator=g)
        flips += int(torch.equal(out, full.flip(-1)))
        assert torch.equal(out, full) or torch.equal(out, full.flip(-1))
    assert 70 < flips < 130


def test_scale_jitter_changes_field_of_view():
    # A frame with a centred square: its visible size in the crop tracks the random scale.
    fr = torch.zeros(1, 100, 100, 3, dtype=torch.uint8)
    fr[:, 30:70, 30:70] = 255
    g = torch.Generator().manual_seed(0)
    sizes = set()
    for _ in range(30):
        out = T.train_transform(fr, crop_size=100, resize_short=100, scale_jitter=(1.0, 1.6), flip=False,
                                color_strength=0.0, generator=g)
        sizes.add(int((out[0, 0] > 0.5).sum()))
    assert len(sizes) > 5 and max(sizes) > 1.5 * min(sizes)


def test_color_adjustments():
    v = T.to_float_video(_frames(t=2, h=8, w=8))
    torch.testing.assert_close(T.adjust_colors(v), v)
    gray = T.adjust_colors(v, saturation=0.0)
    torch.testing.assert_close(gray[0], gray[1]) and torch.testing.assert_close(gray[1], gray[2])
    flat = T.adjust_colors(v, contrast=0.0)
    assert flat.std(dim=(-2, -1)).max() < 0.2  # colours stay, per-frame grey variance is gone
    torch.testing.assert_close(T.adjust_colors(v, brightness=0.5), v * 0.5)
    # A full hue turn is the identity; a hue shift keeps the grey level (luma) unchanged.
    torch.testing.assert_close(T.adjust_colors(v, hue=1.0), v, atol=1e-5, rtol=0)
    mid = torch.full((3, 1, 2, 2), 0.5)
    mid[0] = 0.6
    shifted = T.adjust_colors(mid, hue=0.25)
    luma = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close((shifted[:, 0, 0, 0] * luma).sum(), (mid[:, 0, 0, 0] * luma).sum())
    assert not torch.allclose(shifted, mid)
    # Sequential application equals the composed affine map (before the final clamp).
    seq = (v * 1.2)
    m = (seq * luma[:, None, None, None]).sum(0).mean(dim=(-2, -1))[None, :, None, None]
    seq = (m + 0.7 * (seq - m)).clamp(0, 1)
    torch.testing.assert_close(T.adjust_colors(v, brightness=1.2, contrast=0.7, order=(0, 1)), seq)


def test_color_jitter_strength_zero_is_identity():
    v = T.to_float_video(_frames(t=2, h=8, w=8))
    out = T.color_jitter(v, 0.0, 0.0, 0.0, 0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, v)


def test_eval_transform_and_windows():
    fr = _frames(t=20, h=48, w=64)
    out = T.eval_transform(fr, crop_size=32, resize_short=36)
    assert out.shape == (3, 20, 32, 32)
    full = T.resize_short_side(T.to_float_video(fr), 36)  # (3, 20, 36, 48)
    # The uint8 resize kernel (fixed point, rounded) is within one grey level of the float resize.
    torch.testing.assert_close(out, full[..., 2:34, 8:40], atol=1.0 / 255 + 1e-5, rtol=0)
    w = T.eval_windows(fr, num_frames=4, stride=2, num_windows=3, crop_size=32, resize_short=36)
    assert w.shape == (3, 3, 4, 32, 32)
    for n, off in enumerate([0, 6, 12]):
        torch.testing.assert_close(w[n], out[:, off:off + 8:2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="frames"):
        T.to_float_video(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="crop"):
        T.random_crop(torch.zeros(3, 1, 4, 4), 8)
