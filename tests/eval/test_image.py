"""The voc2007 and imagenet-linear protocols of ``eval image``: the VOC APs against hand-computed values and
scikit-learn, the difficult rule, the per-class probe, and prepare -> eval end to end on tiny fixtures."""

import json

import numpy as np
import pytest

from mmv_torch.cli.main import main
from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.sources import LabelledSource
from mmv_torch.eval.image import ELEVEN_POINTS, imagenet_linear_probe, voc07_ap, voc2007_probe, voc_area_ap, voc_map
from tests.helpers.voc import voc_object, write_voc

FAST = ["--workers", "0", "--batch-size", "4", "--device", "cpu"]


def test_voc07_11_point_ap_by_hand():
    # Ranked: TP (P 1, R 1/3), FP, TP (P 2/3, R 2/3), FP, TP (P 3/5, R 1).
    # t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t = .7, .8, .9, 1 -> 3/5.
    ap = voc07_ap(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, -1, 1, -1, 1]))
    assert ap == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 0.6) / 11, abs=1e-12)
    # Input order does not matter; the area AP of the same ranking is (1 + 2/3 + 3/5) / 3.
    perm = np.array([4, 2, 0, 3, 1])
    assert voc07_ap(np.array([0.9, 0.8, 0.7, 0.6, 0.5])[perm], np.array([1, -1, 1, -1, 1])[perm]) == ap
    assert voc_area_ap(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, -1, 1, -1, 1])) == pytest.approx(
        (1 + 2 / 3 + 0.6) / 3)


def test_voc07_thresholds_are_the_devkits_matlab_colon_values():
    assert ELEVEN_POINTS[3] == 3 * 0.1 > 0.3 and ELEVEN_POINTS[7] == 1 - 0.3 and ELEVEN_POINTS[10] == 1.0
    # 10 positives: 3 first, 7 negatives, then 7 positives. Recall 3/10 == 0.3 does not reach the devkit's
    # 0.30000000000000004, so only t = 0, .1, .2 see precision 1; the other 8 see the best later point, 10/17.
    targets = np.array([1] * 3 + [-1] * 7 + [1] * 7)
    scores = -np.arange(targets.size, dtype=float)
    assert voc07_ap(scores, targets) == pytest.approx((3 + 8 * 10 / 17) / 11, abs=1e-12)


def test_area_ap_matches_sklearn_on_the_non_difficult_images():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        targets = rng.choice([1, -1, 0], size=200, p=[0.2, 0.7, 0.1])
        scores = rng.normal(size=200) + (targets == 1)
        keep = targets != 0
        want = average_precision_score(targets[keep] == 1, scores[keep])
        assert voc_area_ap(scores, targets) == pytest.approx(want, abs=1e-12)


def test_difficult_images_are_neither_positive_nor_negative():
    # The highest-scoring image is difficult: ignored, the ranking is perfect. As a negative it would halve AP.
    scores, targets = np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 1, 1, -1])
    assert voc07_ap(scores, targets) == 1.0 and voc_area_ap(scores, targets) == 1.0
    assert voc07_ap(scores, np.where(targets == 0, -1, targets)) < 0.9
    m = voc_map(np.stack([scores, -scores], 1), np.stack([targets, np.array([-1, -1, 1, 0])], 1), ["a", "b"])
    assert m["AP"] == {"a": 1.0, "b": 1.0} and m["mAP_11pt"] == 1.0 and m["classes"] == 2
    with pytest.raises(ValueError, match="without a"):
        voc07_ap(np.array([0.5, 0.4]), np.array([0, -1]))


def _voc_features(n, rng):
    targets = rng.choice([1, -1], size=(n, 3), p=[0.4, 0.6])
    targets[rng.random((n, 3)) < 0.1] = 0
    targets[:, 2] = np.where(targets[:, 2] == 1, 0, targets[:, 2])  # class 2: difficult only
    x = np.concatenate([(targets == 1) * 2.0, (targets == 0) * 1.0], 1) + rng.normal(0, 0.3, (n, 6))
    return x, targets


def test_voc2007_probe_per_class_c_and_skipped_classes():
    rng = np.random.default_rng(1)
    (xtr, ttr), (xte, tte) = _voc_features(120, rng), _voc_features(60, rng)
    res = voc2007_probe(xtr, ttr, xte, tte, ["a", "b", "c"], cs=(0.001, 1.0), folds=3)
    m, s = res["metrics"], res["settings"]
    assert m["classes"] == 2 and set(m["AP"]) == {"a", "b"} and m["mAP"] > 0.95 and m["mAP_11pt"] > 0.9
    assert s["skipped"] == {"c": "no training positive"} and set(s["C"]) == {"a", "b"}
    assert set(s["cv_AP_per_C"]["a"]) == {"0.001", "1.0"} and s["difficult_in_training"] == "excluded"
    assert "our choice" in s["source"] and np.isnan(res["test_scores"][:, 2]).all()
    logistic = voc2007_probe(xtr, ttr, xte, tte, ["a", "b", "c"], classifier="logistic", cs=(1.0,))
    assert logistic["metrics"]["mAP"] > 0.95 and logistic["settings"]["cv_AP_per_C"]["a"] == "one C given"
    with pytest.raises(ValueError, match="'svm' or 'logistic'"):
        voc2007_probe(xtr, ttr, xte, tte, ["a", "b", "c"], classifier="mlp")


def test_imagenet_linear_probe_top1_top5():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 3, (6, 8))
    ytr, yte = np.repeat(np.arange(6), 10), np.repeat(np.arange(6), 3)
    xtr, xte = centres[ytr] + rng.normal(0, 0.3, (60, 8)), centres[yte] + rng.normal(0, 0.3, (18, 8))
    res = imagenet_linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-4,), epochs=50, lr=1e-2)
    assert res["metrics"]["test_top1"] == 1.0 and res["metrics"]["test_top5"] == 1.0
    assert res["settings"]["protocol"] == "imagenet-linear" and res["settings"]["weight_decay"] == 1e-4


