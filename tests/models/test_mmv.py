import pytest
import torch

from mmv_torch.config import BatchNormConfig, HeadConfig, TextConfig, get_preset
from mmv_torch.models.heads import ProjectionHead
from mmv_torch.models.mmv import MMV
from mmv_torch.models.text import TextTower
from mmv_torch.weights.resolve import create_model

OFFICIAL_HEADS = {"mmv_s3d": 4_592_640, "mmv_tsm_r50": 5_116_928, "mmv_tsm_r50x2": 6_165_504}
OFFICIAL_VIDEO = {"mmv_s3d": 9_146_000, "mmv_tsm_r50": 23_500_352, "mmv_tsm_r50x2": 93_891_712}


@pytest.mark.parametrize("name", sorted(OFFICIAL_HEADS))
def test_official_parameter_counts(name):
    with torch.device("meta"):
        counts = MMV(get_preset(name).model).parameter_counts()
    assert counts["video"] == OFFICIAL_VIDEO[name]
    assert counts["audio"] == 23_494_080
    assert counts["text"] == 20_277_248  # 65536x300 frozen table + 300->2048 linear
    assert counts["heads"] == OFFICIAL_HEADS[name]


def test_r2plus1d_and_tiny_sizes():
    with torch.device("meta"):
        r21d = MMV(get_preset("va_r2plus1d_18").model).parameter_counts()
        tiny = MMV(get_preset("tiny").model).parameter_counts()
    assert abs(r21d["video"] - 33.3e6) / 33.3e6 < 0.005
    assert 100_000 < tiny["total"] < 1_000_000


def test_head_bias_rules():
    bn = BatchNormConfig()
    mlp_bn = ProjectionHead(8, 4, HeadConfig(hidden=(6,), bn_after_proj=True), bn)
    assert mlp_bn.final_projection.bias is None and mlp_bn.final_bn is not None
    assert mlp_bn.final_projection_inner[0].bias is not None
    lin_bn = ProjectionHead(8, 4, HeadConfig(bn_after_proj=True), bn)
    assert lin_bn.final_projection.bias is not None and lin_bn.final_bn is not None
    nobn = ProjectionHead(8, 4, HeadConfig(hidden=(6, 5), inner_bn=False), bn)
    assert all(isinstance(m, torch.nn.Identity) for m in nobn.inner_bn)
    assert nobn(torch.randn(3, 8)).shape == (3, 4)


def test_text_tower_masking_and_frozen_table():
    cfg = TextConfig(vocab_size=20, word_dim=6, hidden_dim=10)
    tower = TextTower(cfg)
    ids = torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0], [0, 0, 0, 0]])
    mask = ids != 0
    unmasked = tower(ids)
    masked = tower(ids, mask)
    h = torch.relu(tower.text_conv1(tower.embed.weight[ids]))
    torch.testing.assert_close(unmasked, h.amax(dim=1))  # official: padding takes part in the max
    torch.testing.assert_close(masked[0], h[0, :2].amax(dim=0))
    torch.testing.assert_close(masked[2], torch.zeros(10))
    masked_cfg = TextTower(TextConfig(vocab_size=20, word_dim=6, hidden_dim=10, mask_padding=True))
    masked_cfg.load_state_dict(tower.state_dict())
    torch.testing.assert_close(masked_cfg(ids), masked)
    assert not tower.embed.weight.requires_grad
    with pytest.raises(ValueError, match="text ids"):
        tower(torch.tensor([[25]]))
    with pytest.raises(ValueError, match="do not fit"):
        tower.load_word_vectors(torch.zeros(3, 6))


def _tiny(**overrides):
    torch.manual_seed(0)
    return create_model("tiny", **overrides)


def _inputs(b=2, t=8, h=32, w=32, k=3, n=5, frames=40, bins=20, vocab=1000):
    g = torch.Generator().manual_seed(1)
    return dict(video=torch.rand(b, 3, t, h, w, generator=g), audio=torch.randn(b, 1, frames, bins, generator=g),
                text=torch.randint(1, vocab, (b, k, n), generator=g))


