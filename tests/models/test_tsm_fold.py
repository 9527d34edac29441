"""Eval-mode BN folding and fused conv ops in the pre-activation ResNet blocks (TSM and audio towers).

The reference is the same model with folding and the fused oneDNN ops switched off (plain
``BatchNorm2d`` modules, ``F.conv2d``, ReLU and add), i.e. the unfolded path.
"""

import pytest
import torch
from torch import nn

from mmv_torch.config import PRESETS, BatchNormConfig, VideoConfig
from mmv_torch.models import layers, resnet_blocks
from mmv_torch.models.audio_resnet import AudioResNet
from mmv_torch.models.tsm_resnet import TSMResNet

BN = BatchNormConfig()


def _tsm(depth=50, width=0.125, channels_last=True, shift_fraction=0.125):
    torch.manual_seed(0)
    cfg = VideoConfig(backbone="tsm_resnet", depth=depth, width_mult=width, shift_fraction=shift_fraction)
    return _randomise_bn(TSMResNet(cfg, BN, channels_last=channels_last)).eval()


def _randomise_bn(m: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh BNs are the identity in eval mode)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.3)
    return m


@pytest.fixture
def unfolded():
    """A context in which the blocks run unfolded and unfused (the reference path)."""

    class _Unfolded:
        def __enter__(self):
            self.mp = pytest.MonkeyPatch()
            self.mp.setattr(resnet_blocks, "fold_bn", lambda weight, bn: None)
            self.mp.setattr(layers, "_CONV_POINTWISE", None)
            self.mp.setattr(layers, "_CONV_POINTWISE_BINARY", None)

        def __exit__(self, *exc):
            self.mp.undo()

    return _Unfolded()


def _assert_close(out, ref):
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=2e-5 * scale)


@pytest.mark.parametrize("depth,width,channels_last,shape", [
    (50, 0.125, True, (2, 3, 4, 24, 20)),
    (50, 0.125, True, (1, 3, 5, 33, 19)),   # odd sizes, odd T (5 frames, shift of n = C/8 channels)
    (50, 0.125, False, (1, 3, 3, 17, 23)),  # channels-first activations
    (50, 0.25, True, (1, 3, 7, 21, 18)),    # reduced width (2x the tiny channels)
    (50, 0.125, True, (2, 3, 1, 16, 16)),   # one frame: every shifted slot is a zero slot
    (18, 0.25, True, (1, 3, 3, 19, 16)),    # basic blocks
])
def test_folded_forward_equals_unfolded(unfolded, depth, width, channels_last, shape):
    m = _tsm(depth, width, channels_last)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = m.forward_endpoints(x)
        with unfolded:
            ref = m.forward_endpoints(x)
    for name in ref:
        _assert_close(out[name], ref[name])


def test_folded_forward_with_shift_off_and_images(unfolded):
    m = _tsm(shift_fraction=0.25)
    x = torch.rand(2, 3, 3, 20, 20)
    frames = torch.rand(3, 3, 18, 21)
    with torch.no_grad():
        out, img = m(x), m.forward_images(frames)
        m.shift = False
        noshift = m(x)
        with unfolded:
            ref_noshift = m(x)
            m.shift = True
            ref, ref_img = m(x), m.forward_images(frames)
    _assert_close(out, ref)
    _assert_close(img, ref_img)
    _assert_close(noshift, ref_noshift)


