"""``mmv_torch.load``: a run folder, its export, a checkpoint file and a converted folder give the model, the
preprocessing of the checkpoint's input contract and its tokenizer; ``encode_*`` give normalised embeddings."""

import json

import numpy as np
import pytest
import torch

import mmv_torch
from mmv_torch.cli.main import main
from tests.helpers.media_utils import make_video, make_wav

TINY = ["data.num_frames=4", "data.crop_size=32", "data.resize_short=36", "data.eval_crop_size=32",
        "data.fps=4.0", "data.audio_seconds=1.0", "data.sample_rate=8000"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained for two steps, a video with sound and a WAV."""
    root = tmp_path_factory.mktemp("api")
    run = root / "run"
    assert main(["train", "--preset", "tiny", "--data", "synthetic:6", "--out", str(run), "--set", "train.steps=2",
                 "train.batch_size=2", "train.num_workers=0", "train.warmup_steps=1", *TINY]) == 0
    video = make_video(root / "clip.mp4", num_frames=50, fps=25, size=(48, 40), sample_rate=8000)
    wav = make_wav(root / "tone.wav", seconds=2.0, sample_rate=16000)
    return {"root": root, "run": run, "video": video, "wav": wav}


def test_load_a_run_folder_follows_its_input_contract(run):
    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.data.manifests import LabelledEntry

    model, preprocess, tokenizer = mmv_torch.load(run["run"])
    assert not model.training
    assert preprocess.contract()["num_frames"] == 4 and preprocess.contract()["sample_rate"] == 8000
    video, audio = preprocess.video(run["video"]), preprocess.audio(run["wav"])
    assert video.shape == (1, 3, 4, 32, 32) and audio.shape[:2] == (1, 1)
    # the same tensors as the evaluation pipeline's middle clip and centred audio window
    cfg = model_cfg = json.loads((run["run"] / "export" / "config.json").read_text())
    assert model_cfg["data"]["eval_crop_size"] == 32
    from mmv_torch.config import config_from_dict

    data = config_from_dict(cfg).data
    vid = LabelledDataset([LabelledEntry(str(run["video"]), "video", "x", None)], data, "video", classes=["x"])[0]
    aud = LabelledDataset([LabelledEntry(str(run["wav"]), "audio", "x", None)], data, "audio", classes=["x"])[0]
    torch.testing.assert_close(video[0], vid["video"])
    torch.testing.assert_close(audio[0], aud["audio"])
    assert preprocess.video([run["video"], run["video"]]).shape[0] == 2

    v, a = model.encode_video(video), model.encode_audio(audio)
    t = model.encode_text(tokenizer(["the red ball bounces", "a blue cube"]))
    assert set(v) == {"va", "vt"} and set(t) == {"vt", "at"} and "va" in a
    assert t["vt"].shape[0] == 2
    for e in (v["vt"], v["va"], a["va"], t["vt"]):
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(e.shape[0]))
    with torch.no_grad():
        raw = model(video=video)["video"]["vt"]
    torch.testing.assert_close(v["vt"], torch.nn.functional.normalize(raw, dim=-1))
    assert model.encode_video(video, normalize=False)["vt"].norm() != pytest.approx(1.0)


def test_create_model_takes_a_run_folder_and_a_checkpoint_file(run):
    export = mmv_torch.create_model(checkpoint=run["run"] / "export")
    from_run = mmv_torch.create_model(checkpoint=run["run"])
    ckpt = sorted((run["run"] / "checkpoints").glob("ckpt_*.pt"))[-1]
    from_file, _, _ = mmv_torch.load(ckpt)
    for other in (from_run, from_file):
        assert not other.training
        for k, w in export.state_dict().items():
            torch.testing.assert_close(other.state_dict()[k], w)
    with pytest.raises(ValueError, match="no such file or folder"):
        mmv_torch.create_model(checkpoint=run["root"] / "nowhere")


def test_arrays_are_preprocessed_like_files(run):
    _, preprocess, _ = mmv_torch.load(run["run"])
    frames = np.random.default_rng(0).integers(0, 255, (10, 40, 48, 3), dtype=np.uint8)
    video = preprocess.video(frames)
    assert video.shape == (1, 3, 4, 32, 32) and 0.0 <= float(video.min()) <= float(video.max()) <= 1.0
    short = preprocess.video(frames[:2])  # looped to num_frames
    torch.testing.assert_close(short[0, :, 2], short[0, :, 0])
    wave = np.sin(np.linspace(0, 400, 16000)).astype(np.float32)  # 1 s at 16 kHz, resampled to 8 kHz
    direct = preprocess.audio(wave[::2].copy())
    resampled = preprocess.audio(wave, sample_rate=16000)
    assert direct.shape == resampled.shape
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        preprocess.video(np.zeros((4, 8, 8)))


def test_a_folder_without_vocabulary_names_the_fix(run, tmp_path):
    import shutil

    from mmv_torch.data.text.tokenizer import MissingVocabularyError

    folder = shutil.copytree(run["run"] / "export", tmp_path / "converted")
    words = (folder / "vocab.txt").read_text()
    (folder / "vocab.txt").unlink()
    model, _, tokenizer = mmv_torch.load(folder)
    with pytest.raises(MissingVocabularyError, match="vocab=FILE"):
        tokenizer(["a ball"])
    (tmp_path / "words.txt").write_text(words)
    _, _, tokenizer = mmv_torch.load(folder, vocab=tmp_path / "words.txt")
    assert not tokenizer.word_mask  # a checkpoint without its own word list pools over padding (as --word-mask auto)
    tok = tokenizer(["red ball"])
    assert bool(tok.mask.all()) and int((tok.ids != 0).sum()) >= 1
