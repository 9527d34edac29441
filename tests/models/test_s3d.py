import math

import pytest
import torch

from mmv_torch.config import PRESETS, BatchNormConfig, VideoConfig
from mmv_torch.models.layers import space_to_depth
from mmv_torch.models.s3d import ENDPOINTS, S3D

TINY = PRESETS["tiny"].model.video
BN = BatchNormConfig()


def _tiny(**kw) -> S3D:
    torch.manual_seed(0)
    return S3D(VideoConfig(**{"backbone": "s3d", "width_mult": 0.125, "s3d_stem": "standard", **kw}), BN)


def test_param_count_matches_official():
    m = S3D(VideoConfig(), BN)
    assert sum(p.numel() for p in m.parameters()) == 9_146_000
    assert m.out_dim == 1024
    assert m.conv2d_1a_7x7.conv.weight.shape == (64, 24, 2, 4, 4)


def test_official_module_names():
    m = S3D(VideoConfig(), BN)
    keys = set(m.state_dict())
    for k in [
        "conv2d_1a_7x7.conv.weight", "conv2d_1a_7x7.bn.running_var", "conv2d_2b_1x1.bn.bias",
        "conv2d_2c_3x3.conv.weight", "conv2d_2c_3x3.conv_t.weight", "conv2d_2c_3x3.bn_t.weight",
        "conv2d_2c_3x3.gating.self_gating.weight", "mixed_3b.branch_0_conv2d_0a_1x1.gating.self_gating.bias",
        "mixed_3b.branch_1_conv2d_0b_3x3.conv_t.weight", "mixed_5c.branch_3_conv2d_0b_1x1.conv.weight",
    ]:
        assert k in keys, k
    assert m.conv2d_2c_3x3.conv.weight.shape == (192, 64, 1, 3, 3)
    assert m.conv2d_2c_3x3.conv_t.weight.shape == (192, 192, 3, 1, 1)
    # gating only on the last unit of each branch, never on the 1x1 reductions or the stem
    assert not any("branch_1_conv2d_0a_1x1.gating" in k or "branch_2_conv2d_0a_1x1.gating" in k for k in keys)
    assert not any(k.startswith(("conv2d_1a_7x7.gating", "conv2d_2b_1x1.gating")) for k in keys)
    plain = S3D(VideoConfig(s3d_gating=False), BN)
    assert not any("gating" in k for k in plain.state_dict())


def test_endpoint_shapes_match_official_table():
    m = _tiny(width_mult=1.0 / 16, s3d_stem="space_to_depth").eval()
    x = torch.rand(1, 24, 16, 112, 112)  # official eval input after s2d, i.e. a 32x224x224 clip
    with torch.no_grad():
        ends = m.forward_endpoints(x)
    assert list(ends) == list(ENDPOINTS)
    thw = {"Conv2d_1a_7x7": (16, 112, 112), "MaxPool_2a_3x3": (16, 56, 56), "Conv2d_2c_3x3": (16, 56, 56),
           "MaxPool_3a_3x3": (16, 28, 28), "Mixed_3c": (16, 28, 28), "MaxPool_4a_3x3": (8, 14, 14),
           "Mixed_4f": (8, 14, 14), "MaxPool_5a_2x2": (4, 7, 7), "Mixed_5c": (4, 7, 7)}
    for name, size in thw.items():
        assert tuple(ends[name].shape[2:]) == size, name
    full = {"Conv2d_1a_7x7": 64, "Conv2d_2c_3x3": 192, "Mixed_3b": 256, "Mixed_3c": 480, "Mixed_4b": 512,
            "Mixed_4e": 528, "Mixed_4f": 832, "Mixed_5b": 832, "Mixed_5c": 1024, "Embeddings": 1024}
    for name, c in full.items():
        assert ends[name].shape[1] == m.out_dim * c // 1024, name
    partial = m.forward_endpoints(x, final_endpoint="Mixed_3b")
    assert list(partial) == list(ENDPOINTS[:6])
    with pytest.raises(ValueError, match="endpoint"):
        m.forward_endpoints(x, final_endpoint="Logits")


@pytest.mark.parametrize("shape", [(2, 3, 8, 32, 32), (1, 3, 5, 33, 47), (1, 3, 1, 17, 9), (3, 3, 7, 20, 28)])
def test_standard_stem_output_shapes(shape):
    m = _tiny().eval()
    with torch.no_grad():
        y = m(torch.rand(shape))
    assert y.shape == (shape[0], m.out_dim) and torch.isfinite(y).all()
    ends = m.forward_endpoints(torch.rand(shape))
    t, h, w = shape[2:]
    t1, h1, w1 = math.ceil(t / 2), math.ceil(h / 2), math.ceil(w / 2)
    assert ends["Conv2d_1a_7x7"].shape[2:] == (t1, h1, w1)
    assert ends["Mixed_3c"].shape[2:] == (t1, math.ceil(h1 / 4), math.ceil(w1 / 4))


