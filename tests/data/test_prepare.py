"""``mmv-torch data prepare`` on small fixtures written in each data set's distributed layout, quirks
included. Media are empty placeholder files: preparing only finds files, it does not decode them."""

import json
from pathlib import Path

import pytest

from mmv_torch.cli.main import main
from mmv_torch.data.manifests import read_labelled_manifest, read_pretrain_manifest
from mmv_torch.data.prepare import DATASETS, run_prepare


def _touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _prepare(tmp_path, dataset, ann, **kw):
    out = tmp_path / "out" / f"{dataset}.jsonl"
    rep = run_prepare(dataset, str(ann), str(tmp_path / "media"), str(out), json_out=str(tmp_path / "rep.json"),
                      **kw)
    assert json.loads((tmp_path / "rep.json").read_text())["written"] == rep["written"]
    return _lines(out), rep, out


def test_howto100m_caption_json_with_noise(tmp_path):
    ann = tmp_path / "caption.json"
    ann.write_text(json.dumps({
        "-abc_12345": {"start": [0.41, 3.92, 5.0, 7.0], "end": [3.91, 5.9, 4.0, 8.0],
                       "text": ["check pic tonight", "pick bowl", "end before start", ""]},
        "--xyz": {"start": [1.0, -0.5], "end": [2.0, 1.0], "text": ["stir", "nan"]},
        "gone": {"start": [0.0], "end": [1.0], "text": ["missing video"]},
        "short": {"start": [0.0, 1.0], "end": [1.0], "text": ["a", "b"]},
    }))
    _touch(tmp_path / "media", "a/b/-abc_12345.webm", "c/--xyz.mp4", "notes/--xyz.txt")
    lines, rep, out = _prepare(tmp_path, "howto100m", ann)
    assert [x["id"] for x in lines] == ["-abc_12345", "--xyz"]
    assert lines[0]["video"] == "../media/a/b/-abc_12345.webm" and "start" not in lines[0]
    assert [n["text"] for n in lines[0]["narration"]] == ["check pic tonight", "pick bowl"]
    assert lines[1]["narration"] == [{"start": 1.0, "end": 2.0, "text": "stir"}]
    assert rep["narrations"]["dropped"] == 3 and rep["narrations"]["reasons"] == {"empty text": 2, "end <= start": 1}
    assert rep["num_missing"] == 1 and rep["missing"][0]["id"] == "gone"
    assert rep["num_malformed"] == 1 and "differ in length" in rep["malformed"][0]["reason"]
    entries = read_pretrain_manifest(out)  # the loader reads the manifest back as written
    assert entries[0].path == str(tmp_path / "out/../media/a/b/-abc_12345.webm")


def test_howto100m_csv_folder(tmp_path):
    ann = tmp_path / "howto_csv"
    ann.mkdir()
    (ann / "-vid1.csv").write_text("start,end,text\n0.41,3.91,check pic tonight pick\n3.92,5.9,bowl\n")
    (ann / "vid2.csv").write_text("begin,finish,words\n1,2,x\n")
    _touch(tmp_path / "media", "x/-vid1.mkv", "vid2.mp4")
    lines, rep, _ = _prepare(tmp_path, "howto100m", ann)
    assert [x["id"] for x in lines] == ["-vid1"] and len(lines[0]["narration"]) == 2
    assert rep["num_malformed"] == 1 and "start,end,text" in rep["malformed"][0]["reason"]


AUDIOSET_CSV = """# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=4, num_segs=4, num_unique_labels=3, num_positive_labels=5
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
-missing01, 0.000, 10.000, "/m/09x0r"
badlabel00, 0.000, 10.000, "/m/nope"
short, 10.000
"""
AUDIOSET_LABELS = 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n' \
                  '2,/t/dd00088,"Gush"\n3,/m/012xff,"Toothbrush, electric"\n'


