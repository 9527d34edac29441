"""Tests for mmv_torch.data.shards: writing tar shards and streaming them back."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
from torch.utils.data import DataLoader

from mmv_torch.config import DataConfig
from mmv_torch.data.shards import ShardDataset, expand_shards, iter_tar_samples
from mmv_torch.data.tools import shard_writer
from mmv_torch.data.tools.shard_writer import run_shard, write_shards
from tests.helpers.media_utils import make_video

CFG = DataConfig(num_frames=4, fps=8.0, crop_size=32, eval_crop_size=32, resize_short=36, audio_seconds=0.5,
                 num_mel_bins=20, num_candidates=2, max_words=4, max_skip_rate=0.5,
                 augment_on="worker")  # these tests read the per-clip "video" of a training sample


def tokenize(text):
    ids = [len(w) for w in text.split()][:4]
    return ids + [0] * (4 - len(ids)), [True] * len(ids) + [False] * (4 - len(ids))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("shardsrc")
    rows = []
    for i in range(6):
        name = f"v{i}.mp4" if i % 2 else f"v{i}.mkv"
        make_video(d / name, num_frames=10, fps=10, size=(40, 36), vcodec="libx264",
                   acodec=None if i == 3 else "aac")
        row = {"video": name}
        if i < 4:
            row["narration"] = [{"start": 0.1, "end": 0.6, "text": f"clip number {i}"}]
        rows.append(row)
    (d / "zero.mp4").write_bytes(b"")
    rows.insert(2, {"video": "zero.mp4"})
    rows.insert(4, {"video": "missing.mp4"})
    (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "m.jsonl"


def test_write_shards(manifest, tmp_path):
    rep = write_shards(manifest, tmp_path / "out", samples_per_shard=2)
    assert rep["samples"] == 6 and len(rep["shards"]) == 3
    assert sorted(s["path"].rsplit("/", 1)[1] for s in rep["skipped"]) == ["missing.mp4", "zero.mp4"]
    with tarfile.open(rep["shards"][0]) as t:
        assert t.getnames() == ["000000000.mkv", "000000000.json", "000000001.mp4", "000000001.json"]
    samples = list(iter_tar_samples(rep["shards"][1]))
    assert [k for k, _ in samples] == ["000000002", "000000003"]
    meta = json.loads(samples[0][1]["json"])
    assert meta["path"] == "v2.mkv" and meta["duration"] == pytest.approx(1.0, abs=0.1)
    assert samples[0][1]["mkv"] == (manifest.parent / "v2.mkv").read_bytes()
    assert expand_shards(tmp_path / "out") == rep["shards"]
    assert expand_shards(str(tmp_path / "out/shard-{000000..000002}.tar")) == rep["shards"]
    assert expand_shards(str(tmp_path / "out/shard-*.tar")) == rep["shards"]


def test_webdataset_reads_the_shards(manifest, tmp_path):
    wds = pytest.importorskip("webdataset")
    rep = write_shards(manifest, tmp_path / "out", samples_per_shard=4)
    got = list(wds.WebDataset(rep["shards"], shardshuffle=False))
    assert [s["__key__"] for s in got] == [f"{i:09d}" for i in range(6)]
    assert "json" in got[0] and ("mkv" in got[0] or "mp4" in got[0])


def test_stream_sample_format_and_worker_split(manifest, tmp_path):
    rep = write_shards(manifest, tmp_path / "out", samples_per_shard=1)
    ds = ShardDataset(tmp_path / "out", CFG, tokenize=tokenize, train=True)
    items = list(ds)
    assert sorted(int(s["index"]) for s in items) == list(range(6))
    s = next(x for x in items if int(x["index"]) == 1)
    assert s["video"].shape == (3, 4, 32, 32) and s["audio"].shape == (1, 51, 20)
    assert s["text"].shape == (2, 4) and s["text_mask"].tolist() == [True, False]
    assert s["text"][0].tolist() == [4, 6, 1, 0]  # "clip number 1"
    three = next(x for x in items if int(x["index"]) == 3)
    assert not three["has_audio"]
    # Two workers: every sample exactly once; batches collate.
    loader = DataLoader(ShardDataset(rep["shards"], CFG, tokenize=tokenize), batch_size=2, num_workers=2)
    idx = torch.cat([b["index"] for b in loader]).tolist()
    assert sorted(idx) == list(range(6))
    # Two ranks get disjoint shards that cover the set.
    r0 = {int(x["index"]) for x in ShardDataset(rep["shards"], CFG, rank=0, world_size=2)}
    r1 = {int(x["index"]) for x in ShardDataset(rep["shards"], CFG, rank=1, world_size=2)}
    assert r0.isdisjoint(r1) and r0 | r1 == set(range(6))
    with pytest.raises(ValueError, match="ranks"):
        ShardDataset(rep["shards"][:1], CFG, rank=0, world_size=2).my_shards()


def test_resample_shuffle_and_skips(manifest, tmp_path):
    rep = write_shards(manifest, tmp_path / "out", samples_per_shard=3)
    ds = ShardDataset(rep["shards"], CFG, resample=True, num_samples=9, shuffle_buffer=4, seed=3)
    idx = [int(x["index"]) for x in ds]
    assert len(idx) == 9 and set(idx) <= set(range(6))
    assert idx == [int(x["index"]) for x in ShardDataset(rep["shards"], CFG, resample=True, num_samples=9,
                                                          shuffle_buffer=4, seed=3)]
    # A shard with a corrupt sample: it is skipped and counted, the stream goes on.
    bad = tmp_path / "bad.tar"
    with tarfile.open(rep["shards"][0]) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "000000001.mp4":  # an mp4 cut short loses its index (moov atom at the end)
                data = data[: len(data) // 3]
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    ds = ShardDataset([bad], CFG)
    got = [int(x["index"]) for x in ds]
    assert got == [0, 2] and ds.tracker.skips == 1 and "000000001" in ds.tracker.skipped[0][0]


def test_run_shard_cli_function(manifest, tmp_path, capsys):
    rep = run_shard(str(manifest), str(tmp_path / "o"), samples_per_shard=10)
    assert len(rep["shards"]) == 1
    assert "wrote 6 samples in 1 shards" in capsys.readouterr().out


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_non_empty_folder_is_refused(manifest, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_shards(manifest, out, samples_per_shard=2)
    (out / "notes.txt").write_text("mine")
    before = _contents(out)
    with pytest.raises(ValueError, match=r"out is not empty.*--overwrite"):
        write_shards(manifest, out, samples_per_shard=5)
    assert _contents(out) == before  # nothing written, the old files byte-identical
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and nothing next to it
    with pytest.raises(ValueError, match="holds the manifest"):
        write_shards(manifest, manifest.parent, overwrite=True)
    assert (manifest.parent / "v0.mkv").is_file()
    monkeypatch.chdir(out)
    with pytest.raises(ValueError, match="holds the current folder"):
        write_shards(manifest, tmp_path, overwrite=True)
    monkeypatch.undo()
    assert _contents(out) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_shards(manifest, tmp_path / "file")


def test_overwrite_replaces_every_old_shard(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    old = write_shards(manifest, out, samples_per_shard=1)
    assert len(old["shards"]) == 6
    (out / "notes.txt").write_text("old")
    rep = run_shard(str(manifest), str(out), samples_per_shard=4, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert rep["shards"] == [str(out / "shard-000000.tar"), str(out / "shard-000001.tar")]
    assert sorted(int(x["index"]) for x in ShardDataset(out, CFG, train=False)) == list(range(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old folder and the temporary one are gone
    assert "wrote 6 samples in 2 shards" in capsys.readouterr().out


def test_empty_existing_folder_is_fine(manifest, tmp_path):
    (tmp_path / "out").mkdir()
    rep = write_shards(manifest, tmp_path / "out", samples_per_shard=3)
    assert [p.name for p in sorted((tmp_path / "out").iterdir())] == ["shard-000000.tar", "shard-000001.tar"]
    assert rep["samples"] == 6


def test_interrupted_run_leaves_the_old_shards(manifest, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_shards(manifest, out, samples_per_shard=1)
    before = _contents(out)
    calls, written = [], []
    real_probe = shard_writer.probe

    def probe_then_stop(data, name=None):
        calls.append(name)
        if len(calls) == 4:  # v0, v1 (zero.mp4 fails to probe), then v2: two new shards are written
            written.extend(tmp_path.glob(".out.tmp.*/new-*.tar"))
            raise KeyboardInterrupt
        return real_probe(data, name=name)

    monkeypatch.setattr(shard_writer, "probe", probe_then_stop)
    with pytest.raises(KeyboardInterrupt):
        write_shards(manifest, out, samples_per_shard=1, prefix="new", overwrite=True)
    assert len(calls) == 4 and len(written) == 2
    assert _contents(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # A temporary folder of a killed run (its process gone) is removed by the next run.
    stale = tmp_path / ".out.tmp.999999999"
    stale.mkdir()
    (stale / "new-000000.tar").write_bytes(b"partial")
    monkeypatch.undo()
    write_shards(manifest, out, samples_per_shard=6, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["shard-000000.tar"]


def test_shards_honour_manifest_windows(tmp_path):
    """A manifest line's start/end window survives sharding: the stream's clips come from inside it."""
    import dataclasses

    from tests.helpers.media_utils import frame_index_of

    make_video(tmp_path / "long.mp4", num_frames=27, fps=10)  # 2.7 s, frame i shows level i
    m = tmp_path / "w.jsonl"
    m.write_text(json.dumps({"video": "long.mp4", "start": 1.6, "end": 2.6}) + "\n")
    rep = write_shards(m, tmp_path / "out", samples_per_shard=1)
    cfg = dataclasses.replace(CFG, color_jitter=0.0, color_prob=0.0)
    evaluation = next(iter(ShardDataset(rep["shards"], cfg, train=False)))
    # the middle 0.5 s of [1.6, 2.6] starts at 1.85 s (frame 18); the whole file's middle would be frame 11
    assert frame_index_of((evaluation["video"][:, 0].permute(1, 2, 0) * 255).numpy()) == pytest.approx(18, abs=1)
    ds = ShardDataset(rep["shards"], cfg, train=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        first = frame_index_of((next(iter(ds))["video"][:, 0].permute(1, 2, 0) * 255).numpy())
        assert 16 <= first <= 21
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "long.mp4", "start": 2.0, "end": 1.0}) + "\n")
    with pytest.raises(ValueError, match="window"):
        write_shards(bad, tmp_path / "out2")
