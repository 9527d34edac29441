"""Tests for mmv_torch.data.tools.bench on a tiny synthetic set (files written by tests/helpers/media_utils.py)."""

from __future__ import annotations

import json

import pytest

from mmv_torch.cli import data as cli_data
from mmv_torch.cli.data import add_bench_arguments
from mmv_torch.cli.main import main as cli_main
from mmv_torch.config import DataConfig
from mmv_torch.data import datasets
from mmv_torch.data.tools.bench import STAGES, run_data_bench
from tests.helpers.media_utils import make_video

CFG = DataConfig(num_frames=4, fps=10.0, crop_size=32, resize_short=40, audio_seconds=0.5, num_mel_bins=16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    lines = []
    for i in range(2):
        make_video(d / f"v{i}.mp4", num_frames=50, fps=25, size=(64, 48), gop=10)
        lines.append(json.dumps({"video": f"v{i}.mp4", "narration": [{"start": 0.0, "end": 1.0, "text": "a b"}]}))
    (d / "m.jsonl").write_text("\n".join(lines) + "\n")
    return d / "m.jsonl"


def test_result_keys_and_definitions(manifest):
    train_transform = datasets.train_transform
    r = run_data_bench(manifest, CFG, workers=1, seconds=0.5)
    assert datasets.train_transform is train_transform  # stage timers removed again
    assert r["clips"] >= 1 and r["decoded_frames"] >= 50 and r["skips"] == 0
    assert r["clips_per_s"] > 0 and r["total_clips_per_s"] == pytest.approx(r["clips_per_s"])
    assert r["source_fps"] == pytest.approx(25.0)
    assert r["frames_per_clip"] == pytest.approx(10.0)  # 4 frames at 10 fps = 0.4 s of a 25 fps source
    assert r["decode_limit_clips_per_s"] == pytest.approx(r["decode_fps"] / 10.0)
    assert r["fraction_of_limit"] == pytest.approx(r["clips_per_s"] / r["decode_limit_clips_per_s"])
    assert set(r["stages"]) == set(STAGES) | {"other"}
    for s in ("open_seek", "video_decode", "convert", "augment", "audio_decode", "log_mel", "text"):
        assert r["stages"][s]["ms_per_clip"] > 0, s
    assert sum(v["share"] for v in r["stages"].values()) == pytest.approx(1.0)
    assert r["target_clips_per_s"] == pytest.approx(0.6 * r["decode_limit_clips_per_s"])
    json.dumps(r)  # serialisable


def test_verdict_against_a_given_target(manifest):
    low = run_data_bench(manifest, CFG, seconds=0.2, target_clips_per_s=1e-6)
    high = run_data_bench(manifest, CFG, seconds=0.2, target_clips_per_s=1e6)
    assert low["meets_target"] and low["verdict"].startswith("meets")
    assert not high["meets_target"] and high["verdict"].startswith("below")


def test_two_workers(manifest):
    r = run_data_bench(manifest, CFG, workers=2, seconds=0.5)
    assert len(r["clips_per_s_by_worker"]) == 2
    assert r["total_clips_per_s"] == pytest.approx(sum(r["clips_per_s_by_worker"]))
    assert r["settings"]["workers"] == 2


def test_bad_input(tmp_path, manifest):
    with pytest.raises(ValueError, match="workers"):
        run_data_bench(manifest, CFG, workers=0)
    with pytest.raises(ValueError, match="seconds"):
        run_data_bench(manifest, CFG, seconds=0)
    with pytest.raises(ValueError, match="missing.jsonl"):
        run_data_bench(tmp_path / "missing.jsonl", CFG)
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 10)
    (tmp_path / "bad.jsonl").write_text('{"video": "bad.mp4"}\n')
    with pytest.raises(ValueError, match="bad.jsonl"):
        run_data_bench(tmp_path / "bad.jsonl", CFG, seconds=0.1)


def test_command_writes_json_and_exit_status(tmp_path, manifest, capsys, monkeypatch):
    monkeypatch.setattr(cli_data, "DataConfig", lambda: CFG)
    out = tmp_path / "r.json"
    assert cli_main(["data", "bench", str(manifest), "--seconds", "0.2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["seconds"] == 0.2
    assert "of the decode limit" in capsys.readouterr().out
    assert cli_main(["data", "bench", str(manifest), "--seconds", "0.2", "--target-clips-per-s", "1e6"]) == 1


def test_arguments():
    import argparse

    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    a = p.parse_args(["m.jsonl", "--workers", "3", "--seconds", "5", "--json", "o.json", "--target-clips-per-s", "9"])
    assert (a.manifest, a.workers, a.seconds, a.json, a.target_clips_per_s) == ("m.jsonl", 3, 5.0, "o.json", 9.0)


def test_batch_mode_times_the_worker_and_the_batch_stage_apart(tmp_path, manifest, capsys, monkeypatch):
    from mmv_torch.data.media import batch_augment

    calls = []
    real = batch_augment.augment_batch
    monkeypatch.setattr(batch_augment, "augment_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(cli_data, "DataConfig", lambda: CFG)
    out = tmp_path / "r.json"
    args = ["data", "bench", str(manifest), "--seconds", "0.2", "--augment-on", "batch", "--json", str(out)]
    assert cli_main(args) == 0
    r = json.loads(out.read_text())
    assert r["augment_on"] == "batch" and "augment (draw only)" in r["worker_stages"]
    assert "augment" not in r["worker_stages"] and "video_decode" in r["worker_stages"]
    assert len(calls) >= 3  # warm-up + at least two timed batches, in this process
    assert r["batch_stage_frames_shape"] == [8, 4, 48, 64, 3] and r["batch_stage_clips_per_s"] > 0
    assert r["combined_clips_per_s"] == pytest.approx(
        1 / (1 / r["clips_per_s"] + 1 / r["batch_stage_clips_per_s"]))
    assert r["combined_fraction_of_limit"] == pytest.approx(r["combined_clips_per_s"] / r["decode_limit_clips_per_s"])
    assert "batch stage on this CPU" in capsys.readouterr().out