def test_audioset_segments_labels_and_windows(tmp_path):
    ann = tmp_path / "csv" / "balanced_train_segments.csv"
    ann.parent.mkdir()
    ann.write_text(AUDIOSET_CSV)
    (ann.parent / "class_labels_indices.csv").write_text(AUDIOSET_LABELS)
    _touch(tmp_path / "media", "cut/--PJHxphWEs_30_40.flac", "full/deep/--ZhevVpy1s.mkv")
    lines, rep, out = _prepare(tmp_path, "audioset", ann)
    assert lines[0] == {"audio": "../media/cut/--PJHxphWEs_30_40.flac", "id": "--PJHxphWEs",
                        "labels": ["Speech", "Gush"], "split": "train", "dataset": "audioset"}  # pre-cut: whole file
    assert lines[1]["video"].endswith("--ZhevVpy1s.mkv") and (lines[1]["start"], lines[1]["end"]) == (50.0, 60.0)
    assert lines[1]["labels"] == ["Toothbrush, electric"]
    assert rep["rows"] == 3 and rep["num_missing"] == 1 and rep["num_malformed"] == 2
    assert {m["where"].rsplit(":", 1)[1] for m in rep["malformed"]} == {"7", "8"}
    assert read_labelled_manifest(out)[1].window == (50.0, 60.0)
    # eval_segments.csv is the test split; --labels finds the class list elsewhere
    moved = tmp_path / "eval_segments.csv"
    moved.write_text(AUDIOSET_CSV)
    lines, _, _ = _prepare(tmp_path, "audioset", moved, labels=str(ann.parent / "class_labels_indices.csv"))
    assert {x["split"] for x in lines} == {"test"}
    with pytest.raises(ValueError, match="class_labels_indices.csv"):
        _prepare(tmp_path, "audioset", moved)


def test_msrvtt_1ka_csv_and_full_json(tmp_path):
    csv1 = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv1.write_text("key,vid_key,video_id,sentence\nret0,msr9770,video9770,a person is connecting something "
                    "to system\nret1,msr9771,video9771,a little girl does gymnastics\n")
    _touch(tmp_path / "media", "TestVideo/video9770.mp4")
    lines, rep, _ = _prepare(tmp_path, "msrvtt", csv1)
    assert lines == [{"video": "../media/TestVideo/video9770.mp4", "id": "video9770",
                      "caption": "a person is connecting something to system", "dataset": "msrvtt"}]
    assert rep["missing"][0]["id"] == "video9771"
    full = tmp_path / "MSRVTT_data.json"
    full.write_text(json.dumps({"info": {}, "videos": [
        {"category": 9, "url": "u", "video_id": "video0", "start time": 137.72, "end time": 149.44, "split": "train",
         "id": 0},
        {"category": 1, "url": "u", "video_id": "video9770", "start time": 1.0, "end time": 9.0, "split": "test",
         "id": 9770}],
        "sentences": [{"sen_id": i, "video_id": "video9770", "caption": f"caption {i}"} for i in range(3)]
        + [{"sen_id": 9, "video_id": "video0", "caption": "train caption"}]}))
    lines, _, out = _prepare(tmp_path, "msrvtt", full, split="test")
    assert len(lines) == 1 and lines[0]["captions"] == ["caption 0", "caption 1", "caption 2"]
    assert "start" not in lines[0]  # MSR-VTT clips are already cut
    assert read_labelled_manifest(out)[0].captions == ("caption 0", "caption 1", "caption 2")
    with pytest.raises(ValueError, match="1k-A"):
        _prepare(tmp_path, "msrvtt", csv1, split="train")


