"""Deflation: deflated network on an image vs video network on a static video, BN re-training."""

import numpy as np
import pytest
import torch
from torch import nn

from mmv_torch.config import BatchNormConfig, VideoConfig, get_preset
from mmv_torch.eval.image import probe_image_encoder
from mmv_torch.models.deflate import (
    deflate,
    deflate_s3d,
    deflate_tsm,
    image_encoder,
    l1_gap,
    padding_gap,
    retrain_bn,
    static_video,
    temporal_padding,
)
from mmv_torch.models.s3d import S3D
from mmv_torch.models.tsm_resnet import TSMResNet


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so activations stay O(1) through the network."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def _tiny_s3d(stem: str | None = None) -> S3D:
    torch.manual_seed(0)
    cfg = get_preset("tiny").model.video  # S3D width 0.25, standard stem
    if stem is not None:
        cfg = VideoConfig(backbone="s3d", width_mult=cfg.width_mult, s3d_stem=stem)
    return _randomize_bn(S3D(cfg))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("stem", ["standard", "space_to_depth"])
def test_s3d_deflation_exact_when_temporal_padding_neutralised(stem):
    video = _tiny_s3d(stem)
    flat = deflate_s3d(video).eval()
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), temporal_padding(video, "replicate"):
        ev = video.forward_endpoints(static_video(img, 8))
    ed = flat.forward_endpoints(img)
    for name, v in ev.items():
        d = ed[name]
        frames = [v[:, :, t] for t in range(v.shape[2])] if v.dim() == 5 else [v]
        for f in frames:
            assert _rel(f, d) < 1e-5, name
    # Outside the context the official zero padding is back.
    with torch.no_grad():
        assert _rel(video(static_video(img, 8)), ed["Embeddings"]) > 1e-2


def test_s3d_zero_padding_interior_frames_exact_before_gating_and_gap_shrinks_with_T():
    video = _tiny_s3d()
    flat = deflate_s3d(video).eval()
    img = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ev = video.forward_endpoints(static_video(img, 16), "Conv2d_2b_1x1")
        ed = flat.forward_endpoints(img, "Conv2d_2b_1x1")
    # Stem (7,7,7)/2 on 16 frames, SAME pads (2, 3): output frame t reads frames 2t-2 .. 2t+4.
    interior = [t for t in range(8) if 2 * t - 2 >= 0 and 2 * t + 4 <= 15]
    assert interior == [1, 2, 3, 4, 5]
    for t in range(8):
        err = _rel(ev["Conv2d_2b_1x1"][:, :, t], ed["Conv2d_2b_1x1"])
        assert (err < 1e-5) == (t in interior), (t, err)
    gaps = [padding_gap(video, img, t, flat)["zeros"] for t in (8, 16, 32)]
    assert gaps[0] > gaps[1] > gaps[2] > 0.01  # measured ~0.26, 0.14, 0.07 (the border share ~2/T)
    assert padding_gap(video, img, 16, flat)["replicate"] < 1e-5


def _tiny_tsm() -> TSMResNet:
    torch.manual_seed(0)
    return _randomize_bn(TSMResNet(VideoConfig(backbone="tsm_resnet", depth=18, width_mult=0.25), BatchNormConfig()))


def test_tsm_deflation_interior_frames_exact_with_folded_channel_order():
    video = _tiny_tsm()  # depth 18: 8 blocks, each shifts by one frame
    img = torch.rand(2, 3, 32, 32)
    t_len = 18
    with torch.no_grad():
        ev = video.forward_endpoints(static_video(img, t_len))["last_conv"]
        ev = ev.reshape(2, t_len, *ev.shape[1:])
        folded = deflate_tsm(video, fold_channel_order=True).eval()
        plain = deflate_tsm(video, fold_channel_order=False).eval()
        fd = folded.net.forward_endpoints(img[:, :, None])["last_conv"]
        pd = plain.net.forward_endpoints(img[:, :, None])["last_conv"]
    # Zeros enter at frames 0 and T-1 and move one frame inwards per block, so frames 8 and 9 are
    # untouched (8 blocks); the effect also decays fast (measured 2.9e-1, 5.3e-2, 9.6e-3, 1.7e-3, 9.7e-5,
    # 1.2e-5, then float noise ~5e-7 from frame 6 on).
    errs = [_rel(ev[:, t], fd) for t in range(t_len)]
    assert max(errs[8], errs[9]) < 2e-6
    assert min(errs[0], errs[-1]) > 0.05
    assert errs[0] > errs[1] > errs[2] > errs[3] > errs[4]
    assert _rel(ev[:, 9], pd) > 0.05  # switching the shift off without the channel order is not static
    assert video.shift  # the video network is unchanged
    out = folded(img)
    assert out.shape == (2, video.out_dim) and torch.allclose(out, fd.mean(dim=(2, 3)), atol=1e-6)


