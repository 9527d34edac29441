import pytest
import torch

from mmv_torch.config import BatchNormConfig, VideoConfig
from mmv_torch.models.r2plus1d import ENDPOINTS, R2Plus1D, mid_channels

BN = BatchNormConfig()


def _model(depth=18, width=1.0, **kw):
    return R2Plus1D(VideoConfig(backbone="r2plus1d", depth=depth, width_mult=width), BN, **kw)


def _meta(depth=18, width=1.0):
    with torch.device("meta"):
        return _model(depth, width)


def test_param_count_is_the_papers_33_3m():
    n = sum(p.numel() for p in _meta().parameters())
    assert abs(n - 33.3e6) <= 0.005 * 33.3e6, n
    assert n == 33_165_639  # exact value of this layout (stem mid 45, per-conv M rule, 1x1x1+BN shortcuts)


def test_mid_channels_rule_and_layout():
    # M = floor(t d^2 Nin Nout / (d^2 Nin + t Nout)) with t = d = 3: 64->64 gives 144, 64->128 gives 230.
    assert mid_channels(64, 64) == 144 and mid_channels(64, 128) == 230 and mid_channels(128, 128) == 288
    p = dict(_meta().named_parameters())
    assert p["stem.conv_s.weight"].shape == (45, 3, 1, 7, 7)
    assert p["stem.conv_t.weight"].shape == (64, 45, 3, 1, 1)
    assert p["stage_1.block_0.conv_0.spatial.weight"].shape == (230, 64, 1, 3, 3)
    assert p["stage_1.block_0.conv_0.temporal.weight"].shape == (128, 230, 3, 1, 1)
    assert p["stage_1.block_0.conv_1.spatial.weight"].shape == (288, 128, 1, 3, 3)
    assert p["stage_1.block_0.shortcut_conv.weight"].shape == (128, 64, 1, 1, 1)
    assert "stage_0.block_0.shortcut_conv.weight" not in p
    assert "stage_3.block_1.conv_1.temporal.weight" in p and "stage_3.block_2.conv_0.spatial.weight" not in p


@pytest.mark.parametrize("shape", [(2, 3, 8, 32, 32), (1, 3, 1, 17, 23), (1, 3, 5, 33, 20)])
def test_shapes(shape):
    m = _model(width=0.125).eval()
    b, _, t, h, w = shape
    with torch.no_grad():
        e = m.forward_endpoints(torch.rand(shape))
    assert list(e) == list(ENDPOINTS)
    h, w = -(-h // 2), -(-w // 2)
    assert e["stem"].shape == (b, 8, t, h, w)
    for i, c in enumerate((8, 16, 32, 64)):
        if i:
            t, h, w = -(-t // 2), -(-h // 2), -(-w // 2)
        assert e[f"stage_{i}"].shape == (b, c, t, h, w)
    assert e["output"].shape == (b, 64) == (b, m.out_dim)


def test_full_width_output_dim():
    m = _meta().eval()
    assert m(torch.rand(1, 3, 2, 16, 16, device="meta")).shape == (1, 512)


def test_every_parameter_gets_gradient():
    m = _model(width=0.125).train()
    m(torch.rand(2, 3, 4, 20, 20)).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_deterministic_and_memory_format_invariant():
    torch.manual_seed(0)
    a = _model(width=0.125, channels_last=True).eval()
    b = _model(width=0.125, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 5, 19, 22)
    with torch.no_grad():
        torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_other_depths_and_bad_input():
    assert sum(p.numel() for p in _model(depth=10, width=0.125).parameters()) < sum(
        p.numel() for p in _model(depth=34, width=0.125).parameters())
    with pytest.raises(ValueError, match="R2Plus1D"):
        _model(width=0.125)(torch.rand(1, 3, 16, 16))