def test_youcook2_json_segments_and_milnce_csv(tmp_path):
    ann = tmp_path / "youcookii_annotations_trainval.json"
    ann.write_text(json.dumps({"database": {
        "xHr8X2Wpmno": {"annotations": [{"id": 0, "segment": [25, 37], "sentence": "cut the onion in half"},
                                        {"id": 1, "segment": [47, 60], "sentence": "pick  the ends off"},
                                        {"id": 2, "segment": [70], "sentence": "broken"}],
                        "duration": 241.64, "recipe_type": "226", "subset": "validation", "video_url": "u"},
        "-trainvid": {"annotations": [{"id": 0, "segment": [1, 2], "sentence": "train"}], "duration": 10,
                      "recipe_type": "1", "subset": "training", "video_url": "u"}}}))
    _touch(tmp_path / "media", "raw_videos/validation/226/xHr8X2Wpmno.webm", "raw_videos/training/1/-trainvid.mp4")
    lines, rep, out = _prepare(tmp_path, "youcook2", ann, split="validation")
    assert [(x["start"], x["end"], x["caption"]) for x in lines] == [(25.0, 37.0, "cut the onion in half"),
                                                                      (47.0, 60.0, "pick the ends off")]
    assert rep["num_malformed"] == 1 and [e.window for e in read_labelled_manifest(out)] == [(25, 37), (47, 60)]
    csv1 = tmp_path / "validation_youcook.csv"
    csv1.write_text("end,start,task,text,video_id\n60,47,226, pick the ends off  the verdalago,xHr8X2Wpmno\n"
                    "5,9,226,reversed,xHr8X2Wpmno\n")
    lines, rep, _ = _prepare(tmp_path, "youcook2", csv1)
    assert [(x["start"], x["end"], x["caption"]) for x in lines] == [(47.0, 60.0, "pick the ends off the verdalago")]
    assert rep["num_malformed"] == 1


def test_kinetics_validate_split_precut_and_full_videos(tmp_path):
    ann = tmp_path / "validate.csv"
    ann.write_text('label,youtube_id,time_start,time_end,split\ntestifying,---QUuC4vJs,84,94,validate\n'
                   '"passing American football (in game)",-abc,5,15,validate\n'
                   'riding a bike,zzz,0,10,train\nbad,www,x,10,validate\n')
    _touch(tmp_path / "media", "val/testifying/---QUuC4vJs_000084_000094.mp4", "flat/-abc.webm", "zzz.mp4")
    lines, rep, _ = _prepare(tmp_path, "kinetics", ann, split="validate")
    assert lines[0] == {"video": "../media/val/testifying/---QUuC4vJs_000084_000094.mp4", "id": "---QUuC4vJs",
                        "label": "testifying", "split": "test", "dataset": "kinetics"}
    assert lines[1]["label"] == "passing American football (in game)" and (lines[1]["start"], lines[1]["end"]) == (
        5.0, 15.0)
    assert len(lines) == 2 and rep["num_malformed"] == 1
    lines, _, _ = _prepare(tmp_path, "kinetics", ann)
    assert [x["split"] for x in lines] == ["test", "test", "train"]


def test_vggsound_headerless_csv(tmp_path):
    ann = tmp_path / "vggsound.csv"
    ann.write_text('---g-f_I2yQ,1,people marching,test\n--9O4XZOge4,30,"female speech, woman speaking",train\n'
                   'nope,abc,label,train\n')
    _touch(tmp_path / "media", "test/---g-f_I2yQ_000001.mp4", "full/--9O4XZOge4.m4a")
    lines, rep, _ = _prepare(tmp_path, "vggsound", ann)
    assert lines[0] == {"video": "../media/test/---g-f_I2yQ_000001.mp4", "id": "---g-f_I2yQ",
                        "label": "people marching", "split": "test", "dataset": "vggsound"}
    assert lines[1] == {"audio": "../media/full/--9O4XZOge4.m4a", "start": 30.0, "end": 40.0, "id": "--9O4XZOge4",
                        "label": "female speech, woman speaking", "split": "train", "dataset": "vggsound"}
    assert rep["num_malformed"] == 1
    lines, _, _ = _prepare(tmp_path, "vggsound", ann, split="train")
    assert [x["id"] for x in lines] == ["--9O4XZOge4"]


