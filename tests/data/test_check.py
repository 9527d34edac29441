"""Tests for mmv_torch.data.tools.check: scanning folders and manifests, clean manifests."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from mmv_torch.config import DataConfig
from mmv_torch.data.manifests import read_class_folders, read_pretrain_manifest
from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.data.sources import MEDIA_KINDS
from mmv_torch.data.tools.check import _entries, check_file, check_path, format_report, modality_of, run_check
from tests.helpers.media_utils import make_video, make_wav, truncate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("chk")
    (d / "sub").mkdir()
    make_video(d / "good.mp4", num_frames=20, fps=10)
    make_video(d / "sub/silent.mp4", num_frames=10, fps=10, acodec=None)
    make_video(d / "long.mkv", num_frames=75, fps=25, vcodec="mpeg4", acodec="pcm_s16le", sample_rate=8000)
    truncate(d / "long.mkv", d / "cut.mkv", 0.4)
    truncate(d / "good.mp4", d / "cut.mp4", 0.5)
    (d / "zero.mp4").write_bytes(b"")
    make_wav(d / "sound.wav", seconds=0.5)
    (d / "notes.txt").write_text("not media")
    return d


def test_check_file_reports(folder):
    r = check_file(folder / "good.mp4")
    assert r["ok"] and r["video"] and r["audio"] and r["error"] is None
    assert r["duration"] == pytest.approx(2.0, abs=0.1) and r["fps"] == pytest.approx(10.0)
    assert (r["width"], r["height"], r["video_codec"], r["audio_codec"]) == (64, 48, "h264", "aac")
    s = check_file(folder / "sub/silent.mp4")
    assert s["ok"] and s["video"] and not s["audio"]
    cut = check_file(folder / "cut.mkv")
    assert not cut["ok"] and "truncated" in cut["error"]
    assert "empty" in check_file(folder / "zero.mp4")["error"]
    assert not check_file(folder / "cut.mp4")["ok"]
    w = check_file(folder / "sound.wav")
    assert w["modality"] == "audio" and w["ok"] and w["audio"] and not w["video"]


def test_check_folder_json_and_clean(folder, tmp_path, capsys):
    rep = run_check(str(folder), str(tmp_path / "r.json"), str(tmp_path / "clean/m.jsonl"))
    names = {f["path"].split("chk")[-1].split("/", 1)[1]: f["ok"] for f in rep["files"]}
    assert names == {"good.mp4": True, "sub/silent.mp4": True, "long.mkv": True, "cut.mkv": False,
                     "cut.mp4": False, "zero.mp4": False, "sound.wav": True}
    assert rep["num_ok"] == 4 and rep["num_bad"] == 3
    assert json.loads((tmp_path / "r.json").read_text())["num_bad"] == 3
    out = capsys.readouterr().out
    assert "4 of 7 files ok" in out and "BAD" in out and "empty file" in out
    lines = [json.loads(x) for x in (tmp_path / "clean/m.jsonl").read_text().splitlines()]
    assert sorted(k for x in lines for k in x) == ["audio", "video", "video", "video"]
    # Paths are relative to the clean manifest's folder.
    assert all((tmp_path / "clean" / v).is_file() for x in lines for v in x.values())


def test_check_manifest_keeps_lines(folder, tmp_path):
    m = tmp_path / "m.jsonl"
    rows = [{"video": str(folder / "good.mp4"), "narration": [{"start": 0, "end": 1, "text": "hi"}]},
            {"video": str(folder / "zero.mp4")}, {"video": str(folder / "nope.mp4")}]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = check_path(m, clean_manifest=tmp_path / "c.jsonl")
    assert [f["ok"] for f in rep["files"]] == [True, False, False]
    assert "does not exist" in rep["files"][2]["error"]
    entries = read_pretrain_manifest(tmp_path / "c.jsonl")
    assert len(entries) == 1 and entries[0].narrations[0].text == "hi"
    assert entries[0].path.endswith("good.mp4")
    with pytest.raises(ValueError, match="no such file or folder"):
        check_path(tmp_path / "absent")


def test_one_media_suffix_table(tmp_path):
    assert modality_of("a/B.MP4") == "video" and modality_of("x.ts") == "video" and modality_of("x.opus") == "audio"
    assert modality_of("x.webp") == "image" and modality_of("notes.txt") is None and modality_of("noext") is None
    assert MEDIA_KINDS is MEDIA_SUFFIXES
    # Class folders and folder scans pick files with the same table (.ts, .opus and .3gp were unknown to them).
    for cls, name in [("a", "x.ts"), ("a", "y.opus"), ("b", "z.3gp"), ("b", "skip.txt")]:
        (tmp_path / cls).mkdir(exist_ok=True)
        (tmp_path / cls / name).write_bytes(b"")
    entries, classes = read_class_folders(tmp_path)
    assert classes == ["a", "b"]
    assert [(e.path.rsplit("/", 1)[1], e.modality) for e in entries] == [("x.ts", "video"), ("y.opus", "audio"),
                                                                         ("z.3gp", "video")]
    assert sorted(e["file"].rsplit("/", 1)[1] for e in _entries(tmp_path)) == ["x.ts", "y.opus", "z.3gp"]


def _zero_packets(src, dst, t0, t1):
    """Copy ``src`` to ``dst`` with the data of every packet (both streams) shown in [t0, t1) zeroed."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        spans = [(k.pos, k.size) for k in c.demux() if k.size and k.pts is not None
                 and t0 <= float(k.pts * k.time_base) < t1]
    assert spans  # packet data only: the headers stay intact (the default check still reads the file)
    for pos, size in spans:
        data[pos:pos + size] = bytes(size)
    dst.write_bytes(bytes(data))
    return dst


