import pytest
import torch

from mmv_torch.config import BatchNormConfig, VideoConfig
from mmv_torch.models.layers import temporal_shift
from mmv_torch.models.resnet_blocks import _shift
from mmv_torch.models.tsm_resnet import ENDPOINTS, TSMResNet

BN = BatchNormConfig()


def _tsm(depth=50, width=1.0, **kw):
    return TSMResNet(VideoConfig(backbone="tsm_resnet", depth=depth, width_mult=width), BN, **kw)


def _small(**kw):
    # width 1/8 keeps the official structure (depth 50) at a few hundred k parameters.
    return _tsm(50, 0.125, **kw)


def _meta(depth=50, width=1.0):
    # Structure-only tests build on the meta device: no memory, no init cost.
    with torch.device("meta"):
        return _tsm(depth, width)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_param_counts_match_official():
    assert _count(_meta(50, 1.0)) == 23_500_352
    assert _count(_meta(50, 2.0)) == 93_891_712
    assert _meta(50, 2.0).out_dim == 4096


def test_official_structure_names():
    names = set(dict(_meta(50, 1.0).named_parameters()))
    assert "stem.weight" in names and "final_bn.weight" in names
    for i, n in enumerate((3, 4, 6, 3)):
        assert f"unit_{i}.block_0.shortcut_conv.weight" in names
        assert f"unit_{i}.block_1.shortcut_conv.weight" not in names
        for j in range(n):
            for k in range(3):
                assert f"unit_{i}.block_{j}.conv_{k}.weight" in names
                assert f"unit_{i}.block_{j}.bn_{k}.weight" in names
        assert f"unit_{i}.block_{n}.conv_0.weight" not in names
    # The official visual tower has 151 param leaves: 53 conv kernels + 49 BNs x (scale, offset).
    assert len(names) == 151


@pytest.mark.parametrize("shape", [(2, 3, 4, 32, 32), (1, 3, 1, 17, 23), (1, 3, 5, 33, 20), (3, 3, 2, 9, 9)])
def test_output_and_endpoint_shapes(shape):
    m = _small().eval()
    b, _, t, h, w = shape
    x = torch.rand(shape)
    with torch.no_grad():
        e = m.forward_endpoints(x)
        out = m(x)
    assert list(e) == list(ENDPOINTS)
    assert out.shape == (b, m.out_dim) == (b, 256)
    torch.testing.assert_close(e["output"], out)
    hh, ww = -(-h // 2), -(-w // 2)
    assert e["stem"].shape == (b * t, 8, hh, ww)
    hh, ww = -(-hh // 2), -(-ww // 2)
    assert e["max_pool"].shape == (b * t, 8, hh, ww)
    for i, c in enumerate((32, 64, 128, 256)):
        if i:
            hh, ww = -(-hh // 2), -(-ww // 2)
        assert e[f"unit_{i}"].shape == (b * t, c, hh, ww)
    assert e["last_conv"].shape == (b * t, 256, hh, ww)
    assert (e["last_conv"] >= 0).all()


def test_every_parameter_gets_gradient():
    m = _small().train()
    m(torch.rand(2, 3, 3, 24, 20)).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_deterministic_and_batch_independent():
    m = _small().eval()
    x = torch.rand(3, 3, 4, 20, 20)
    with torch.no_grad():
        a, b = m(x), m(x)
        single = m(x[1:2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(single[0], a[1], rtol=1e-4, atol=1e-5)


def test_shift_mixes_frames_and_switch_off_is_per_frame():
    torch.manual_seed(0)
    m = _small().eval()
    x = torch.rand(1, 3, 4, 24, 24)
    x2 = x.clone()
    x2[:, :, 0] = torch.rand(3, 24, 24)  # change frame 0 only
    with torch.no_grad():
        f1 = m.forward_endpoints(x)["last_conv"]
        f2 = m.forward_endpoints(x2)["last_conv"]
        # With the shift, frame 1 sees frame 0.
        assert not torch.allclose(f1[1], f2[1])
        m.shift = False
        g1 = m.forward_endpoints(x)["last_conv"]
        g2 = m.forward_endpoints(x2)["last_conv"]
        torch.testing.assert_close(g1[1:], g2[1:], rtol=0, atol=0)
        # Shift off == per-frame images; forward_images always runs without the shift.
        frames = x[0].transpose(0, 1)
        torch.testing.assert_close(m.forward_images(frames).mean(0, keepdim=True), m(x), rtol=1e-4, atol=1e-5)
        m.shift = True
        assert not torch.allclose(m(x), m.forward_images(frames).mean(0, keepdim=True))
    with_shift_off = _small(shift=False)
    assert with_shift_off.shift is False


def test_zero_shift_fraction_equals_no_shift():
    torch.manual_seed(0)
    a = TSMResNet(VideoConfig(backbone="tsm_resnet", width_mult=0.125, shift_fraction=0.0), BN).eval()
    b = _small(shift=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("shape,frames", [((6, 16, 5, 7), 3), ((4, 64, 3, 3), 4), ((2, 17, 2, 3), 1)])
def test_fast_shift_equals_official(channels_last, shape, frames):
    x = torch.randn(shape, requires_grad=True)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    out = _shift(xin, frames, 0.125)
    ref = temporal_shift(x, frames, 0.125)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=torch.channels_last) == (channels_last and shape[2] * shape[3] > 1)
    g = torch.randn(shape)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=0, atol=0)
    assert _shift(xin, None, 0.125) is xin
    with pytest.raises(ValueError, match="num_frames"):
        _shift(xin, 5, 0.125)


def test_memory_format_does_not_change_result():
    torch.manual_seed(0)
    a = _small(channels_last=True).eval()
    b = _small(channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 3, 19, 22)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_basic_block_depths():
    m = _tsm(18, 0.25).eval()
    assert m.out_dim == 128
    assert "unit_0.block_0.shortcut_conv.weight" in dict(m.named_parameters())
    with torch.no_grad():
        assert m(torch.rand(1, 3, 2, 16, 16)).shape == (1, 128)


def test_bad_input_raises():
    m = _small()
    with pytest.raises(ValueError, match="TSMResNet"):
        m(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="forward_images"):
        m.forward_images(torch.rand(1, 1, 16, 16))