def test_official_readers_find_reencoded_files(tmp_path):
    ucf = tmp_path / "ucfTrainTestlist"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (ucf / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    (ucf / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\nArchery/v_Archery_g02_c01.avi\n")
    _touch(tmp_path / "media", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "elsewhere/v_Archery_g01_c01.mp4")
    lines, rep, _ = _prepare(tmp_path, "ucf101", ucf)
    assert [(x["video"], x["label"], x["split"]) for x in lines] == [
        ("../media/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train"),
        ("../media/elsewhere/v_Archery_g01_c01.mp4", "Archery", "test")]
    assert rep["num_missing"] == 1
    hmdb = tmp_path / "hmdb"
    hmdb.mkdir()
    (hmdb / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    _touch(tmp_path / "media", "brush_hair/a.avi", "brush_hair/b.mkv")
    lines, _, _ = _prepare(tmp_path, "hmdb51", hmdb)
    assert [(x["label"], x["split"]) for x in lines] == [("brush_hair", "train"), ("brush_hair", "test")]
    esc = tmp_path / "meta" / "esc50.csv"
    esc.parent.mkdir()
    esc.write_text("filename,fold,target,category,esc10,src_file,take\n1-100032-A-0.wav,1,0,dog,True,100032,A\n"
                   "2-100038-A-14.wav,2,14,walking running,False,100038,A\n")
    _touch(tmp_path / "media", "audio/1-100032-A-0.flac", "audio/2-100038-A-14.wav")
    lines, _, _ = _prepare(tmp_path, "esc50", esc, split="2")
    assert [(x["audio"], x["label"], x["fold"], x["split"]) for x in lines] == [
        ("../media/audio/1-100032-A-0.flac", "dog", 1, "train"),
        ("../media/audio/2-100038-A-14.wav", "walking running", 2, "test")]
    with pytest.raises(ValueError, match="1-5"):
        _prepare(tmp_path, "esc50", esc, split="7")


def test_pattern_names_precut_and_windows(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nbowling,-q1,12,22,train\n")
    _touch(tmp_path / "media", "clips/-q1-from-12-to-22.avi", "videos/vid_-q1.mp4")
    lines, _, _ = _prepare(tmp_path, "kinetics", ann, pattern="{id}-from-{start}-to-{end}")
    assert lines[0]["video"] == "../media/clips/-q1-from-12-to-22.avi" and "start" not in lines[0]
    lines, _, _ = _prepare(tmp_path, "kinetics", ann, pattern="vid_{id}")
    assert lines[0]["video"] == "../media/videos/vid_-q1.mp4" and (lines[0]["start"], lines[0]["end"]) == (12, 22)
    lines, _, _ = _prepare(tmp_path, "kinetics", ann, pattern="videos/vid_{id}.mp4")  # a path with its extension
    assert lines[0]["video"] == "../media/videos/vid_-q1.mp4"
    msr = tmp_path / "m.csv"
    msr.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a caption\n")
    with pytest.raises(ValueError, match="need segment times"):
        _prepare(tmp_path, "msrvtt", msr, pattern="{id}_{start}")


def test_nothing_found_fails_with_a_report(tmp_path, capsys):
    ann = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ann.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a caption\n")
    (tmp_path / "media").mkdir()
    out, rep = tmp_path / "m.jsonl", tmp_path / "r.json"
    code = main(["data", "prepare", "msrvtt", "--annotations", str(ann), "--media-root", str(tmp_path / "media"),
                 "--out", str(out), "--json", str(rep)])
    assert code == 2 and "nothing found" in capsys.readouterr().err and not out.exists()
    assert json.loads(rep.read_text())["missing"][0]["id"] == "video1"
    _touch(tmp_path / "media", "video1.mp4")
    assert main(["data", "prepare", "msrvtt", "--annotations", str(ann), "--media-root", str(tmp_path / "media"),
                 "--out", str(out)]) == 0
    assert "1 of 1 rows written" in capsys.readouterr().out
    assert main(["data", "prepare", "msrvtt", "--annotations", str(ann), "--media-root", str(tmp_path / "media"),
                 "--out", str(out)]) == 0  # an existing manifest is replaced
    assert sorted(DATASETS) == sorted(["howto100m", "audioset", "msrvtt", "youcook2", "kinetics", "vggsound",
                                       "ucf101", "hmdb51", "esc50", "voc2007", "imagenet"])