def test_full_check_finds_mid_file_corruption(tmp_path, capsys):
    clean = make_video(tmp_path / "clean.mp4", num_frames=80, fps=10, gop=10)
    bad = _zero_packets(clean, tmp_path / "bad.mp4", 3.0, 4.5)
    # The default decodes the start and the last two seconds only: the damage at 3-4.5 s passes.
    fast = check_file(bad)
    assert fast["ok"] and fast["checked"] == "start+end" and fast["decode_errors"] is None
    full = check_file(bad, full=True)
    assert not full["ok"] and full["checked"] == "full" and not full["video"] and not full["audio"]
    assert full["decode_errors"] >= 15 and full["gaps"] == 2  # one gap per stream
    assert full["problem_at"] == pytest.approx(3.0, abs=0.05)
    assert "video corrupt" in full["error"] and "audio corrupt" in full["error"] and "3.0" in full["error"]
    for f in (False, True):
        ok = check_file(clean, full=f)
        assert ok["ok"] and ok["error"] is None and ok["problem_at"] is None
    ok = check_file(clean, full=True)
    assert (ok["frames"], ok["decode_errors"], ok["gaps"]) == (80, 0, 0)
    # The folder report says what was checked, and the clean manifest leaves the damaged file out.
    rep = run_check(str(tmp_path), str(tmp_path / "r.json"), str(tmp_path / "c.jsonl"), full=True)
    assert rep["checked"] == "full" and json.loads((tmp_path / "r.json").read_text())["checked"] == "full"
    assert "1 of 2 files ok, 1 bad (checked: full)" in capsys.readouterr().out
    assert [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()] == [{"video": "clean.mp4"}]
    assert check_path(tmp_path)["checked"] == "start+end"


