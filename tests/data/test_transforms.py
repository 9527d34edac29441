"""Tests for mmv_torch.data.media.transforms."""

from __future__ import annotations

import colorsys
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmv_torch.config import PRESETS, DataConfig
from mmv_torch.data import datasets
from mmv_torch.data.media import transforms as T


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


# ------------------------------------------------------------------------------------------------
# DMVR's training augmentation

N_DRAWS = 4000


def _draws(h=240, w=320, **kw):
    """Parameters of N_DRAWS clips, one seed each."""
    return [T.sample_dmvr_params(h, w, generator=torch.Generator().manual_seed(seed), **kw) for seed in range(N_DRAWS)]


def _within(frac, p, n=N_DRAWS, k=4.0):
    """``frac`` is within k standard errors of a Bernoulli(p) rate over n draws."""
    return abs(frac - p) <= k * math.sqrt(p * (1 - p) / n)


def test_dmvr_scale_jitter_distribution():
    draws = _draws()  # 240x320 -> short side 224: 224 x 298 before the jitter, crop 200
    jittered = [d for d in draws if d.scale is not None]
    assert _within(len(jittered) / N_DRAWS, 0.8)
    for d in draws:
        if d.scale is None:
            assert d.size == (224, 298)
        else:
            s_h, s_w = d.scale
            assert 0.8 <= s_h <= 1.2 and 0.8 <= s_w <= 1.2
            assert d.size == (max(200, int(s_h * 224)), max(200, int(s_w * 298)))
        assert 0 <= d.top <= d.size[0] - 200 and 0 <= d.left <= d.size[1] - 200
    s = np.array([d.scale for d in jittered])
    n = len(s)
    # Uniform on [0.8, 1.2]: mean 1, standard deviation 0.4 / sqrt(12); height and width independent.
    assert abs(s.mean(0) - 1.0).max() <= 4 * 0.4 / math.sqrt(12 * n)
    assert abs(s.std(0) - 0.4 / math.sqrt(12)).max() < 0.01
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1]) <= 4 / math.sqrt(n)
    assert s.min() < 0.81 and s.max() > 1.19
    for axis in (0, 1):  # each quarter of the range gets a quarter of the draws
        counts = np.histogram(s[:, axis], bins=4, range=(0.8, 1.2))[0]
        assert all(_within(c / n, 0.25, n) for c in counts)
    # The aspect ratio of the crop's source changes (DMVR's jitter is per axis, not one zoom).
    ratios = {round(d.size[1] / d.size[0], 2) for d in jittered}
    assert len(ratios) > 20
    # Crop offsets cover the jittered frame: the largest offset reaches the far edge.
    assert max(d.top for d in draws) >= 60 and max(d.left for d in draws) >= 140
    assert _within(sum(d.flip for d in draws) / N_DRAWS, 0.5)


def test_dmvr_color_distribution():
    draws = _draws(h=64, w=64, crop_size=32, resize_short=40)
    colors = [d.color for d in draws if d.color is not None]
    assert _within(len(colors) / N_DRAWS, 0.8)
    n = len(colors)
    specs = {"brightness": (-32 / 255, 32 / 255), "saturation": (0.6, 1.4), "contrast": (0.6, 1.4),
             "hue": (-0.2, 0.2)}
    for name, (low, high) in specs.items():
        x = np.array([getattr(c, name) for c in colors])
        assert low <= x.min() and x.max() <= high, name
        width = high - low
        assert x.min() < low + 0.01 * width and x.max() > high - 0.01 * width, name
        assert abs(x.mean() - (low + high) / 2) <= 4 * width / math.sqrt(12 * n), name
    # The colour parameters are independent of each other.
    m = np.array([[c.brightness, c.saturation, c.contrast, c.hue] for c in colors])
    corr = np.corrcoef(m.T) - np.eye(4)
    assert abs(corr).max() <= 4 / math.sqrt(n)


def test_dmvr_probabilities_zero_and_one():
    off = _draws(h=64, w=64, crop_size=32, resize_short=40, scale_prob=0.0, color_prob=0.0, flip=False)[:200]
    assert all(d.scale is None and d.color is None and not d.flip and d.size == (40, 40) for d in off)
    on = _draws(h=64, w=64, crop_size=32, resize_short=40, scale_prob=1.0, color_prob=1.0)[:200]
    assert all(d.scale is not None and d.color is not None for d in on)
    with pytest.raises(ValueError, match="color_prob"):
        T.sample_dmvr_params(64, 64, color_prob=1.5)


