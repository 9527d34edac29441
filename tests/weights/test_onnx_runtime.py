"""The towers of an ONNX export through onnxruntime behind the MMV call interface (``index build --runtime onnx``):
the same embeddings as PyTorch, refused for another checkpoint or input contract; the index built with them
equals the PyTorch one (slow: the video tower's export takes minutes)."""

import numpy as np
import pytest
import torch

import mmv_torch
from mmv_torch.config import apply_overrides, get_preset
from mmv_torch.weights.onnx_export import example_inputs, export_onnx
from mmv_torch.weights.onnx_runtime import OnnxTowers, check_towers_match


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random tiny model (BatchNorm at mean 0 / variance 1) and its audio and text towers as ONNX."""
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = mmv_torch.create_model("tiny").eval()
    out = tmp_path_factory.mktemp("onnx") / "onnx"
    export_onnx(model, cfg, out, towers=("audio", "text"))
    return model, cfg, out


def test_towers_answer_like_the_model(exported):
    model, cfg, out = exported
    towers = OnnxTowers(out, threads=1)
    inputs = example_inputs(cfg, batch=3, seed=5)
    got = towers(audio=inputs["audio"][0], text=inputs["text"][0], word_mask=inputs["text"][1])
    with torch.no_grad():
        want = model(audio=inputs["audio"][0], text=inputs["text"][0], word_mask=inputs["text"][1])
    assert set(got) == {"audio", "text"} and set(got["audio"]) == {"va", "at", "vt"}
    for modality in got:
        for space, g in got[modality].items():
            w = torch.nn.functional.normalize(want[modality][space], dim=-1)
            assert float((g - w).abs().max() / w.abs().max()) < 1e-4, (modality, space)
    no_mask = towers(text=inputs["text"][0])["text"]["vt"]  # no mask: every position, as the model pools
    with torch.no_grad():
        plain = torch.nn.functional.normalize(model(text=inputs["text"][0])["text"]["vt"], dim=-1)
    torch.testing.assert_close(no_mask, plain, rtol=0, atol=1e-5)
    assert max(check_towers_match(towers, model, cfg).values()) < 1e-4


def test_other_weights_contract_or_folder_are_refused(exported, tmp_path):
    model, cfg, out = exported
    towers = OnnxTowers(out)
    torch.manual_seed(1)
    other = mmv_torch.create_model("tiny").eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    with pytest.raises(ValueError, match="not the checkpoint's"):
        check_towers_match(towers, other, cfg)
    with pytest.raises(ValueError, match="another input contract"):
        towers.check_contract(apply_overrides(cfg, {"data.max_words": cfg.data.max_words + 1}))
    towers.check_contract(cfg)
    with pytest.raises(ValueError, match="no video tower"):
        towers(video=torch.zeros(1, 3, cfg.data.num_frames, 8, 8))
    with pytest.raises(ValueError, match="not an ONNX export folder"):
        OnnxTowers(tmp_path)


def test_index_build_refuses_onnx_without_its_folder(tmp_path, capsys):
    from mmv_torch.cli.main import main

    assert main(["index", "build", "--checkpoint", "x", "--videos", str(tmp_path), "--out", str(tmp_path / "i"),
                 "--runtime", "onnx"]) == 2
    assert "--runtime onnx needs --onnx DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_an_index_built_through_onnxruntime_equals_the_pytorch_one(tmp_path):
    """Audio vectors within 1e-4. The random tiny video tower is not that accurate in float32 itself (PyTorch in
    float32 is 2-6e-4 from float64 on these windows), so there the ONNX vectors must be at least as close to the
    float64 PyTorch vectors as PyTorch's float32 ones are."""
    import copy

    from mmv_torch.cli.main import main
    from mmv_torch.index.embedding import decode_windows
    from mmv_torch.index.store import IndexStore
    from mmv_torch.weights.resolve import resolve_checkpoint
    from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint

    clips = synthetic_clips(tmp_path / "clips")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", clips)
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "onnx")]) == 0
    for name, extra in (("t", []), ("o", ["--runtime", "onnx", "--onnx", str(tmp_path / "onnx")])):
        assert main(["index", "build", "--checkpoint", str(ckpt), "--videos", str(clips), "--out", str(tmp_path / name),
                     "--no-progress", *extra]) == 0
    torch_store, onnx_store = IndexStore(tmp_path / "t"), IndexStore(tmp_path / "o")
    assert onnx_store.info()["runtime"] == "onnx" and torch_store.info()["runtime"] == "torch"
    resolved = resolve_checkpoint(ckpt)
    exact = copy.deepcopy(resolved.load_model("cpu")).double().eval()
    decoded = [decode_windows(p, resolved.config, 1.0, 1.0, thumbs=False) for p in sorted(clips.glob("*.mp4"))]
    with torch.no_grad():
        e64 = exact(video=torch.cat([d.video for d in decoded]).double())["video"]
    for space in ("video_vt", "video_va", "audio_va"):
        a, ids_a = torch_store.vectors(space)
        b, ids_b = onnx_store.vectors(space)
        assert a.shape == b.shape and len(a) > 0 and np.array_equal(ids_a, ids_b)
        if space == "audio_va":
            assert float(np.abs(a - b).max() / np.abs(a).max()) < 1e-4
            continue
        ref = torch.nn.functional.normalize(e64[space.split("_")[1]], dim=-1).numpy()
        assert float(np.abs(b - ref).max()) <= float(np.abs(a - ref).max()), space
    (clips / "more").mkdir()
    synthetic_clips(clips / "more", n=1, seed=5)
    assert main(["index", "add", str(tmp_path / "o"), "--videos", str(clips), "--no-progress"]) == 0
    assert IndexStore(tmp_path / "o").info()["runtime"] == "onnx"  # `index add` kept the index's runtime