def test_bn_retraining_reduces_l1_gap():
    video = _tiny_s3d()
    flat = deflate(video)
    torch.manual_seed(1)
    train = [torch.rand(4, 3, 16, 16) for _ in range(4)]
    held_out = torch.rand(6, 3, 16, 16)
    before = l1_gap(flat, video, held_out, 8)
    bn_affine = {f"{n}.{p}" for n, m in flat.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for p in ("weight", "bias")}
    frozen = {k: v.clone() for k, v in flat.state_dict().items() if k not in bn_affine}  # incl. BN running stats
    res = retrain_bn(flat, video, train, num_frames=8, steps=20, lr=1e-2)
    after = l1_gap(flat, video, held_out, 8)
    assert after < 0.8 * before, (before, after)  # measured 0.0034 -> ~0.002
    assert res["l1_last"] < res["l1_first"]
    for k, v in flat.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k  # only BN gamma/beta changed
    assert all(p.requires_grad == (n in bn_affine) for n, p in flat.named_parameters())


def test_image_encoder_strategies_and_probe():
    video = _tiny_s3d()
    imgs = torch.rand(12, 3, 16, 16)
    labels = np.arange(12) % 2
    imgs[labels == 1] *= 0.3  # dark vs bright images: separable
    loader = [{"image": imgs[i:i + 4], "index": torch.arange(i, i + 4)} for i in range(0, 12, 4)]
    for strategy in ("naive", "inflation", "bn_retrained"):
        enc, settings = image_encoder(video, strategy, num_frames=4, bn_images=[imgs[:4]], bn_steps=1)
        assert enc(imgs[:2]).shape == (2, video.out_dim)
        assert settings["strategy"] == strategy
    res = probe_image_encoder(enc, loader, labels, loader, labels, classifier="logistic", weight_decays=(1e-3,),
                      max_iter=30)
    assert res["metrics"]["train_top1"] == 1.0
    multi = np.stack([labels, 1 - labels], axis=1)
    res_ml = probe_image_encoder(enc, loader, multi, loader, multi, multilabel=True, epochs=30, lr=1e-2)
    assert res_ml["metrics"]["test_mAP"] > 0.9


def test_errors():
    with pytest.raises(ValueError, match="S3D"):
        deflate_s3d(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="strategy"):
        image_encoder(_tiny_s3d(), "magic", 4)
    with pytest.raises(ValueError, match="images"):
        deflate(_tiny_s3d())(torch.rand(1, 3, 4, 8, 8))


@pytest.mark.slow
def test_full_size_s3d_deflation():
    torch.manual_seed(0)
    video = _randomize_bn(S3D(VideoConfig(backbone="s3d")))  # released layout: space-to-depth stem
    flat = deflate_s3d(video)
    img = torch.rand(1, 3, 64, 64)
    gap = padding_gap(video, img, 8, flat)
    assert gap["replicate"] < 1e-5
    assert gap["zeros"] > 1e-3


def test_image_encoder_tsm_naive_chooses_the_deflation():
    from mmv_torch.models.deflate import image_encoder

    video = _tiny_tsm()
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = {"paper": deflate_tsm(video, fold_channel_order=False).eval()(img),
                "folded": deflate_tsm(video, fold_channel_order=True).eval()(img)}
        for mode in ("paper", "folded"):
            net, settings = image_encoder(video, "naive", 8, tsm_naive=mode)
            assert settings["tsm_naive"] == mode
            torch.testing.assert_close(net(img), want[mode])
    assert not torch.allclose(want["paper"], want["folded"])
    with pytest.raises(ValueError, match="tsm_naive must be one of"):
        image_encoder(video, "naive", 8, tsm_naive="flat")
