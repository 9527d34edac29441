"""``data prepare`` end to end on tiny real media: windows inside longer videos reach the loaders,
prepared MSR-VTT 1k-A and YouCook2 manifests go through ``eval retrieval``, prepared HowTo100M and AudioSet
manifests train together with a manifest of malformed narrations, which the log and ``data check``
count alike."""

import dataclasses
import json
import logging

import pytest
import torch

from mmv_torch.cli.main import main
from mmv_torch.config import DataConfig
from mmv_torch.data.datasets import LabelledDataset, PretrainDataset
from mmv_torch.data.manifests import read_labelled_manifest
from mmv_torch.data.tools.check import check_path
from tests.helpers.media_utils import frame_index_of, make_video

pytestmark = pytest.mark.e2e

CFG = DataConfig(num_frames=4, fps=8.0, crop_size=32, eval_crop_size=32, resize_short=36, audio_seconds=0.5,
                 num_mel_bins=20, num_candidates=3, max_words=5)
TINY = ["train.batch_size=2", "train.num_workers=0", "train.warmup_steps=1", "data.num_frames=4", "data.crop_size=32",
        "data.resize_short=36", "data.eval_crop_size=32", "train.steps=2"]
FAST = ["--workers", "0", "--batch-size", "4", "--device", "cpu"]
CAPTIONS = ["a person cuts an onion", "a girl does gymnastics", "a dog runs in the park"]


def _first_frame(video: torch.Tensor) -> int:
    return frame_index_of((video[:, 0].permute(1, 2, 0) * 255).numpy())


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep_e2e")
    (root / "media/long").mkdir(parents=True)
    (root / "media/TestVideo").mkdir()
    make_video(root / "media/long/-long1.mp4", num_frames=27, fps=10)  # 2.7 s, frame i shows level i
    for i in range(3):
        make_video(root / f"media/TestVideo/video{i}.mp4", num_frames=12 + 4 * i, fps=10)
    return root


