"""``mmv-torch data transcode``: outputs probed for size, frame rate and key frame spacing; corrupt inputs
skipped; a rerun skips finished files; the new manifest loads in ``PretrainDataset``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from mmv_torch.config import DataConfig
from mmv_torch.data.datasets import PretrainDataset
from mmv_torch.data.tools import transcode as tc
from mmv_torch.data.tools.transcode import TranscodeOptions, output_size, run_transcode
from tests.helpers.media_utils import frame_index_of, has_encoder, make_video, truncate

pytestmark = pytest.mark.skipif(not has_encoder("libx264"), reason="PyAV without libx264")


def _probe(path: Path) -> dict:
    """Size, nominal rate, packet times and key frame times of the video stream; audio codec and rate."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times, keys = [], []
        for p in c.demux(v):
            if p.dts is None:
                continue
            t = float(p.pts * p.time_base)
            times.append(t)
            if p.is_keyframe:
                keys.append(t)
        audio = [(s.codec_context.name, s.codec_context.sample_rate) for s in c.streams.audio]
        return {"size": (v.codec_context.width, v.codec_context.height), "rate": float(v.average_rate),
                "times": sorted(times), "keys": sorted(keys), "audio": audio}


@pytest.fixture
def media(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    # 2 s at 25 fps with a single key frame; 96x64 (short side 64); AAC audio (copied).
    make_video(src / "a.mp4", num_frames=50, fps=25, size=(96, 64), gop=50)
    # Portrait, 20 fps, FLAC audio in Matroska (re-encoded to AAC at 22.05 kHz).
    make_video(src / "sub" / "b.mkv", num_frames=40, fps=20, size=(48, 80), gop=40, acodec="flac",
               sample_rate=22050)
    make_video(tmp_path / "c.mp4", num_frames=30, fps=25, size=(64, 64))
    truncate(tmp_path / "c.mp4", src / "broken.mp4", 0.5)
    lines = [{"video": "a.mp4", "start": 0.25, "end": 1.75, "narration": [{"start": 0.5, "end": 1.0, "text": "hi"}]},
             {"video": "sub/b.mkv"}, {"video": "broken.mp4"}, {"video": "a.mp4"}]
    (src / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return src


def test_output_size_scales_the_short_side_down_only():
    assert output_size(320, 240, 120) == (160, 120)
    assert output_size(240, 320, 120) == (120, 160)
    assert output_size(320, 240, 256) == (320, 240)  # never up
    assert output_size(321, 243, None) == (320, 244)  # even sizes for yuv420p (round half to even)
    assert output_size(1920, 1080, 256) == (456, 256)


def test_transcode_probes_and_manifest(media, tmp_path):
    out = tmp_path / "out"
    opts = TranscodeOptions(short_side=32, fps=10, keyframe_interval=0.5, preset="ultrafast")
    report = run_transcode(media / "train.jsonl", out, opts)
    assert (report["num_done"], report["num_skipped"], report["num_failed"]) == (2, 0, 1)
    [bad] = [r for r in report["files"] if r["status"] == "failed"]
    assert bad["source"].endswith("broken.mp4") and bad["reason"]
    assert json.loads((out / tc.REPORT_NAME).read_text())["num_failed"] == 1

    a, b = _probe(out / "a.mp4"), _probe(out / "sub" / "b.mp4")
    assert a["size"] == (48, 32) and b["size"] == (32, 54)
    for p in (a, b):
        assert p["rate"] == 10.0
        assert p["times"] == pytest.approx([k / 10 for k in range(20)], abs=1e-3)  # 2 s at 10 fps, times kept
        assert p["keys"] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=1e-3)
    assert a["audio"] == [("aac", 16000)] and b["audio"] == [("aac", 22050)]
    assert [r["audio"] for r in sorted(report["files"], key=lambda r: r["source"]) if r["status"] == "done"] == \
        ["copy", "aac"]

    lines = [json.loads(s) for s in (out / "train.jsonl").read_text().splitlines()]
    assert [x["video"] for x in lines] == ["a.mp4", "sub/b.mp4", "a.mp4"]  # broken one left out
    assert lines[0]["start"] == 0.25 and lines[0]["end"] == 1.75 and lines[0]["narration"][0]["text"] == "hi"

    ds = PretrainDataset(out / "train.jsonl", DataConfig(num_frames=4, fps=5.0, crop_size=16, resize_short=18,
                                                            augment_on="worker"))
    sample = ds[0]
    assert sample["video"].shape == (3, 4, 16, 16) and bool(sample["has_audio"])


def test_frames_keep_their_times(tmp_path):
    # Frame i of the source is grey level i: after re-timing to 10 fps, output frame k (t = k/10) must show
    # the source frame of that time (25 fps: frame 2.5k, rounded to the slot), not a shifted one.
    make_video(tmp_path / "v.mp4", num_frames=25, fps=25, size=(32, 32), acodec=None)
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "v.mp4"}) + "\n")
    run_transcode(tmp_path / "m.jsonl", tmp_path / "out", TranscodeOptions(short_side=None, fps=10, crf=0,
                                                                            preset="ultrafast"))
    with av.open(str(tmp_path / "out" / "v.mp4")) as c:
        got = [(round(f.time, 3), frame_index_of(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    assert [t for t, _ in got] == pytest.approx([k / 10 for k in range(10)])
    for k, (_, idx) in enumerate(got):
        assert abs(idx - 2.5 * k) <= 1, got


def test_keep_rate_and_keyframe_interval_without_fps(media, tmp_path):
    out = tmp_path / "out"
    run_transcode(media / "train.jsonl", out, TranscodeOptions(short_side=None, keyframe_interval=0.4,
                                                               preset="ultrafast"))
    a = _probe(out / "a.mp4")
    assert a["size"] == (96, 64) and a["rate"] == 25.0
    assert a["times"] == pytest.approx([i / 25 for i in range(50)], abs=1e-3)
    assert a["keys"] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6], abs=1e-3)


def test_rerun_skips_finished_files_and_redoes_changed_ones(media, tmp_path, monkeypatch):
    out = tmp_path / "out"
    opts = TranscodeOptions(short_side=32, preset="ultrafast")
    run_transcode(media / "train.jsonl", out, opts)
    first = (out / "a.mp4").stat().st_mtime_ns
    # A killed run leaves a temporary file and maybe an output from other options: both handled.
    (out / ".a.mp4.tmp.99999").write_bytes(b"partial")
    calls = []
    real = tc._write
    monkeypatch.setattr(tc, "_write", lambda src, *a: calls.append(Path(src).name) or real(src, *a))
    report = run_transcode(media / "train.jsonl", out, opts)
    assert (report["num_done"], report["num_skipped"], report["num_failed"]) == (0, 2, 1)
    assert calls == ["broken.mp4"] and (out / "a.mp4").stat().st_mtime_ns == first
    assert not (out / ".a.mp4.tmp.99999").exists()
    report = run_transcode(media / "train.jsonl", out, TranscodeOptions(short_side=16, preset="ultrafast"))
    assert report["num_done"] == 2 and _probe(out / "a.mp4")["size"] == (24, 16)
    os.utime(media / "a.mp4", ns=(first + 10**9, first + 10**9))  # a changed source is redone
    report = run_transcode(media / "train.jsonl", out, TranscodeOptions(short_side=16, preset="ultrafast"))
    assert (report["num_done"], report["num_skipped"]) == (1, 1)


def test_refuses_collisions_overwrites_and_bad_options(tmp_path):
    make_video(tmp_path / "a.mp4", num_frames=5, acodec=None)
    make_video(tmp_path / "a.mkv", num_frames=5, acodec=None)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"video": "a.mp4"}) + "\n" + json.dumps({"video": "a.mkv"}) + "\n")
    with pytest.raises(ValueError, match="both be written"):
        run_transcode(m, tmp_path / "out", TranscodeOptions())
    m.write_text(json.dumps({"video": "a.mp4"}) + "\n")
    with pytest.raises(ValueError, match="overwrite"):
        run_transcode(m, tmp_path, TranscodeOptions())
    m.write_text(json.dumps({"audio": "x.wav"}) + "\n")
    with pytest.raises(ValueError, match="lists no video"):
        run_transcode(m, tmp_path / "out", TranscodeOptions())
    for bad in ({"keyframe_interval": 0.0}, {"crf": 60}, {"preset": "quick"}, {"fps": -1.0}, {"short_side": 1}):
        with pytest.raises(ValueError):
            TranscodeOptions(**bad)


