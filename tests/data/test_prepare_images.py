"""``mmv-torch data prepare voc2007|imagenet`` on tiny fixtures in the distributed layouts, quirks included.
Images are empty placeholder files: preparing only finds files, it does not decode them."""

import json
from pathlib import Path

import pytest

from mmv_torch.cli.main import main
from mmv_torch.data.manifests import read_labelled_manifest
from mmv_torch.data.prepare import run_prepare
from tests.helpers.voc import touch, voc_object, write_voc


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc(root, {
        "000001": voc_object("dog") + voc_object("dog") + voc_object("person", 1),  # dog twice, person difficult
        "000002": voc_object("chair", 1),                       # only a difficult object
        "000003": "<annotation><object><name>dog</name>",       # truncated XML
        "000004": voc_object("unicorn"),                         # not a VOC class
        "000006": voc_object("cat", None),                       # no <difficult> tag; its JPEG is missing
        "000007": voc_object("cat") + voc_object("dog", 1),
        "000008": voc_object(" person ") + voc_object("bus"),
    }, {"trainval": ["000001", "000002", "000003", "000004", "000005", "000006", "000001"],
        "test": ["000007", "000008"], "train": ["000001"], "val": ["000002"]},
        ["000001", "000002", "000003", "000004", "000007", "000008"])
    touch(root / "SegmentationClass", "000001.png")  # same id as an image: not picked
    return root