def test_dmvr_transform_range_shape_determinism():
    fr = _frames(t=3, h=48, w=64, seed=5)
    fr[0] = 255  # saturated and black frames: the colour ops must stay in [0, 1]
    fr[1] = 0
    outs = [T.dmvr_train_transform(fr, crop_size=32, resize_short=40, generator=torch.Generator().manual_seed(s))
            for s in range(40)]
    for out in outs:
        assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    again = T.dmvr_train_transform(fr, crop_size=32, resize_short=40, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, outs[7]) and not torch.equal(outs[7], outs[8])
    # The transform is exactly its parameters applied.
    params = T.sample_dmvr_params(48, 64, 32, 40, generator=torch.Generator().manual_seed(7))
    assert torch.equal(T.apply_dmvr_params(fr, params, 32), outs[7])


def test_dmvr_apply_is_resize_crop_flip():
    fr = _frames(t=2, h=48, w=64, seed=6)
    p = T.DmvrParams(scale=(1.1, 0.9), size=(52, 57), top=5, left=9, flip=True, color=None)
    out = T.apply_dmvr_params(fr, p, 40)
    resized = F.interpolate(fr.permute(0, 3, 1, 2), size=(52, 57), mode="bilinear", align_corners=False)
    want = resized[:, :, 5:45, 9:49].flip(-1).permute(1, 0, 2, 3).float() / 255
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def _hsv_ref(video, fn):
    """Apply ``fn(h, s, v) -> (h, s, v)`` to every pixel of ``(3, ...)`` with :mod:`colorsys` (float64)."""
    flat = video.double().reshape(3, -1)
    out = torch.empty_like(flat)
    for i in range(flat.shape[1]):
        h, s, v = colorsys.rgb_to_hsv(*flat[:, i].tolist())
        out[:, i] = torch.tensor(colorsys.hsv_to_rgb(*fn(h, s, v)), dtype=torch.float64)
    return out.reshape(video.shape)


def _pixels():
    g = torch.Generator().manual_seed(9)
    v = torch.rand(3, 2, 5, 5, generator=g)
    v[:, 0, 0, 0] = 0.5  # grey
    v[:, 0, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # pure red
    v[:, 0, 0, 2] = torch.tensor([0.2, 0.9, 0.9])  # two channels at the max
    v[:, 0, 0, 3] = 0.0  # black
    return v


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.4, 3.0])
def test_saturation_matches_colorsys(factor):
    v = _pixels()
    want = _hsv_ref(v, lambda h, s, val: (h, min(1.0, s * factor), val))
    torch.testing.assert_close(T.adjust_saturation_hsv(v, factor).double(), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("delta", [-0.2, -0.05, 0.0, 1 / 3, 0.2, 0.5])
def test_hue_matches_colorsys(delta):
    v = _pixels()
    want = _hsv_ref(v, lambda h, s, val: ((h + delta) % 1.0, s, val))
    torch.testing.assert_close(T.adjust_hue_hsv(v, delta).double(), want, rtol=0, atol=2e-6)


def test_hsv_ops_outside_unit_range_follow_tensorflow():
    # TensorFlow's kernels give saturation 0 to a pixel whose max is <= 0 (it becomes grey at its max), and
    # clip the saturation to 1 (so a negative channel is lifted to 0 while the max and the hue stay).
    px = torch.tensor([[-0.1, 1.2], [-0.2, 0.5], [-0.3, -0.1]]).reshape(3, 1, 1, 2)
    for out in (T.adjust_hue_hsv(px, 0.0), T.adjust_saturation_hsv(px, 1.0)):
        torch.testing.assert_close(out[:, 0, 0, 0], torch.full((3,), -0.1))
    sat = T.adjust_saturation_hsv(px, 1.0)[:, 0, 0, 1]
    torch.testing.assert_close(sat, torch.tensor([1.2, 1.2 - 1.2 * 0.7 / 1.3, 0.0]))
    hue = T.adjust_hue_hsv(px, 0.0)[:, 0, 0, 1]  # no shift: the range (chroma) is kept as it is
    torch.testing.assert_close(hue, px[:, 0, 0, 1])


def test_dmvr_color_is_brightness_saturation_contrast_hue_in_order():
    g = torch.Generator().manual_seed(10)
    v = 0.2 + 0.6 * torch.rand(3, 2, 3, 4, generator=g)  # values stay in [0, 1] through every step below
    c = T.DmvrColor(brightness=0.1, saturation=1.2, contrast=0.8, hue=0.15)
    x = v.double() + 0.1
    x = _hsv_ref(x, lambda h, s, val: (h, min(1.0, 1.2 * s), val))
    mean = x.mean(dim=(-2, -1), keepdim=True)  # per frame and channel
    x = mean + 0.8 * (x - mean)
    x = _hsv_ref(x, lambda h, s, val: ((h + 0.15) % 1.0, s, val)).clamp(0, 1)
    torch.testing.assert_close(T.dmvr_color(v, c).double(), x, rtol=0, atol=1e-5)
    # Another order gives another result: the order matters and is DMVR's.
    y = _hsv_ref(v.double() + 0.1, lambda h, s, val: ((h + 0.15) % 1.0, s, val))
    assert (T.dmvr_color(v, c).double() - y).abs().max() > 1e-2


def test_fused_dmvr_color_equals_the_op_by_op_form():
    # Grey, black, tied-max and 8-bit pixels, brightness pushing values below 0 and above 1, hues at +-0.2:
    # the fused in-place maths must equal adjust_saturation_hsv -> contrast -> adjust_hue_hsv, per clip and with
    # per-clip tensor parameters (the batch stage), and leave its input alone.
    g = torch.Generator().manual_seed(11)
    worst = 0.0
    for s in range(40):
        v = torch.rand(3, 3, 6, 7, generator=g)
        v[:, 0, :, :2] = 0.0
        v[:, 1, :, 2:4] = 0.5
        v[0, 2, :, 4:] = v[1, 2, :, 4:]
        v[:, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])[:, None]
        if s % 2:
            v = torch.round(v * 255) / 255
        p = [float(torch.empty(()).uniform_(lo, hi, generator=g))
             for lo, hi in ((-32 / 255, 32 / 255), (0.6, 1.4), (0.6, 1.4), (-0.2, 0.2))]
        p[0] = (-0.12, 0.12, p[0])[s % 3]
        p[3] = (-0.2, 0.2, p[3], p[3])[s % 4]
        c = T.DmvrColor(*p)
        before = v.clone()
        out = T.dmvr_color(v, c)
        assert torch.equal(v, before)
        worst = max(worst, (out - T.dmvr_color_reference(v, c)).abs().max().item())
    assert worst < 5e-6
    clips = torch.rand(3, 4, 2, 5, 5, generator=g)
    cols = [torch.tensor(c) for c in ([0.1, -0.1, 0.0, 0.05], [0.6, 1.4, 1.0, 0.9], [1.3, 0.7, 1.0, 1.1],
                                      [0.2, -0.2, 0.0, 0.1])]
    out = T.dmvr_color_(clips.clone(), *(col.reshape(-1, 1, 1, 1) for col in cols))
    for i in range(4):
        want = T.dmvr_color_reference(clips[:, i], T.DmvrColor(*(float(col[i]) for col in cols)))
        assert (out[:, i] - want).abs().max() < 5e-6