def test_cli_transcode_in_process(media, tmp_path, capsys):
    from mmv_torch.cli.main import main

    out = tmp_path / "out"
    code = main(["data", "transcode", str(media / "train.jsonl"), "--out", str(out), "--short-side", "32",
                 "--fps", "12.5", "--keyframe-interval", "1", "--preset", "ultrafast"])
    res = capsys.readouterr()
    assert code == 1  # one input is broken
    assert "2 transcoded, 0 already done, 1 failed" in res.out and "broken.mp4" in res.out
    assert "[3/3]" in res.err  # progress lines
    a = _probe(out / "a.mp4")
    assert a["rate"] == 12.5 and a["keys"] == pytest.approx([0.0, 0.96, 1.92], abs=1e-3)  # 12 frames, not 13
    assert main(["data", "transcode", str(media / "train.jsonl"), "--out", str(out), "--crf", "60"]) == 2
    err = capsys.readouterr().err
    assert "mmv-torch data transcode: error:" in err and "crf 60" in err


@pytest.mark.e2e
def test_cli_transcode_with_workers(media, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-m", "mmv_torch", "data", "transcode", str(media / "train.jsonl"),
                          "--out", str(out), "--short-side", "32", "--workers", "2", "--preset", "ultrafast"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr  # one input is broken
    assert "2 transcoded, 0 already done, 1 failed" in res.stdout and "broken.mp4" in res.stdout
    assert _probe(out / "sub" / "b.mp4")["size"] == (32, 54)
    res = subprocess.run([sys.executable, "-m", "mmv_torch", "data", "transcode", str(media / "train.jsonl"),
                          "--out", str(out), "--keyframe-interval", "0"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr
