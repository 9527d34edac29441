import pytest
import torch

from mmv_torch.config import AudioConfig, BatchNormConfig
from mmv_torch.models.audio_resnet import ENDPOINTS, AudioResNet

BN = BatchNormConfig()


def _meta(cfg):
    with torch.device("meta"):
        return AudioResNet(cfg, BN)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_param_count_matches_official():
    m = _meta(AudioConfig(depth=50))
    assert _count(m) == 23_494_080
    assert m.out_dim == 2048
    # 151 official param leaves for res_net_v2: 53 conv kernels + 49 BNs x (scale, offset).
    assert len(dict(m.named_parameters())) == 151


def test_official_structure_names():
    names = set(dict(_meta(AudioConfig(depth=50)).named_parameters()))
    assert {"initial_conv.weight", "final_bn.weight", "final_bn.bias"} <= names
    assert "block_group_2.block_5.conv_2.weight" in names
    assert "block_group_0.block_0.shortcut_conv.weight" in names
    assert "block_group_0.block_1.shortcut_conv.weight" not in names


def test_basic_block_layout_1x1_then_3x3():
    m = _meta(AudioConfig(depth=18))
    p = dict(m.named_parameters())
    assert p["block_group_1.block_0.conv_0.weight"].shape == (128, 64, 1, 1)
    assert p["block_group_1.block_0.conv_1.weight"].shape == (128, 128, 3, 3)
    assert "block_group_1.block_0.conv_2.weight" not in p
    # Official use_projection: block 0 and channels change -> none in group 0 of the basic nets.
    assert "block_group_0.block_0.shortcut_conv.weight" not in p
    assert "block_group_1.block_0.shortcut_conv.weight" in p
    assert m.out_dim == 512


def test_depth_101_block_counts():
    names = set(dict(_meta(AudioConfig(depth=101)).named_parameters()))
    assert "block_group_2.block_22.conv_2.weight" in names
    assert "block_group_2.block_23.conv_2.weight" not in names


@pytest.mark.parametrize("shape", [(2, 1, 96, 40), (1, 1, 33, 17), (3, 1, 8, 8), (1, 1, 1, 1)])
@pytest.mark.parametrize("depth", [18, 50])
def test_shapes(shape, depth):
    m = AudioResNet(AudioConfig(depth=depth, width_mult=0.25), BN).eval()
    with torch.no_grad():
        e = m.forward_endpoints(torch.randn(shape))
    assert list(e) == list(ENDPOINTS)
    b, _, h, w = shape
    c0 = 16
    chans = (16, 32, 64, 128) if depth == 18 else (64, 128, 256, 512)
    h, w = -(-h // 2), -(-w // 2)
    assert e["initial_conv"].shape == (b, c0, h, w)
    h, w = -(-h // 2), -(-w // 2)
    assert e["max_pool"].shape == (b, c0, h, w)
    for i, c in enumerate(chans):
        if i:
            h, w = -(-h // 2), -(-w // 2)
        assert e[f"block_group_{i}"].shape == (b, c, h, w)
    assert e["output"].shape == (b, chans[-1]) == (b, m.out_dim)
    # last_conv is before the final BN/ReLU (official): it has negative values.
    assert e["last_conv"] is e["block_group_3"]
    assert (e["last_conv"] < 0).any()


def test_reference_spectrogram_shapes_match_official_intermediates():
    # Official run on [2, 96, 40, 1]: initial_conv 48x20, block_group_0..3 24x10, 12x5, 6x3, 3x2.
    m = _meta(AudioConfig(depth=50)).eval()
    e = m.forward_endpoints(torch.randn(2, 1, 96, 40, device="meta"))
    assert e["initial_conv"].shape[-2:] == (48, 20)
    assert [tuple(e[f"block_group_{i}"].shape[-2:]) for i in range(4)] == [(24, 10), (12, 5), (6, 3), (3, 2)]


def test_every_parameter_gets_gradient():
    m = AudioResNet(AudioConfig(depth=18, width_mult=0.25), BN).train()
    m(torch.randn(2, 1, 40, 24)).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_deterministic_and_memory_format_invariant():
    torch.manual_seed(0)
    a = AudioResNet(AudioConfig(depth=50, width_mult=0.125), BN, channels_last=True).eval()
    b = AudioResNet(AudioConfig(depth=50, width_mult=0.125), BN, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 37, 21)
    with torch.no_grad():
        torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_bad_input_raises():
    m = AudioResNet(AudioConfig(depth=18, width_mult=0.25), BN)
    with pytest.raises(ValueError, match="AudioResNet"):
        m(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="width_mult"):
        AudioResNet(AudioConfig(depth=50, width_mult=0.001), BN)