def test_augment_config_defaults_and_checks():
    assert DataConfig().augment == "dmvr" and (DataConfig().scale_prob, DataConfig().color_prob) == (0.8, 0.8)
    assert {name: cfg.data.augment for name, cfg in PRESETS.items()} == dict.fromkeys(PRESETS, "dmvr")
    with pytest.raises(ValueError, match="data.augment must be"):
        DataConfig(augment="vatt")
    with pytest.raises(ValueError, match=r"data.color_prob must be in \[0, 1\]"):
        DataConfig(color_prob=1.5)
    with pytest.raises(ValueError, match=r"data.scale_prob must be in \[0, 1\]"):
        DataConfig(scale_prob=-0.1)


@pytest.mark.parametrize("augment", ["dmvr", "default"])
def test_make_sample_uses_the_configured_augmentation(monkeypatch, augment):
    fr = _frames(t=4, h=48, w=64, seed=11)
    clip = SimpleNamespace(frames=fr, audio=torch.zeros(16000), has_audio=True)
    monkeypatch.setattr(datasets, "load_clips", lambda src, starts, *a, **k: [clip for _ in starts])
    cfg = DataConfig(num_frames=4, fps=4.0, crop_size=32, resize_short=40, augment=augment, audio_seconds=1.0)
    sample = datasets.make_sample("x.mp4", "x.mp4", (), 1.0, cfg, None, True, torch.Generator().manual_seed(3), 0)
    g = torch.Generator().manual_seed(3)
    T.random_start_time(1.0, 1.0, g)  # make_sample draws the clip start first
    if augment == "dmvr":
        want = T.dmvr_train_transform(fr, 32, 40, (0.8, 1.2), 0.8, True, 0.8, g)
    else:
        want = T.train_transform(fr, 32, 40, (0.8, 1.2), True, 0.4, g)
    assert torch.equal(sample["video"], want)
