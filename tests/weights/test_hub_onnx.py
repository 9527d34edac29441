"""``hf-hub:`` ids read offline from a Hub cache the test writes (``HF_HUB_OFFLINE=1``), ``mmv-torch export
--hub`` (a model card with YAML metadata) and ``--onnx`` (towers with heads, dynamic batch, parity with
onnxruntime; the official presets in the slow set)."""

import json

import pytest
import torch

import mmv_torch
from mmv_torch.cli.main import main
from mmv_torch.config import get_preset
from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny checkpoint folder with a word list and an evaluation JSON."""
    root = tmp_path_factory.mktemp("hub")
    cfg = get_preset("tiny")
    model = noise_calibrated_model(cfg, video=torch.rand(4, 3, 8, 64, 64), audio=torch.randn(4, 1, 100, 40),
                                   text=torch.randint(1, 100, (4, 6)))
    folder = save_checkpoint_folder(model, cfg, root / "ckpt")
    (folder / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(cfg.model.text.vocab_size)))
    result = {"task": "zero-shot classification (video, vt)", "metrics": {"test_top1": 0.5, "test_top5": 0.9},
              "settings": {"data": "ucf101.jsonl"}}
    (root / "zs.json").write_text(json.dumps(result))
    return {"root": root, "folder": folder, "model": model.eval(), "metrics": root / "zs.json"}


def _hub_cache(cache, repo, folder):
    """The layout huggingface_hub reads: models--ORG--NAME/refs/main and snapshots/<commit>/<files>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    snap = base / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    return snap


def test_export_hub_then_load_it_offline_from_the_cache(ckpt, tmp_path, monkeypatch, capsys):
    import yaml

    out = tmp_path / "repo"
    assert main(["export", "--checkpoint", str(ckpt["folder"]), "--hub", str(out), "--hub-id", "someone/mmv-tiny",
                 "--license", "Apache-2.0", "--metrics", str(ckpt["metrics"])]) == 0
    assert "huggingface-cli upload someone/mmv-tiny" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "mmv-torch" and "mmv" in meta["tags"]
    assert meta["mmv_input_contract"]["num_frames"] == get_preset("tiny").data.num_frames
    results = meta["model-index"][0]["results"][0]
    assert {m["name"]: m["value"] for m in results["metrics"]} == {"test_top1": 0.5, "test_top5": 0.9}
    assert "hf-hub:someone/mmv-tiny" in card

    cache = tmp_path / "hf"
    _hub_cache(cache, "someone/mmv-tiny", out)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = mmv_torch.create_model("hf-hub:someone/mmv-tiny")
    for k, w in ckpt["model"].state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], w)
    model, _, tokenizer = mmv_torch.load("hf-hub:someone/mmv-tiny@main")
    assert tokenizer(["w3 w4"]).ids[0, :2].tolist() == [3, 4]
    with pytest.raises(OSError, match="local cache"):
        mmv_torch.create_model("hf-hub:someone/not-there")
    assert main(["eval", "zeroshot", "--checkpoint", "hf-hub:bad id", "--data", "x.jsonl"]) == 2
    assert "hf-hub:ORG/NAME" in capsys.readouterr().err


def test_export_hub_refuses_bad_metrics(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["export", "--checkpoint", str(ckpt["folder"]), "--hub", str(tmp_path / "r"), "--metrics",
                 str(bad)]) == 2
    assert "not an evaluation JSON" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["export", "--checkpoint", str(ckpt["folder"])]) == 2


def _parity(model, cfg, out):
    import onnx

    from mmv_torch.weights.onnx_export import export_onnx, onnx_parity

    record = export_onnx(model, cfg, out)
    for name in ("video", "audio", "text"):
        graph = onnx.load(str(out / f"{name}.onnx")).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    worst = onnx_parity(model, cfg, out, batches=(1, 3))
    assert set(worst) == {f"{t}.{s}" for t, info in record["towers"].items() for s in info["outputs"]}
    assert max(worst.values()) < 1e-4, worst


def test_onnx_audio_and_text_towers_match_pytorch_on_tiny(tmp_path, capsys):
    """The default set exports the two quick towers through the command; the video tower (two minutes of
    export on a loaded 2-core machine) is in the slow set below, for tiny and every preset."""
    import re

    import onnx

    torch.manual_seed(0)  # a well-conditioned network (random init, BN at mean 0 / variance 1)
    folder = save_checkpoint_folder(mmv_torch.create_model("tiny").eval(), get_preset("tiny"), tmp_path / "ckpt")
    out = tmp_path / "onnx"
    assert main(["export", "--checkpoint", str(folder), "--onnx", str(out), "--towers", "audio,text"]) == 0
    printed = capsys.readouterr().out
    worst = float(re.search(r"largest relative difference (\S+)", printed).group(1))
    assert worst < 1e-4
    record = json.loads((out / "onnx.json").read_text())
    assert record["towers"]["text"]["outputs"] == ["vt", "at"] and record["towers"]["audio"]["outputs"] == ["va",
                                                                                                            "at", "vt"]
    for name in ("audio", "text"):
        assert onnx.load(str(out / f"{name}.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["export", "--checkpoint", str(folder), "--onnx", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "mmv_s3d", "mmv_tsm_r50", "mmv_tsm_r50x2", "va_r2plus1d_18"])
def test_onnx_towers_match_pytorch_on_the_full_presets(preset, tmp_path):
    torch.manual_seed(0)
    cfg = get_preset(preset)
    _parity(mmv_torch.create_model(preset).eval(), cfg, tmp_path / "onnx")