def test_windows_reach_both_loaders(media, tmp_path):
    m = tmp_path / "w.jsonl"
    video = str(media / "media/long/-long1.mp4")
    m.write_text("".join(json.dumps(x) + "\n" for x in [
        {"video": video, "start": 1.6, "end": 2.6}, {"video": video}, {"video": video, "start": 30, "end": 40}]))
    lab = LabelledDataset(read_labelled_manifest(m), CFG)
    # window [1.6, 2.6]: the middle 0.5 s starts at 1.85 s (frame 18); the whole file's middle is 1.1 s
    assert [_first_frame(lab[i]["video"]) for i in range(3)] == [pytest.approx(18, abs=1), pytest.approx(11, abs=1),
                                                                 pytest.approx(11, abs=1)]
    pre = PretrainDataset(m, CFG, train=False)
    assert _first_frame(pre[0]["video"]) == pytest.approx(18, abs=1)
    train = PretrainDataset(m, dataclasses.replace(CFG, color_jitter=0.0, color_prob=0.0, augment_on="worker"),
                            train=True)  # the per-clip "video" of a training sample
    for epoch in range(4):  # random training clips stay inside the window
        train.set_epoch(epoch)
        assert 16 <= _first_frame(train[0]["video"]) <= 21
    windows = LabelledDataset(read_labelled_manifest(m), CFG, num_windows=3)
    assert [_first_frame(v) for v in windows[0]["video"]] == [pytest.approx(f, abs=1) for f in (16, 18, 21)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random model with a vocabulary of the captions' words."""
    from safetensors.torch import save_file

    from mmv_torch.config import apply_overrides, get_preset, save_config
    from mmv_torch.data.text.tokenizer import split_words
    from mmv_torch.models.mmv import MMV

    d = tmp_path_factory.mktemp("ckpt")
    words = ["<pad>"] + sorted({w for c in CAPTIONS + ["cut the onion in half"] for w in split_words(c)})
    cfg = apply_overrides(get_preset("tiny"), {"model.text.vocab_size": len(words), "data.num_frames": 4,
                                               "data.crop_size": 32, "data.eval_crop_size": 32,
                                               "data.resize_short": 36})
    torch.manual_seed(0)
    model = MMV(cfg.model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    save_config(cfg, d / "config.json")
    (d / "vocab.txt").write_text("".join(w + "\n" for w in words))
    return d


def _retrieval(checkpoint, manifest, out, windows="1"):
    assert main(["eval", "retrieval", "--checkpoint", str(checkpoint), "--data", str(manifest), "--windows", windows,
                 "--json", str(out), *FAST]) == 0
    return json.loads(out.read_text())


def test_msrvtt_1ka_prepare_then_retrieval(media, checkpoint, tmp_path):
    ann = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ann.write_text("key,vid_key,video_id,sentence\n" + "".join(
        f"ret{i},msr{i},video{i},{c}\n" for i, c in enumerate(CAPTIONS)) + "ret9,msr9,video9,a missing video\n")
    out = tmp_path / "data/msrvtt_1ka.jsonl"
    assert main(["data", "prepare", "msrvtt", "--annotations", str(ann), "--media-root", str(media / "media"),
                 "--out", str(out), "--json", str(tmp_path / "prep.json")]) == 0
    assert json.loads((tmp_path / "prep.json").read_text())["num_missing"] == 1
    res = _retrieval(checkpoint, out, tmp_path / "r.json")
    assert res["settings"]["videos"] == 3 and set(res["metrics"]["text2video"]) >= {"R@1", "R@5", "R@10"}


def test_youcook2_segments_prepare_then_retrieval(media, checkpoint, tmp_path):
    ann = tmp_path / "youcookii_annotations_trainval.json"
    ann.write_text(json.dumps({"database": {"-long1": {
        "annotations": [{"id": 0, "segment": [0, 1], "sentence": CAPTIONS[0]},
                        {"id": 1, "segment": [1, 2], "sentence": "cut the onion in half"},
                        {"id": 2, "segment": [2, 3], "sentence": CAPTIONS[2]}],
        "duration": 2.7, "recipe_type": "1", "subset": "validation", "video_url": "u"}}}))
    out = tmp_path / "yc2.jsonl"
    assert main(["data", "prepare", "youcook2", "--annotations", str(ann), "--media-root", str(media / "media"),
                 "--out", str(out), "--split", "validation"]) == 0
    assert [e.window for e in read_labelled_manifest(out)] == [(0, 1), (1, 2), (2, 3)]
    res = _retrieval(checkpoint, out, tmp_path / "r.json", windows="2")
    assert res["settings"]["videos"] == 3 and set(res["metrics"]["text2video"]) >= {"R@1", "R@5", "R@10"}


def test_prepared_howto100m_and_audioset_train_with_malformed_narrations(media, tmp_path, caplog):
    root = tmp_path
    (root / "caption.json").write_text(json.dumps({"-long1": {"start": [0.1, 1.0], "end": [0.9, 2.0],
                                                              "text": ["cut the onion", "stir the soup"]}}))
    seg = root / "balanced_train_segments.csv"
    seg.write_text('# c\n# c\n# YTID, start_seconds, end_seconds, positive_labels\nvideo1, 0.500, 1.500, "/m/a"\n'
                   'video2, 0.000, 10.000, "/m/a,/m/b"\n')
    (root / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Dog, bark"\n')
    howto, audioset = root / "howto.jsonl", root / "audioset.jsonl"
    assert main(["data", "prepare", "howto100m", "--annotations", str(root / "caption.json"), "--media-root",
                 str(media / "media"), "--out", str(howto)]) == 0
    assert main(["data", "prepare", "audioset", "--annotations", str(seg), "--media-root", str(media / "media"),
                 "--out", str(audioset)]) == 0
    assert json.loads(audioset.read_text().splitlines()[0])["start"] == 0.5
    noisy = root / "noisy.jsonl"
    video = str(media / "media/TestVideo/video0.mp4")  # 1.2 s long
    noisy.write_text(json.dumps({"video": video, "narration": [
        {"start": 0.0, "end": 0.5, "text": "cut the onion"}, {"start": 0.9, "end": 0.4, "text": "end before start"},
        {"start": float("nan"), "end": 1.0, "text": "nan start"}, {"start": 0.2, "end": 0.6, "text": "  "},
        {"start": 5.0, "end": 6.0, "text": "after the video"}, {"start": 0.5, "end": 9.0, "text": "runs past"},
    ]}) + "\n")
    with caplog.at_level(logging.WARNING, logger="mmv_torch.data"):
        assert main(["train", "--preset", "tiny", "--data", f"{howto},{audioset},{noisy}", "--out", str(root / "run"),
                     "--set", *TINY]) == 0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "noisy.jsonl: 3 narration(s) dropped" in logged and "end <= start: 1" in logged
    assert logged.count("noisy.jsonl: 3 narration(s) dropped") == 1  # the manifest is read once per run
    events = [r for r in map(json.loads, (root / "run/log.jsonl").read_text().splitlines())
              if r.get("event") == "narrations"]
    assert [e["narrations"] for e in events] == [{"dropped": 3, "clamped": 0, "videos": 1, "reasons": {
        "empty text": 1, "end <= start": 1, "time is not a finite number": 1}}]
    # the loader, with the probed duration, also drops the narration after the video and clamps the last one
    ds = PretrainDataset(noisy, CFG)
    kept = ds._narrations(0, ds._duration(ds.entries[0]))
    assert [(n.text, n.end) for n in kept] == [("cut the onion", 0.5), ("runs past", pytest.approx(1.2, abs=0.05))]
    rep = check_path(noisy, clean_manifest=root / "clean.jsonl")
    assert (rep["narrations_dropped"], rep["narrations_clamped"]) == (4, 1) and rep["num_ok"] == 1
    assert rep["files"][0]["narrations"]["reasons"] == {"clamped: end past the video": 1, "empty text": 1,
                                                       "end <= start": 1, "outside the video": 1,
                                                       "time is not a finite number": 1}
    cleaned = json.loads((root / "clean.jsonl").read_text())["narration"]
    assert [n["text"] for n in cleaned] == [n.text for n in kept]
    assert check_path(root / "clean.jsonl")["narrations_dropped"] == 0
