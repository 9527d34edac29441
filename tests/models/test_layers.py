import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmv_torch.models.layers import (
    Conv2dSame,
    Conv3dSame,
    MaxPoolSame,
    SelfGating,
    same_pads,
    space_to_depth,
    temporal_shift,
)


@pytest.mark.parametrize(
    "n,k,s,expected",
    [(224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (16, 2, 1, (0, 1)), (32, 4, 1, (1, 2)),
     (4, 2, 2, (0, 0)), (5, 2, 2, (0, 1)), (10, 3, 1, (1, 1)), (1, 3, 2, (1, 1))],
)
def test_same_pads_match_tf_rule(n, k, s, expected):
    assert same_pads(n, k, s) == expected
    out = math.ceil(n / s)
    assert (n + sum(expected) - k) // s + 1 == out


def _reference_conv(x, w, stride):
    nd = w.dim() - 2
    pads = []
    for n, k, s in zip(reversed(x.shape[-nd:]), reversed(w.shape[-nd:]), reversed(stride)):
        pads += list(same_pads(n, k, s))
    fn = F.conv3d if nd == 3 else F.conv2d
    return fn(F.pad(x, pads), w, stride=stride)


@pytest.mark.parametrize("shape", [(1, 3, 5, 9, 8), (2, 3, 4, 7, 11), (1, 3, 1, 1, 1)])
@pytest.mark.parametrize("k,s", [((3, 3, 3), (1, 1, 1)), ((2, 4, 4), (1, 1, 1)), ((7, 7, 7), (2, 2, 2)),
                                 ((1, 3, 3), (1, 2, 2))])
def test_conv3d_same_equals_explicit_asymmetric_padding(shape, k, s):
    torch.manual_seed(0)
    conv = Conv3dSame(3, 4, k, s)
    x = torch.randn(shape)
    y = conv(x)
    assert y.shape[2:] == tuple(math.ceil(n / st) for n, st in zip(shape[2:], s))
    torch.testing.assert_close(y, _reference_conv(x, conv.weight, s))


def test_conv2d_same_stem_pads_extra_pixel_at_end():
    conv = Conv2dSame(1, 1, 7, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap: sees padding (2 rows) before the image
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    y = conv(x)
    # pads (2,3) on a length-4 axis with stride 2 -> out 2; tap (0,0) reads index -2 then 0.
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 0, 0] == 0 and y[0, 0, 1, 1] == x[0, 0, 0, 0]


def test_maxpool_same_pads_with_minus_inf():
    pool = MaxPoolSame((3, 3), (2, 2))
    x = -torch.ones(1, 1, 4, 4) - torch.arange(16.0).reshape(1, 1, 4, 4)
    y = pool(x)
    assert y.shape == (1, 1, 2, 2)
    # zero padding would give 0 at the last window; -inf padding keeps the real maximum.
    assert torch.all(y < 0)
    expected = torch.tensor([[x[0, 0, :3, :3].max(), x[0, 0, :3, 2:].max()],
                             [x[0, 0, 2:, :3].max(), x[0, 0, 2:, 2:].max()]])
    torch.testing.assert_close(y[0, 0], expected)


@pytest.mark.parametrize("shape", [(1, 2, 5, 6, 7), (2, 1, 4, 4, 4), (1, 1, 1, 2, 3)])
@pytest.mark.parametrize("k,s", [((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                 ((1, 3, 3), (1, 2, 2))])
def test_maxpool3d_same_matches_explicit(shape, k, s):
    x = torch.randn(shape)
    pads = []
    for n, kk, ss in zip(reversed(shape[2:]), reversed(k), reversed(s)):
        pads += list(same_pads(n, kk, ss))
    ref = F.max_pool3d(F.pad(x, pads, value=-math.inf), k, s)
    torch.testing.assert_close(MaxPoolSame(k, s)(x), ref)


def test_space_to_depth_matches_official_channels_last_transform():
    rng = np.random.default_rng(0)
    v = rng.uniform(size=(2, 4, 6, 8, 3)).astype(np.float32)  # [B,T,H,W,C]
    b, t, h, w, c = v.shape
    ref = v.reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    ref = ref.reshape(b, t // 2, h // 2, w // 2, 8 * c)
    out = space_to_depth(torch.from_numpy(v).permute(0, 4, 1, 2, 3))
    np.testing.assert_array_equal(out.permute(0, 2, 3, 4, 1).numpy(), ref)
    with pytest.raises(ValueError, match="even"):
        space_to_depth(torch.zeros(1, 3, 3, 4, 4))


def test_temporal_shift_official_channel_order():
    b, t, c = 2, 3, 16
    x = torch.randn(b * t, c, 2, 2)
    y = temporal_shift(x, t, 0.125).reshape(b, t, c, 2, 2)
    v = x.reshape(b, t, c, 2, 2)
    n = 2
    for bi in range(b):
        for ti in range(t):
            nxt = v[bi, ti + 1, c - n:] if ti + 1 < t else torch.zeros(n, 2, 2)
            prv = v[bi, ti - 1, :n] if ti > 0 else torch.zeros(n, 2, 2)
            torch.testing.assert_close(y[bi, ti, :n], nxt)
            torch.testing.assert_close(y[bi, ti, n:c - n], v[bi, ti, n:c - n])
            torch.testing.assert_close(y[bi, ti, c - n:], prv)


def test_self_gating_scales_channels():
    g = SelfGating(4)
    x = torch.randn(2, 4, 3, 5, 5)
    gate = torch.sigmoid(g.self_gating(x.mean(dim=(2, 3, 4))))
    torch.testing.assert_close(g(x), x * gate[:, :, None, None, None])


CL3D = torch.channels_last_3d


@pytest.mark.parametrize("shape", [(1, 5, 5, 9, 8), (2, 3, 4, 7, 11), (1, 4, 1, 1, 1), (3, 2, 6, 4, 4)])
@pytest.mark.parametrize("k,s", [((1, 3, 3), (1, 1, 1)), ((3, 1, 1), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)),
                                 ((2, 4, 4), (1, 1, 1)), ((1, 1, 1), (1, 1, 1)), ((2, 1, 1), (1, 1, 1)),
                                 ((3, 3, 3), (1, 1, 1))])
def test_conv3d_same_channels_last_fast_paths_equal_reference(shape, k, s):
    torch.manual_seed(0)
    conv = Conv3dSame(shape[1], 6, k, s).to(memory_format=CL3D)
    x = torch.randn(shape)
    ref = _reference_conv(x, conv.weight.contiguous(), s)
    x_cl = x.clone().contiguous(memory_format=CL3D).requires_grad_(True)
    y = conv(x_cl)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    x_ref = x.clone().requires_grad_(True)
    _reference_conv(x_ref, conv.weight.detach().contiguous(), s).square().sum().backward()
    torch.testing.assert_close(x_cl.grad, x_ref.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 3, 6, 10, 12), (2, 2, 5, 7, 9), (1, 1, 1, 2, 3), (1, 4, 4, 4, 4)])
@pytest.mark.parametrize("k,s", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                 ((3, 3, 3), (1, 1, 1)), ((2, 2, 2), (1, 1, 1)), ((1, 1, 1), (2, 2, 2))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_maxpool3d_same_separable_paths_match_explicit(shape, k, s, channels_last):
    x = torch.randn(shape)
    pads = []
    for n, kk, ss in zip(reversed(shape[2:]), reversed(k), reversed(s)):
        pads += list(same_pads(n, kk, ss))
    ref = F.max_pool3d(F.pad(x, pads, value=-math.inf), k, s)
    xin = x.contiguous(memory_format=CL3D) if channels_last else x
    torch.testing.assert_close(MaxPoolSame(k, s)(xin), ref, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 10), (1, 1, 1, 2)])
