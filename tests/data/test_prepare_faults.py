"""``data prepare`` under the bad input of the reliability findings (issue 25): BOMs, non-finite times,
duplicate rows and split leaks, huge CSV fields, malformed structures, ``..`` names, ``--pattern``
fields, and messages that name the file and line. Each test is a finding's command turned into a test."""

import json
import math
from pathlib import Path

import pytest

from mmv_torch.cli.main import main
from mmv_torch.data.official_splits import read_esc50, read_ucf101_split
from mmv_torch.data.prepare import run_prepare

BOM = "\ufeff"


def _media(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "media"
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")
    root.mkdir(exist_ok=True)
    return root


def _strict(path: Path) -> list[dict]:
    """The manifest's lines, parsed as strict JSON (``Infinity``/``NaN`` refused)."""
    def refuse(name):
        raise AssertionError(f"{path}: non-standard JSON constant {name}")

    return [json.loads(x, parse_constant=refuse) for x in path.read_text().splitlines()]


def _run(tmp_path, dataset, ann, *names, **kw):
    media = _media(tmp_path, *names)
    out = tmp_path / f"{dataset}.jsonl"
    rep = run_prepare(dataset, str(ann), str(media), str(out), **kw)
    return _strict(out), rep


def _reasons(rep) -> str:
    return " | ".join(f"{m['where']}: {m['reason']}" for m in rep["malformed"])


# -- P4, P22: byte order marks ------------------------------------------------------------------


def test_p4_kinetics_csv_with_a_bom_keeps_its_labels(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text(BOM + "label,youtube_id,time_start,time_end,split\nbowling,ytA,10,20,train\n", encoding="utf-8")
    lines, rep = _run(tmp_path, "kinetics", ann, "ytA_000010_000020.mp4")
    assert [x["label"] for x in lines] == ["bowling"] and rep["num_malformed"] == 0


def test_p4_kinetics_rows_without_a_label_are_malformed(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n,ytA,10,20,train\nbowling,ytB,1,2,train\n"
                   ",ytC,1,2,test\n")
    lines, rep = _run(tmp_path, "kinetics", ann, "ytA.mp4", "ytB.mp4", "ytC.mp4")
    assert [x["id"] for x in lines] == ["ytB", "ytC"]  # test rows are unlabelled in the official CSV
    assert rep["num_malformed"] == 1 and "no label" in _reasons(rep) and "k.csv:2" in _reasons(rep)


def test_p22_bom_in_every_csv_reader(tmp_path):
    yc = tmp_path / "validation_youcook.csv"
    yc.write_text(BOM + "end,start,task,text,video_id\n5,1,t,cut the onion,ytA\n", encoding="utf-8")
    lines, _ = _run(tmp_path, "youcook2", yc, "ytA.mp4")
    assert lines[0]["caption"] == "cut the onion"
    vg = tmp_path / "vggsound.csv"
    vg.write_text(BOM + "ytV,30,dog barking,train\n", encoding="utf-8")
    lines, rep = _run(tmp_path, "vggsound", vg, "ytV_000030.mp4")
    assert [x["id"] for x in lines] == ["ytV"] and rep["num_missing"] == 0
    esc = tmp_path / "esc50.csv"
    esc.write_text(BOM + "filename,fold,target,category\n1-1-A-0.wav,1,0,dog\n", encoding="utf-8")
    lines, _ = _run(tmp_path, "esc50", esc, "1-1-A-0.wav")
    assert lines[0]["label"] == "dog"
    im = tmp_path / "LOC_val_solution.csv"
    im.write_text(BOM + "ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 2 3 4\n", encoding="utf-8")
    media = _media(tmp_path, "val/ILSVRC2012_val_00000001.JPEG")
    rep = run_prepare("imagenet", str(im), str(media), str(tmp_path / "im.jsonl"))
    assert rep["written"] == 1
    h = tmp_path / "h"
    h.mkdir()
    (h / "ytH.csv").write_text(BOM + "start,end,text\n1,2,hello\n", encoding="utf-8")
    lines, rep = _run(tmp_path, "howto100m", h, "ytH.mp4")
    assert [n["text"] for n in lines[0]["narration"]] == ["hello"] and rep["num_malformed"] == 0
    ms = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ms.write_text(BOM + "key,vid_key,video_id,sentence\nr,k,video1,a man cooks\n", encoding="utf-8")
    lines, _ = _run(tmp_path, "msrvtt", ms, "video1.mp4")
    assert lines[0]["caption"] == "a man cooks"


def test_p21_p22_ucf101_class_list_with_a_bom(tmp_path):
    ucf = tmp_path / "u2"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text(BOM + "1 A\n", encoding="utf-8")
    (ucf / "trainlist01.txt").write_text("A/v1.avi 1\n")
    (ucf / "testlist01.txt").write_text("A/v2.avi\n")
    lines, _ = _run(tmp_path, "ucf101", ucf, "A/v1.avi", "A/v2.avi")
    assert [(x["label"], x["split"]) for x in lines] == [("A", "train"), ("A", "test")]


# -- P5, P8: non-finite times -------------------------------------------------------------------


@pytest.mark.parametrize("segment", ['[1, "inf"]', "[1, 1e400]", '["nan", 3]', "[-1, 3]"])
def test_p5_youcook2_json_non_finite_times_are_malformed(tmp_path, segment):
    ann = tmp_path / "yc.json"
    anns = '[{"id": 0, "segment": SEG, "sentence": "cut"}, {"id": 1, "segment": [1, 2], "sentence": "stir"}]'
    ann.write_text('{"database": {"ytA": {"subset": "validation", "annotations": ANNS}}}'.replace(
        "ANNS", anns.replace("SEG", segment)))
    lines, rep = _run(tmp_path, "youcook2", ann, "ytA.mp4")
    assert [(x["start"], x["end"]) for x in lines] == [(1.0, 2.0)]
    assert rep["num_malformed"] == 1 and "ytA[0]" in _reasons(rep)


def test_p8_non_finite_times_in_the_csv_readers_are_malformed(tmp_path):
    kt = tmp_path / "kt.csv"
    kt.write_text("label,youtube_id,time_start,time_end,split\nb,ytA,10,inf,train\nb,ytB,nan,3,train\n"
                  "b,ytC,1,3,train\n")
    lines, rep = _run(tmp_path, "kinetics", kt, "ytA.mp4", "ytB.mp4", "ytC.mp4")
    assert [x["id"] for x in lines] == ["ytC"] and rep["num_malformed"] == 2 and "not finite" in _reasons(rep)
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    seg = tmp_path / "balanced_train_segments.csv"
    seg.write_text('ytA, 0.000, inf, "/m/09x0r"\nytB, 1e400, 2, "/m/09x0r"\nytC, 0.000, 10.000, "/m/09x0r"\n')
    lines, rep = _run(tmp_path, "audioset", seg, "ytA.mp4", "ytB.mp4", "ytC.mp4")
    assert [x["id"] for x in lines] == ["ytC"] and rep["num_malformed"] == 2
    yc = tmp_path / "validation_youcook.csv"
    yc.write_text("end,start,task,text,video_id\ninf,1,t,cut,ytA\n5,1,t,stir,ytC\n")
    lines, rep = _run(tmp_path, "youcook2", yc, "ytA.mp4", "ytC.mp4")
    assert [x["caption"] for x in lines] == ["stir"] and rep["num_malformed"] == 1
    vg = tmp_path / "vg.csv"
    vg.write_text("ytA,nan,dog,train\nytB,0,dog,train\nytC,inf,dog,train\n")
    lines, rep = _run(tmp_path, "vggsound", vg, "ytA.mp4", "ytB.mp4", "ytC.mp4")
    assert [x["id"] for x in lines] == ["ytB"] and rep["num_malformed"] == 2 and "vg.csv:1" in _reasons(rep)
    assert all(math.isfinite(x["end"]) for x in lines)


def test_p8_cli_one_line_not_a_traceback(tmp_path, capsys):
    kt = tmp_path / "kt.csv"
    kt.write_text("label,youtube_id,time_start,time_end,split\nb,ytA,10,inf,train\n")
    media = _media(tmp_path, "ytA.mp4")
    rc = main(["data", "prepare", "kinetics", "--annotations", str(kt), "--media-root", str(media), "--out",
               str(tmp_path / "kt.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing found" in err and "not finite" in err


# -- P6: duplicates and split leaks -------------------------------------------------------------


def test_p6_ucf101_video_in_train_and_test_is_an_error(tmp_path):
    ucf = tmp_path / "ucf"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text("1 A\n")
    (ucf / "trainlist01.txt").write_text("A/v1.avi 1\n")
    (ucf / "testlist01.txt").write_text("A/v1.avi\n")
    media = _media(tmp_path, "A/v1.avi")
    with pytest.raises(ValueError, match=r"two splits.*A/v1.*trainlist01.txt:1.*testlist01.txt:1"):
        run_prepare("ucf101", str(ucf), str(media), str(tmp_path / "u.jsonl"))
    assert not (tmp_path / "u.jsonl").exists()


def test_p6_repeated_rows_are_reported_and_written_once(tmp_path):
    ms = tmp_path / "m.csv"
    ms.write_text("key,vid_key,video_id,sentence\nr0,k,video1,a man cooks\nr1,k,video1,a man cooks\n")
    lines, rep = _run(tmp_path, "msrvtt", ms, "video1.mp4")
    assert len(lines) == 1 and rep["num_malformed"] == 1 and "duplicate of" in _reasons(rep)
    kt = tmp_path / "k.csv"
    kt.write_text("label,youtube_id,time_start,time_end,split\nb,ytA,1,2,train\nb,ytA,1,2,train\nb,ytA,3,4,train\n")
    lines, rep = _run(tmp_path, "kinetics", kt, "ytA.mp4")
    assert [(x["start"], x["end"]) for x in lines] == [(1.0, 2.0), (3.0, 4.0)] and rep["num_malformed"] == 1
    esc = tmp_path / "esc50.csv"
    esc.write_text("filename,fold,target,category\n1-1-A-0.wav,1,0,dog\n1-1-A-0.wav,1,0,dog\n")
    lines, rep = _run(tmp_path, "esc50", esc, "1-1-A-0.wav")
    assert len(lines) == 1 and rep["num_malformed"] == 1 and "esc50.csv:3" in _reasons(rep)
    im = tmp_path / "LOC_val_solution.csv"
    im.write_text("ImageId,PredictionString\nv1,n01751748 1 2 3 4\nv1,n01751748 1 2 3 4\n")
    media = _media(tmp_path, "val/v1.JPEG")
    rep = run_prepare("imagenet", str(im), str(media), str(tmp_path / "im.jsonl"))
    assert rep["written"] == 1 and rep["num_malformed"] == 1


def test_p6_howto100m_repeated_key_is_reported(tmp_path):
    ann = tmp_path / "caption.json"
    ann.write_text('{"ytA": {"start": [1], "end": [2], "text": ["first"]}, '
                   '"ytA": {"start": [3], "end": [4], "text": ["second"]}}')
    lines, rep = _run(tmp_path, "howto100m", ann, "ytA.mp4")
    assert [n["text"] for n in lines[0]["narration"]] == ["first"]
    assert rep["num_malformed"] == 1 and "key repeated" in _reasons(rep)


# -- P7: huge CSV fields ------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["msrvtt", "kinetics", "youcook2", "vggsound", "audioset"])
def test_p7_a_csv_field_over_128_kib_is_a_malformed_row(tmp_path, dataset):
    huge = "word " * 30000
    rows = {"msrvtt": ("key,vid_key,video_id,sentence\n", f"r,k,video1,{huge}\n", "r,k,video2,fine\n"),
            "kinetics": ("label,youtube_id,time_start,time_end,split\n", f'"{huge}",video1,1,2,train\n',
                         "b,video2,1,2,train\n"),
            "youcook2": ("end,start,task,text,video_id\n", f"5,1,t,{huge},video1\n", "5,1,t,fine,video2\n"),
            "vggsound": ("", f'video1,1,"{huge}",train\n', "video2,1,dog,train\n"),
            "audioset": ("", f'video1, 0, 10, "{huge}"\n', 'video2, 0, 10, "/m/09x0r"\n')}[dataset]
    ann = tmp_path / ("balanced_train_segments.csv" if dataset == "audioset" else "a.csv")
    ann.write_text("".join(rows))
    (tmp_path / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    lines, rep = _run(tmp_path, dataset, ann, "video1.mp4", "video2.mp4")
    assert [x["id"] for x in lines] == ["video2"]
    assert rep["num_malformed"] == 1 and "field larger than field limit" in _reasons(rep)


# -- P29, P33, P32 ------------------------------------------------------------------------------


def test_p29_youcook2_annotations_not_a_list_is_one_malformed_row(tmp_path):
    ann = tmp_path / "yc.json"
    ann.write_text('{"database": {"ytA": {"subset": "validation", "annotations": "text"}, '
                   '"ytB": {"subset": "validation", "annotations": [{"segment": [1, 2], "sentence": "s"}]}}}')
    lines, rep = _run(tmp_path, "youcook2", ann, "ytA.mp4", "ytB.mp4")
    assert [x["id"] for x in lines] == ["ytB"] and rep["num_malformed"] == 1 and "not a list" in _reasons(rep)


def test_p33_names_with_dotdot_are_malformed(tmp_path):
    esc = tmp_path / "esc50.csv"
    esc.write_text("filename,fold,target,category\n../../etc/passwd,1,0,dog\n/etc/shadow,1,0,dog\n2.wav,1,0,dog\n")
    lines, rep = _run(tmp_path, "esc50", esc, "passwd.mp4", "shadow.mp4", "2.wav")
    assert [Path(x["audio"]).name for x in lines] == ["2.wav"]
    assert rep["num_malformed"] == 2 and "outside the media root" in _reasons(rep)
    ucf = tmp_path / "ucf"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text("1 A\n")
    (ucf / "trainlist01.txt").write_text("A/../../x/v1.avi 1\nA/v2.avi 1\n")
    (ucf / "testlist01.txt").write_text("")
    lines, rep = _run(tmp_path, "ucf101", ucf, "x/v1.avi", "A/v2.avi")
    assert [x["id"] for x in lines] == ["A/v2"] and rep["num_malformed"] == 1


@pytest.mark.parametrize("pattern", ["{id.__class__}", "{id!r}", "{0}", "{other}", "{id[0]}", "{start:{end}}"])
def test_p32_pattern_only_its_fields(tmp_path, pattern):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nb,ytA,1,2,train\n")
    media = _media(tmp_path, "ytA.mp4")
    with pytest.raises(ValueError, match="only {id}, {start} and {end}"):
        run_prepare("kinetics", str(ann), str(media), str(tmp_path / "o.jsonl"), pattern=pattern)


def test_p32_pattern_fields_with_format_specs_still_work(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nb,ytA,1,2,train\n")
    lines, _ = _run(tmp_path, "kinetics", ann, "clips/ytA-000001-2.mp4", pattern="clips/{id}-{start:06d}-{end}")
    assert lines[0]["video"].endswith("ytA-000001-2.mp4") and "start" not in lines[0]


# -- P21: messages name the file and the line ---------------------------------------------------


def test_p21_split_file_messages_name_file_and_line(tmp_path):
    ucf = tmp_path / "ucf"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text("1 A\n2 B extra\n")
    with pytest.raises(ValueError, match=r"classInd.txt:2: expected 'index name'"):
        read_ucf101_split(ucf, tmp_path)
    (ucf / "classInd.txt").write_bytes("1 Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"classInd.txt:1: not UTF-8 text \(byte 0xe9\)"):
        read_ucf101_split(ucf, tmp_path)
    esc = tmp_path / "esc50.csv"
    esc.write_text("filename,fold,target,category\n1.wav,1,0,dog\n2.wav,x,0,dog\n")
    with pytest.raises(ValueError, match=r"esc50.csv:3: fold 'x' is not an integer"):
        read_esc50(esc, tmp_path)
    esc.write_text("filename,fold,target,category\n1.wav,1,zz,dog\n")
    with pytest.raises(ValueError, match=r"esc50.csv:2: target 'zz'"):
        read_esc50(esc, tmp_path)


def test_p21_latin1_annotations_name_the_file_in_one_cli_line(tmp_path, capsys):
    ann = tmp_path / "k.csv"
    ann.write_bytes("label,youtube_id,time_start,time_end,split\ncaf\u00e9,ytA,1,2,train\n".encode("latin-1"))
    media = _media(tmp_path, "ytA.mp4")
    rc = main(["data", "prepare", "kinetics", "--annotations", str(ann), "--media-root", str(media), "--out",
               str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{ann}:2: not UTF-8 text" in err[0]