@pytest.mark.parametrize("graph", ["shared", "disjoint", "fac"])
def test_graph_outputs_and_shapes(graph):
    over = {"graph": graph}
    if graph == "shared":
        over.update({"spaces__va__dim": 32, "spaces__at__dim": 32, "spaces__va__first__hidden": [],
                     "spaces__va__first__bn_after_proj": True})
    model = _tiny(**over)
    model.eval()
    emb = model(**_inputs())
    cfg = model.cfg
    assert emb["video"]["repr"].shape == (2, model.video.out_dim)
    assert emb["video"]["va"].shape == (2, cfg.spaces["va"].dim)
    assert emb["video"]["vt"].shape == (2, cfg.spaces["vt"].dim)
    assert emb["audio"]["va"].shape == (2, cfg.spaces["va"].dim)
    assert emb["text"]["vt"].shape == (2, 3, cfg.spaces["vt"].dim)
    assert emb["text"]["repr"].shape == (2, 3, cfg.text.hidden_dim)
    if graph == "fac":
        # FAC eval path: audio reaches S_vat through the video's vt head after ReLU.
        expected = model.heads["video_vt"](torch.relu(emb["audio"]["va"]))
        torch.testing.assert_close(emb["audio"]["vt"], expected)
        torch.testing.assert_close(emb["video"]["vt"], model.heads["video_vt"](torch.relu(emb["video"]["va"])))
        model.train()
        assert "vt" not in model(audio=_inputs()["audio"])["audio"]
    if graph == "shared":
        assert emb["video"]["va"] is emb["video"]["vt"]


def test_any_subset_of_modalities_and_text_2d():
    model = _tiny().eval()
    x = _inputs()
    assert set(model(audio=x["audio"])) == {"audio"}
    assert set(model(video=x["video"], text=x["text"][:, 0])) == {"video", "text"}
    assert model(text=x["text"][:, 0])["text"]["vt"].shape == (2, model.cfg.spaces["vt"].dim)
    with pytest.raises(ValueError):
        model()
    with pytest.raises(ValueError, match="spectrogram"):
        model(audio=torch.zeros(2, 40, 20))


@pytest.mark.parametrize("shape", [(1, 8, 32, 32), (2, 5, 27, 41), (1, 3, 17, 17), (2, 16, 48, 36)])
def test_video_sizes_odd_non_square_and_batch_one(shape):
    b, t, h, w = shape
    model = _tiny().eval()
    out = model(video=torch.rand(b, 3, t, h, w), audio=torch.randn(b, 1, 33, 17))
    assert out["video"]["vt"].shape[0] == b and torch.isfinite(out["video"]["vt"]).all()
    assert torch.isfinite(out["audio"]["va"]).all()


@pytest.mark.parametrize("graph", ["disjoint", "fac"])
def test_every_trainable_parameter_gets_a_gradient(graph):
    model = _tiny(graph=graph, fac_activation="bnrelu" if graph == "fac" else "relu")
    model.train()
    emb = model(**_inputs(b=4))
    loss = sum(e.float().pow(2).mean() for m in emb.values() for k, e in m.items() if k != "repr")
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    assert model.text.embed.weight.grad is None


def test_eval_mode_is_deterministic():
    model = _tiny().eval()
    x = _inputs()
    with torch.no_grad():
        a, b = model(**x), model(**x)
    for m in a:
        for k in a[m]:
            assert torch.equal(a[m][k], b[m][k])


def test_create_model_overrides_and_errors():
    model = create_model("tiny", graph="disjoint", video__width_mult=0.125)
    assert model.cfg.graph == "disjoint" and model.cfg.video.width_mult == 0.125
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("mmv_s4d")
    with pytest.raises(ValueError, match="unknown config key"):
        create_model("tiny", grpah="fac")
    with pytest.raises(ValueError, match="graph"):
        create_model("tiny", graph="triangle")


@pytest.mark.slow
def test_torch_compile_tiny():
    model = _tiny().eval()
    x = _inputs()
    compiled = torch.compile(model)
    with torch.no_grad():
        ref = model(**x)
        out = compiled(**x)
    torch.testing.assert_close(out["video"]["vt"], ref["video"]["vt"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["audio"]["va"], ref["audio"]["va"], rtol=1e-4, atol=1e-5)