def test_full_check_counts_gaps(tmp_path):
    # Frames 0-2.9 s and 5-5.9 s: nothing fails to decode, but 2 s of frames are missing.
    times = [i / 10 for i in range(30)] + [5 + i / 10 for i in range(10)]
    v = make_video(tmp_path / "hole.mp4", frame_times=times, acodec=None)
    rep = check_file(v, full=True)
    assert not rep["ok"] and rep["decode_errors"] == 0 and rep["gaps"] == 1 and rep["frames"] == 40
    assert rep["problem_at"] == pytest.approx(3.0, abs=0.1) and "1 gap(s)" in rep["error"]
    # Frames up to three periods apart are no gap (steps of 0.1 s and 0.3 s: 5 fps on average).
    uneven = make_video(tmp_path / "vfr.mp4", frame_times=[0.4 * (i // 2) + 0.1 * (i % 2) for i in range(16)],
                        acodec=None)
    rep = check_file(uneven, full=True)
    assert rep["fps"] == pytest.approx(5.0, abs=0.5) and rep["ok"] and rep["gaps"] == 0


def test_full_check_passes_good_files_of_every_kind(folder):
    rep = check_path(folder, full=True)
    names = {f["path"].split("chk")[-1].split("/", 1)[1]: f["ok"] for f in rep["files"]}
    assert names == {"good.mp4": True, "sub/silent.mp4": True, "long.mkv": True, "cut.mkv": False,
                     "cut.mp4": False, "zero.mp4": False, "sound.wav": True}
    assert all(f["decode_errors"] == 0 and f["gaps"] == 0 for f in rep["files"] if f["ok"])


def test_full_check_finds_zeroed_bytes_in_a_matroska_file(tmp_path):
    v = make_video(tmp_path / "v.mkv", num_frames=200, fps=25, vcodec="mpeg4", acodec="pcm_s16le", sample_rate=8000,
                   gop=25)
    data = bytearray(v.read_bytes())
    lo, hi = int(len(data) * 0.4), int(len(data) * 0.45)
    data[lo:hi] = bytes(hi - lo)  # whole clusters lost: the demuxer skips to the next one
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    assert check_file(bad)["ok"]  # start and end decode
    rep = check_file(bad, full=True)
    assert not rep["ok"] and rep["gaps"] == 2 and rep["frames"] < 200
    assert 2.5 < rep["problem_at"] < 4.0  # 40 % into an 8 s file


def test_check_counts_and_repairs_narrations_as_the_loader_does(folder, tmp_path):
    from mmv_torch.data.datasets import PretrainDataset

    m = tmp_path / "n.jsonl"
    m.write_text(json.dumps({"video": str(folder / "good.mp4"), "narration": [  # good.mp4 is 2 s long
        {"start": 0.5, "end": 0.2, "text": "end before start"}, {"start": -1, "end": 1, "text": "early start"},
        {"start": 1.0, "end": 1.5, "text": ""}, {"start": 2.5, "end": 3, "text": "after the end"},
        {"start": 1.5, "end": None, "text": "no end"}, {"start": 1.0, "end": 1.8, "text": "fine"}]}) + "\n")
    rep = check_path(m, clean_manifest=tmp_path / "c.jsonl")
    assert rep["num_ok"] == 1 and (rep["narrations_dropped"], rep["narrations_clamped"]) == (4, 1)
    assert rep["files"][0]["narrations"]["kept"] == 2
    assert "narrations: 4 dropped, 1 clamped" in format_report(rep)
    ds = PretrainDataset(m, DataConfig())
    kept = ds._narrations(0, ds._duration(ds.entries[0]))  # the loader's view with the probed duration
    clean = read_pretrain_manifest(tmp_path / "c.jsonl")[0]
    assert clean.narrations == kept and [n.text for n in kept] == ["early start", "fine"] and kept[0].start == 0.0
    assert clean.issues is None


def test_p34_check_refuses_a_json_report_instead_of_decoding_it(tmp_path, capsys):
    """r_check_json_manifest: `data check x.json` read the JSON report as a video ("0 of 1 files ok")."""
    from mmv_torch.cli.main import main

    report = tmp_path / "x.json"
    report.write_text('{"path": "m.jsonl", "num_files": 1, "files": []}\n')
    rc = main(["data", "check", str(report)])
    err = capsys.readouterr()
    assert rc == 2 and "0 of 1 files ok" not in err.out
    assert "x.json: not a .jsonl manifest" in err.err and "suffix .jsonl" in err.err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["data", "check", str(tmp_path / "notes.txt")]) == 2
    assert main(["data", "check", str(tmp_path / "absent.mp4")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_damaged_audio_or_video_stream_is_reported_alike_and_counted(tmp_path, capsys):
    from tests.helpers.index_utils import damage_stream

    good = make_video(tmp_path / "good.mp4", num_frames=30, fps=10)
    folder = tmp_path / "videos"
    folder.mkdir()
    damage_stream(good, folder / "no_video.mp4", "video")
    damage_stream(good, folder / "no_sound.mp4", "audio", first=2)
    rep = run_check(str(folder))
    by_name = {Path(f["path"]).name: f for f in rep["files"]}
    v, a = by_name["no_video.mp4"], by_name["no_sound.mp4"]
    assert not v["ok"] and not v["video"] and v["audio"] and v["error"].startswith("video: "), v
    assert not a["ok"] and a["video"] and not a["audio"] and a["error"].startswith("audio: "), a
    assert rep["num_without_decodable_audio"] == 1 and rep["num_without_decodable_video"] == 1
    assert "1 no decodable video (indexed audio-only)" in capsys.readouterr().out