def test_voc2007_trainval_and_test_with_quirks(voc, tmp_path):
    out, rep_path = tmp_path / "m" / "voc.jsonl", tmp_path / "rep.json"
    assert main(["data", "prepare", "voc2007", "--annotations", str(voc), "--media-root", str(voc),
                 "--out", str(out), "--json", str(rep_path)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    by_id = {x["id"]: x for x in lines}
    assert list(by_id) == ["000001", "000002", "000007", "000008"]
    assert by_id["000001"] == {"image": "../VOCdevkit/VOC2007/JPEGImages/000001.jpg", "id": "000001",
                               "labels": ["dog"], "difficult": ["person"], "split": "train", "voc_split": "trainval",
                               "dataset": "voc2007"}
    assert by_id["000002"]["labels"] == [] and by_id["000002"]["difficult"] == ["chair"]
    assert by_id["000007"]["split"] == "test" and by_id["000007"]["difficult"] == ["dog"]
    assert by_id["000008"]["labels"] == ["bus", "person"] and by_id["000008"]["difficult"] == []
    rep = json.loads(rep_path.read_text())
    reasons = {Path(m["where"].split(":")[0]).name: m["reason"] for m in rep["malformed"]}
    assert "malformed XML" in reasons["000003.xml"] and "unknown class name 'unicorn'" in reasons["000004.xml"]
    assert any("no annotation file" in m["reason"] and "000005.xml" in m["reason"] for m in rep["malformed"])
    assert any("000001 listed again" in m["reason"] for m in rep["malformed"]) and rep["num_malformed"] == 4
    assert rep["rows"] == 5 and rep["num_missing"] == 1 and rep["missing"][0]["id"] == "000006"
    assert rep["num_ambiguous"] == 0
    entries = read_labelled_manifest(out)  # the evaluation reader takes it as written
    assert [e.modality for e in entries] == ["image"] * 4 and [e.split for e in entries] == ["train"] * 2 + ["test"] * 2


def test_voc2007_devkit_folder_split_option_and_jpeg_folder(voc, tmp_path):
    out = tmp_path / "val.jsonl"
    rep = run_prepare("voc2007", str(voc.parent), str(voc / "JPEGImages"), str(out), split="val")
    line = json.loads(out.read_text())
    assert rep["written"] == 1 and line["split"] == "test" and line["voc_split"] == "val" and line["id"] == "000002"
    rep = run_prepare("voc2007", str(voc.parent), str(voc.parent), str(out), split="train")  # media root VOCdevkit
    assert rep["written"] == 1 and rep["num_ambiguous"] == 0 and json.loads(out.read_text())["split"] == "train"
    with pytest.raises(ValueError, match="--split for voc2007"):
        run_prepare("voc2007", str(voc), str(voc), str(out), split="2")
    with pytest.raises(ValueError, match="expected the VOC2007 folder"):
        run_prepare("voc2007", str(voc / "Annotations"), str(voc), str(out))


def test_voc2007_without_test_list_keeps_trainval(tmp_path):
    voc = tmp_path / "VOC2007"
    write_voc(voc, {"1": voc_object("cow")}, {"trainval": ["1"]}, ["1"])
    rep = run_prepare("voc2007", str(voc), str(voc), str(tmp_path / "m.jsonl"))
    assert rep["written"] == 1
    (voc / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(ValueError, match="neither trainval.txt nor test.txt"):
        run_prepare("voc2007", str(voc), str(voc), str(tmp_path / "m.jsonl"))


def _imagenet(root: Path) -> None:
    touch(root, "train/n01440764/n01440764_1.JPEG", "train/n01440764/extra/n01440764_2.jpeg",
           "train/n01443537/n01443537_1.JPEG", "train/n01443537/notes.txt",
           "val/ILSVRC2012_val_00000001.JPEG", "val/ILSVRC2012_val_00000002.JPEG", "val/ILSVRC2012_val_00000003.JPEG",
           "test/ILSVRC2012_test_00000001.JPEG")


SOLUTION = ("ImageId,PredictionString\n"
            "ILSVRC2012_val_00000001,n01440764 1 2 30 40 n01440764 5 6 7 8 \n"
            "ILSVRC2012_val_00000002,n01443537 1 2 3 4\n"
            "ILSVRC2012_val_00000003,n01440764 1 2 3 4 n01443537 1 2 3 4\n"   # two classes
            "ILSVRC2012_val_00000004,n01443537 1 2 3 4\n"                     # no such image
            "ILSVRC2012_val_00000005,n09999999 1 2 3 4\n"                     # unknown class
            "ILSVRC2012_val_00000006,n01443537 1 2 3\n")                      # odd token count


def test_imagenet_kaggle_layout_flat_val_with_solution_csv(tmp_path):
    kaggle = tmp_path / "imagenet-object-localization-challenge"
    root = kaggle / "ILSVRC" / "Data" / "CLS-LOC"
    _imagenet(root)
    (kaggle / "LOC_val_solution.csv").write_text(SOLUTION)
    (kaggle / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius "
                                                   "auratus\nn09999999 not in train\n")
    out = tmp_path / "imagenet.jsonl"
    rep = run_prepare("imagenet", str(root), str(root), str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["id"], x["label"], x["split"]) for x in lines] == [
        ("train/n01440764/n01440764_1", "n01440764", "train"),
        ("train/n01440764/extra/n01440764_2", "n01440764", "train"),
        ("train/n01443537/n01443537_1", "n01443537", "train"),
        ("ILSVRC2012_val_00000001", "n01440764", "test"), ("ILSVRC2012_val_00000002", "n01443537", "test")]
    assert lines[0]["name"] == "tench, Tinca tinca" and lines[1]["image"].endswith("extra/n01440764_2.jpeg")
    assert lines[3]["image"].endswith("CLS-LOC/val/ILSVRC2012_val_00000001.JPEG")
    reasons = [m["reason"] for m in rep["malformed"]]
    assert any("several classes" in r for r in reasons) and any("odd" in r or "expected ImageId" in r for r in reasons)
    assert rep["num_malformed"] == 2  # n09999999 is in the synset mapping, so only the missing image drops it
    assert {m["id"] for m in rep["missing"]} == {"ILSVRC2012_val_00000004", "ILSVRC2012_val_00000005"}
    # The CSV as --annotations: class folders from --media-root; --split val keeps the validation images.
    rep = run_prepare("imagenet", str(kaggle / "LOC_val_solution.csv"), str(root), str(out), split="val")
    assert rep["written"] == 2 and all(json.loads(x)["split"] == "test" for x in out.read_text().splitlines())


def test_imagenet_class_folder_val_without_mapping(tmp_path):
    root = tmp_path / "imagenet"
    touch(root, "train/n01/a.JPEG", "train/n02/b.JPEG", "val/n01/c.JPEG", "val/n02/d.png")
    rep = run_prepare("imagenet", str(root), str(root), str(tmp_path / "m.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rep["written"] == 4 and [x["split"] for x in lines] == ["train", "train", "test", "test"]
    assert "name" not in lines[0] and lines[3]["label"] == "n02"
    flat = tmp_path / "flat"
    touch(flat, "train/n01/a.JPEG", "val/ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match="flat folder.*LOC_val_solution.csv"):
        run_prepare("imagenet", str(flat), str(flat), str(tmp_path / "m.jsonl"))
    (flat / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 2 3 4\n")
    rep = run_prepare("imagenet", str(flat), str(flat), str(tmp_path / "m.jsonl"))
    assert rep["written"] == 1 and "not among the known classes" in rep["malformed"][0]["reason"]