@pytest.mark.parametrize("shape", [(2, 3, 8, 32, 32), (1, 3, 6, 34, 46), (1, 3, 2, 18, 10)])
def test_space_to_depth_stem_accepts_rgb_and_s2d_input(shape):
    m = _tiny(s3d_stem="space_to_depth").eval()
    x = torch.rand(shape)
    with torch.no_grad():
        y = m(x)
        y24 = m(space_to_depth(x))
    assert y.shape == (shape[0], m.out_dim)
    torch.testing.assert_close(y, y24)
    with pytest.raises(ValueError, match="even"):
        m(torch.rand(1, 3, 5, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, 4, 4, 32, 32))


def test_standard_stem_rejects_s2d_input():
    with pytest.raises(ValueError, match="3 input channels"):
        _tiny()(torch.rand(1, 24, 4, 16, 16))


def test_every_param_gets_gradient():
    m = _tiny().train()
    y = m(torch.rand(2, 3, 6, 24, 24))
    (y ** 2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_deterministic_and_batch_independent():
    m = _tiny().eval()
    x = torch.rand(2, 3, 4, 24, 24)
    with torch.no_grad():
        a, b, single = m(x), m(x), m(x[:1])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-6)


def test_tiny_preset_and_bad_config():
    m = S3D(TINY, BN)
    assert m.out_dim == 256 and sum(p.numel() for p in m.parameters()) < 700_000
    with pytest.raises(ValueError, match="backbone"):
        S3D(VideoConfig(backbone="tsm_resnet"), BN)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        m(torch.rand(3, 8, 32, 32))


@pytest.mark.slow
def test_torch_compile_tiny():
    m = S3D(TINY, BN).eval()
    x = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_bn_folding_and_fused_inference_path_equal_plain_ops():
    from mmv_torch.models.s3d import Unit3D, _conv_bn_relu

    torch.manual_seed(0)
    unit = Unit3D(8, 6, (3, 3, 3), separable=True, gating=True).to(memory_format=torch.channels_last_3d)
    for bn in (unit.bn, unit.bn_t):
        bn.running_mean.normal_(0, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.normal_(1, 0.1)
        bn.bias.data.normal_(0, 0.1)
    unit.eval()
    x = torch.randn(2, 8, 5, 7, 6).contiguous(memory_format=torch.channels_last_3d)
    plain = torch.relu(unit.bn(unit.conv(x)))
    plain = torch.relu(unit.bn_t(unit.conv_t(plain)))
    plain = plain * unit.gating.gate(plain)
    folded = _conv_bn_relu(unit.conv_t, unit.bn_t, _conv_bn_relu(unit.conv, unit.bn, x))
    torch.testing.assert_close(unit.gating(folded), plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # fused oneDNN conv+ReLU and in-place gating
        torch.testing.assert_close(unit(x), plain, rtol=1e-5, atol=1e-5)
        out = torch.zeros(2, 10, 5, 7, 6)
        unit(x, out=out[:, 2:8])
        torch.testing.assert_close(out[:, 2:8], plain, rtol=1e-5, atol=1e-5)
        assert out[:, :2].abs().sum() == 0 and out[:, 8:].abs().sum() == 0


@pytest.mark.parametrize("channels_last", [True, False])
def test_inference_path_equals_autograd_path(channels_last):
    m = _tiny(s3d_stem="space_to_depth").eval()
    if not channels_last:
        m = m.to(memory_format=torch.contiguous_format)
    x = torch.rand(2, 3, 6, 22, 18)
    with torch.no_grad():
        fast = m.forward_endpoints(x)
    slow = m.forward_endpoints(x)
    for k in fast:
        torch.testing.assert_close(fast[k], slow[k].detach(), rtol=1e-5, atol=1e-5)


class _OtherBN(torch.nn.BatchNorm3d):
    """A BatchNorm3d subclass: the merged 1x1 path must fall back to running units one by one."""


def test_merged_pointwise_units_equal_unit_by_unit_in_train_and_eval():
    import copy

    from mmv_torch.models.s3d import InceptionBlock3D

    torch.manual_seed(0)
    block = InceptionBlock3D(12, (4, 3, 5, 2, 3, 4), True, BN).to(memory_format=torch.channels_last_3d)
    ref = copy.deepcopy(block)
    for m in ref.modules():
        if type(m) is torch.nn.BatchNorm3d:
            m.__class__ = _OtherBN
    x = torch.randn(2, 12, 4, 6, 5)
    for _ in range(2):  # train mode: outputs, running stats, gradients
        ya, yb = block(x), ref(x)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        ga = torch.autograd.grad(ya.square().sum(), list(block.parameters()))
        gb = torch.autograd.grad(yb.square().sum(), list(ref.parameters()))
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for (na, a), (_, b) in zip(block.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=na)
    assert block.branch_1_conv2d_0a_1x1.bn.num_batches_tracked == 2
    block.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)
