"""A clip whose audio track is digital silence counts as "no audio" in the video-audio loss, and the log
counts it (loss.silence_range)."""

from __future__ import annotations

import json

import pytest
import torch

from mmv_torch.config import apply_overrides
from mmv_torch.losses import mmv_loss, silent_audio
from tests.helpers.media_utils import make_video
from tests.train.test_loop import read_log, tiny_cfg


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """4 narrated 2-s videos: clips 0 and 2 with a 440/660 Hz tone, clips 1 and 3 with a silent AAC track."""
    out = tmp_path_factory.mktemp("silent")
    lines = []
    for i in range(4):
        make_video(out / f"c{i}.mp4", num_frames=16, fps=8, size=(40, 36), sample_rate=16000,
                   audio_freq=0.0 if i % 2 else 440.0 + 110 * i)  # sin(0) = 0: digital silence
        lines.append(json.dumps({"video": f"c{i}.mp4", "duration": 2.0,
                                 "narration": [{"start": 0.0, "end": 2.0, "text": f"clip number {i} spins"}]}))
    (out / "pretrain.jsonl").write_text("\n".join(lines) + "\n")
    return out / "pretrain.jsonl"


def _cfg(**over):
    return apply_overrides(tiny_cfg(**{"steps": 1, "batch_size": 4, **over}), {"data.sample_rate": 16000})


def test_silent_track_is_flat_and_masked_as_no_audio(manifest, tmp_path):
    from mmv_torch.train.data import build_train_data
    from mmv_torch.train.gradcache import mmv_forward

    cfg = apply_overrides(_cfg(), {"data.augment_on": "worker"})  # the test stacks each sample's "video"
    tdata = build_train_data([str(manifest)], cfg, tmp_path)
    samples = [tdata.dataset[i] for i in range(4)]
    audio = torch.stack([s["audio"] for s in samples])
    assert [bool(s["has_audio"]) for s in samples] == [True] * 4  # the files have audio streams
    assert silent_audio(audio, cfg.loss.silence_range).tolist() == [False, True, False, True]
    assert not silent_audio(audio, -1.0).any()  # < 0: off

    batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}
    torch.manual_seed(0)
    from mmv_torch.models.mmv import MMV

    model = MMV(cfg.model).train()
    emb, side = mmv_forward(model, batch, cfg)
    assert side["audio_mask"].tolist() == [True, False, True, False] and side["silent"].sum() == 2
    side.pop("silent")
    masked, parts = mmv_loss(emb, cfg.loss, **side)
    # The same as if the silent clips had no audio stream; different from counting them as positives.
    dropped, _ = mmv_loss(emb, cfg.loss, audio_mask=torch.tensor([True, False, True, False]),
                          text_mask=side["text_mask"])
    kept, _ = mmv_loss(emb, cfg.loss, audio_mask=torch.ones(4, dtype=torch.bool), text_mask=side["text_mask"])
    assert masked.item() == dropped.item() and abs(kept.item() - masked.item()) > 1e-4


@pytest.mark.parametrize("n", [0, 4])
def test_the_log_counts_silent_clips(manifest, tmp_path, n):
    import mmv_torch.train.loop as T

    cfg = _cfg(contrastive_batch=n, steps=2)
    T.train(cfg, [str(manifest)], tmp_path / "run", tensorboard=False, progress=False)
    steps = [r for r in read_log(tmp_path / "run") if "event" not in r]
    assert [r["silent_clips"] for r in steps] == [2, 2]  # each step reads all 4 clips, 2 silent