def test_eval_with_autograd_folds_with_the_same_gradients(unfolded):
    # Eval mode with autograd (e.g. features with gradients): folded maths, plain convs, same gradients.
    m = _tsm()
    x = torch.rand(1, 3, 3, 20, 17)
    m(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    with unfolded:
        m(x).square().sum().backward()
    for n, p in m.named_parameters():
        _assert_close(grads[n], p.grad)


def _count_calls(m: nn.Module, monkeypatch) -> dict[str, int]:
    counts = {"bn_0": 0, "bn_1": 0, "bn_2": 0, "relu_fused": 0, "add_fused": 0}
    for name, mod in m.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in counts:
            mod.register_forward_hook(lambda *_, k=leaf: counts.__setitem__(k, counts[k] + 1))
    relu_op, add_op = layers._CONV_POINTWISE, layers._CONV_POINTWISE_BINARY
    assert relu_op is not None and add_op is not None  # oneDNN ships with the CPU wheels

    def counted(op, key):
        def call(*args):
            counts[key] += 1
            return op(*args)
        return call

    monkeypatch.setattr(layers, "_CONV_POINTWISE", counted(relu_op, "relu_fused"))
    monkeypatch.setattr(layers, "_CONV_POINTWISE_BINARY", counted(add_op, "add_fused"))
    return counts


def test_inference_takes_the_folded_fused_path(monkeypatch):
    m = _tsm()
    counts = _count_calls(m, monkeypatch)
    with torch.no_grad():
        m(torch.rand(1, 3, 2, 16, 16))
    blocks = sum((3, 4, 6, 3))
    # No BN call after a conv; the pre-activation BNs still run; 2 conv+BN+ReLU and 1 conv+add per block.
    assert counts == {"bn_0": blocks, "bn_1": 0, "bn_2": 0, "relu_fused": 2 * blocks, "add_fused": blocks}


def test_training_mode_is_untouched(monkeypatch):
    m = _tsm().train()
    counts = _count_calls(m, monkeypatch)
    before = m.unit_0.block_0.bn_1.running_mean.clone()
    m(torch.rand(2, 3, 2, 16, 16)).sum().backward()
    blocks = sum((3, 4, 6, 3))
    assert counts == {"bn_0": blocks, "bn_1": blocks, "bn_2": blocks, "relu_fused": 0, "add_fused": 0}
    assert not torch.equal(m.unit_0.block_0.bn_1.running_mean, before)  # batch statistics, stats updated


def test_audio_tower_folded_equals_unfolded(unfolded):
    torch.manual_seed(0)
    m = _randomise_bn(AudioResNet(PRESETS["tiny"].model.audio, BN)).eval()
    x = torch.randn(2, 1, 101, 40)
    with torch.no_grad():
        out = m(x)
        with unfolded:
            ref = m(x)
    _assert_close(out, ref)


def test_fold_bn_needs_eval_mode_running_statistics():
    w = torch.randn(6, 4, 3, 3)
    bn = nn.BatchNorm2d(6).eval()
    _randomise_bn(bn)
    x = torch.randn(2, 4, 7, 7)
    fw, fb = layers.fold_bn(w, bn)
    _assert_close(torch.nn.functional.conv2d(x, fw, fb), bn(torch.nn.functional.conv2d(x, w)))
    plain = nn.BatchNorm2d(6, affine=False).eval()
    plain.running_mean.normal_()
    fw, fb = layers.fold_bn(w, plain)
    _assert_close(torch.nn.functional.conv2d(x, fw, fb), plain(torch.nn.functional.conv2d(x, w)))
    assert layers.fold_bn(w, nn.BatchNorm2d(6).train()) is None
    assert layers.fold_bn(w, nn.BatchNorm2d(6, track_running_stats=False).eval()) is None
    assert layers.fold_bn(w, nn.Identity()) is None


def test_conv_add_matches_and_leaves_the_shortcut_alone():
    conv = layers.Conv2dSame(8, 16, 1)
    x = torch.randn(3, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    short = torch.randn(3, 16, 5, 6).contiguous(memory_format=torch.channels_last)
    keep = short.clone()
    with torch.no_grad():
        y = resnet_blocks._conv_add(conv, x, short)
        ref = conv(x) + short
        # A shortcut of another shape is not passed to oneDNN: plain add semantics (broadcast) hold.
        torch.testing.assert_close(resnet_blocks._conv_add(conv, x, short[:, :, :1]), conv(x) + short[:, :, :1])
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(short, keep, rtol=0, atol=0)