def test_difficult_flags_reach_the_voc_targets():
    from mmv_torch.eval.pipelines import _image_protocol

    entries = [LabelledEntry(f"/{i}.jpg", "image", "", "train") for i in range(3)]
    records = [{"labels": ["dog"], "difficult": ["person"]}, {"labels": [], "difficult": ["dog"]}, {"labels": ["cat"]}]
    classes, targets, probe, task = _image_protocol("voc2007", LabelledSource(entries, records, "m"), "svm", False,
                                                    {"cs": None, "seed": 0})
    dog, person, cat = classes.index("dog"), classes.index("person"), classes.index("cat")
    assert len(classes) == 20 and targets.shape == (3, 20) and "VOC" in task
    assert targets[0, dog] == 1 and targets[0, person] == 0 and targets[1, dog] == 0 and targets[2, cat] == 1
    assert (targets == -1).sum() == 60 - 4
    bad = LabelledSource(entries[:1], [{"labels": ["unicorn"]}], "m")
    with pytest.raises(ValueError, match="outside the protocol's 20"):
        _image_protocol("voc2007", bad, "svm", False, {})
    with pytest.raises(ValueError, match="--weight-decay"):
        _image_protocol("voc2007", LabelledSource(entries, records, "m"), "svm", False, {"weight_decays": (0.1,)})
    with pytest.raises(ValueError, match="single-label"):
        _image_protocol("imagenet-linear", LabelledSource(entries, records, "m"), "svm", False, {"cs": (1.0,)})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random checkpoint folder (BatchNorm statistics calibrated on noise)."""
    import torch

    from mmv_torch.config import apply_overrides, get_preset
    from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

    cfg = apply_overrides(get_preset("tiny"), {"model.text.vocab_size": 8, "data.num_frames": 2, "data.crop_size": 32,
                                               "data.eval_crop_size": 32, "data.resize_short": 36})
    model = noise_calibrated_model(cfg, video=torch.rand(4, 3, 2, 32, 32))
    ckpt = save_checkpoint_folder(model, cfg, tmp_path_factory.mktemp("img_ckpt") / "ckpt")
    return str(ckpt)


def _image(path, colour, rng):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def test_prepare_voc2007_then_eval_image_protocol(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    voc = tmp_path / "VOC2007"
    colours = {"dog": (200, 40, 40), "cat": (40, 40, 200)}
    ann, sets = {}, {"trainval": [], "test": []}
    for i in range(16):
        image_id, cls = f"{i:06d}", ("dog", "cat")[i % 2]
        other = "cat" if i % 4 == 0 else None  # some dogs have a difficult cat; image 13 only a difficult cat
        ann[image_id] = voc_object(cls, 1 if i == 13 else 0) + (voc_object(other, 1) if other else "")
        sets["trainval" if i < 10 else "test"].append(image_id)
        _image(voc / "JPEGImages" / f"{image_id}.jpg", colours[cls], rng)
    write_voc(voc, ann, sets, [])
    manifest, out = tmp_path / "voc.jsonl", tmp_path / "r" / "voc.json"
    assert main(["data", "prepare", "voc2007", "--annotations", str(voc), "--media-root", str(voc),
                 "--out", str(manifest)]) == 0
    assert main(["eval", "image", "--checkpoint", checkpoint, "--data", str(manifest), "--protocol", "voc2007",
                 "--strategies", "naive", "--C", "0.1", *FAST, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    m, s = r["metrics"]["naive"], r["settings"]
    assert r["task"].startswith("PASCAL VOC 2007") and set(m["AP"]) == {"cat", "dog"} and m["classes"] == 2
    assert 0 < m["mAP_11pt"] <= 1 and 0 < m["mAP"] <= 1
    assert s["protocol"] == "voc2007" and s["train_images"] == 10 and s["test_images"] == 6
    assert s["naive"]["C"] == {"cat": 0.1, "dog": 0.1} and s["naive"]["C_grid"] == [0.1]
    assert s["image_size"] == {"resize_short": 36, "centre_crop": 32} and "our choice" in s["naive"]["source"]
    assert "AP.dog" in out.with_suffix(".md").read_text()


def test_prepare_imagenet_then_eval_image_protocol(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = tmp_path / "imagenet"
    for wnid, colour in (("n01", (200, 40, 40)), ("n02", (40, 40, 200))):
        for i in range(3):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG", colour, rng)
    for i, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        _image(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", colour, rng)
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3 4\n"
                                               "ILSVRC2012_val_00000002,n02 1 2 3 4\n")
    manifest, out = tmp_path / "in.jsonl", tmp_path / "r" / "in.json"
    assert main(["data", "prepare", "imagenet", "--annotations", str(root), "--media-root", str(root),
                 "--out", str(manifest)]) == 0
    args = ["eval", "image", "--checkpoint", checkpoint, "--data", str(manifest), "--strategies", "naive", *FAST]
    assert main([*args, "--protocol", "imagenet-linear", "--weight-decay", "0.001", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["metrics"]["naive"]) >= {"test_top1", "test_top5"} and r["metrics"]["naive"]["test_top5"] == 1.0
    assert r["settings"]["naive"]["protocol"] == "imagenet-linear" and r["settings"]["test_images"] == 2
    capsys.readouterr()
    assert main([*args, "--protocol", "imagenet-linear", "--C", "1"]) == 2
    assert "no --C" in capsys.readouterr().err