@pytest.mark.parametrize("k,s", [((3, 3), (2, 2)), ((2, 2), (1, 1)), ((3, 3), (1, 1))])
def test_maxpool2d_same_matches_explicit(shape, k, s):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    pads = []
    for n, kk, ss in zip(reversed(shape[2:]), reversed(k), reversed(s)):
        pads += list(same_pads(n, kk, ss))
    ref = F.max_pool2d(F.pad(x, pads, value=-math.inf), k, s)
    torch.testing.assert_close(MaxPoolSame(k, s)(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("grad", [False, True])
def test_conv_relu_fused_inference_path_matches_plain(grad):
    torch.manual_seed(0)
    conv2 = Conv2dSame(5, 7, 3, 2).to(memory_format=torch.channels_last)
    x2 = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
    conv3 = Conv3dSame(5, 7, (1, 3, 3)).to(memory_format=CL3D)
    x3 = torch.randn(2, 5, 3, 9, 8).contiguous(memory_format=CL3D)
    bias = torch.randn(7)
    with torch.set_grad_enabled(grad):
        for conv, x, ref in ((conv2, x2, _reference_conv(x2, conv2.weight, (2, 2))),
                             (conv3, x3, _reference_conv(x3, conv3.weight, (1, 1, 1)))):
            ref = torch.relu(ref + bias.view(1, -1, *([1] * (x.dim() - 2))))
            torch.testing.assert_close(conv.conv(x, conv.weight, bias, relu=True), ref, rtol=1e-5, atol=1e-5)
