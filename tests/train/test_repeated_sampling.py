"""data.clips_per_video: several clips per opened video (dataset items, the loader's flat batches, the config)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import IterableDataset

from mmv_torch.config import Config, DataConfig, TrainConfig, apply_overrides, get_preset
from mmv_torch.data import datasets
from mmv_torch.data.datasets import PretrainDataset, make_sample
from mmv_torch.data.media.transforms import random_start_time
from mmv_torch.train.sampling import FlattenCollate, TrainData, as_train_data, make_train_loader
from tests.helpers.media_utils import make_video

CFG = DataConfig(num_frames=4, fps=8.0, crop_size=24, resize_short=28, audio_seconds=0.5, num_mel_bins=16,
                 num_candidates=2, max_words=4, augment_on="worker")  # the tests read each clip's "video"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    lines = []
    for i in range(6):
        p = make_video(root / f"v{i}.mp4", num_frames=40, fps=10, size=(40, 32), acodec="aac")
        lines.append({"video": p.name, "narration": [{"start": 0.5, "end": 1.5, "text": f"word{i}"}]})
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "m.jsonl"


def test_an_item_is_k_samples_of_one_video_with_independent_starts(manifest, monkeypatch):
    starts_seen = []
    real = datasets.load_clips

    def spy(src, starts, *a, **k):
        starts_seen.append(list(starts))
        return real(src, starts, *a, **k)

    monkeypatch.setattr(datasets, "load_clips", spy)
    ds = PretrainDataset(manifest, DataConfig(**{**CFG.__dict__, "clips_per_video": 3}), seed=5)
    items = ds[2]
    assert isinstance(items, list) and len(items) == 3
    assert all(int(s["index"]) == 2 for s in items) and all(s["video"].shape == (3, 4, 24, 24) for s in items)
    # The starts are the item generator's first three draws, uniform over the video (4 s, clip 0.5 s).
    g = torch.Generator().manual_seed(hash((5, 0, 2)) & 0x7FFFFFFFFFFFFFFF)
    assert starts_seen == [[random_start_time(4.0, 0.5, g) for _ in range(3)]]
    assert len(set(starts_seen[0])) == 3
    assert not torch.equal(items[0]["video"], items[1]["video"])


def test_evaluation_items_stay_one_middle_clip(manifest):
    ds = PretrainDataset(manifest, DataConfig(**{**CFG.__dict__, "clips_per_video": 3}), train=False)
    assert isinstance(ds[0], dict) and ds[0]["video"].shape == (3, 4, 224, 224)  # eval_crop_size


def test_one_clip_per_video_is_the_single_sample_path(manifest):
    ds = PretrainDataset(manifest, CFG, seed=5)
    item = ds[1]
    assert isinstance(item, dict)
    g = torch.Generator().manual_seed(hash((5, 0, 1)) & 0x7FFFFFFFFFFFFFFF)
    e = ds.entries[1]
    want = make_sample(e.path, e.path, e.narrations, ds._duration(e), CFG, None, True, g, 1)
    assert all(torch.equal(item[k], want[k]) for k in want)


def test_loader_batches_hold_batch_size_clips_from_batch_size_over_k_videos(manifest):
    cfg = Config(data=DataConfig(**{**CFG.__dict__, "clips_per_video": 2}),
                 train=TrainConfig(batch_size=4, num_workers=0, seed=1))
    data = as_train_data(PretrainDataset(manifest, cfg.data, seed=1))
    loader, sampler = make_train_loader(data, cfg)
    assert sampler.batches_per_epoch == 3  # 6 videos, 2 per batch: an epoch visits each video once
    batches = [b for _, b in zip(range(3), loader)]
    for b in batches:
        idx = b["index"].tolist()
        assert b["video"].shape[0] == 4 and idx[0] == idx[1] and idx[2] == idx[3] and idx[0] != idx[2]
    assert sorted(i for b in batches for i in b["index"].tolist()[::2]) == list(range(6))


def test_flatten_collate_mixes_lists_and_samples():
    a, b, c = ({"x": torch.tensor(float(i))} for i in range(3))
    assert FlattenCollate(None)([[a, b], c])["x"].tolist() == [0.0, 1.0, 2.0]


def test_batch_size_must_be_a_multiple_and_shards_are_refused():
    with pytest.raises(ValueError, match=r"train.batch_size \(6\) must be a multiple of data.clips_per_video \(4\)"):
        apply_overrides(get_preset("tiny"), {"train.batch_size": 6, "data.clips_per_video": 4})
    with pytest.raises(ValueError, match="data.clips_per_video must be > 0"):
        DataConfig(clips_per_video=0)

    class Stream(IterableDataset):
        num_samples = 4

        def __iter__(self):
            return iter(())

    cfg = apply_overrides(get_preset("tiny"), {"train.batch_size": 4, "data.clips_per_video": 2})
    with pytest.raises(ValueError, match="needs manifests"):
        make_train_loader(TrainData(Stream(), []), cfg)
