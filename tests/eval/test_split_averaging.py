"""Split averaging: ``eval linear --splits`` evaluates several official splits in one command and reports each
split, the mean and the standard deviation in its JSON and table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmv_torch.cli.main import main
from mmv_torch.eval.benchmarks import average_splits, parse_splits


def test_parse_splits():
    assert parse_splits("all") == [1, 2, 3] and parse_splits("1,3") == [1, 3]
    for bad in ("0", "1,1", "x", ""):
        with pytest.raises(ValueError, match="--splits"):
            parse_splits(bad)


def test_average_splits_reports_each_split_and_mean_std():
    results = {k: {"task": "linear probe", "metrics": {"test_top1": acc, "n": 10}, "settings": {"C": 0.001}}
               for k, acc in ((1, 0.80), (2, 0.90), (3, 0.85))}
    r = average_splits(results)
    assert r["metrics"]["mean"]["test_top1"] == pytest.approx(0.85)
    assert r["metrics"]["std"]["test_top1"] == pytest.approx(np.std([0.8, 0.9, 0.85]))
    assert r["metrics"]["mean_std"]["test_top1"] == "85.0 ± 4.1"
    assert r["metrics"]["split_2"]["test_top1"] == 0.90 and r["settings"]["splits"] == [1, 2, 3]
    assert sorted(r["per_split"]) == ["1", "2", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random checkpoint and three 'official split' manifests of 8 probe videos (different test halves)."""
    import torch

    from mmv_torch.config import apply_overrides, get_preset
    from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

    root = tmp_path_factory.mktemp("splits")
    data = root / "syn"
    assert main(["data", "synthetic", str(data), "--num-clips", "1", "--size", "32", "--workers", "1",
                 "--num-probe-train", "4", "--num-probe-test", "4", "--num-retrieval", "0"]) == 0
    cfg = apply_overrides(get_preset("tiny"), {"data.num_frames": 4, "data.crop_size": 32, "data.eval_crop_size": 32,
                                               "data.resize_short": 36})
    model = noise_calibrated_model(cfg, video=torch.rand(6, 3, 4, 32, 32), audio=torch.randn(6, 1, 100, 40),
                                   text=torch.randint(1, 100, (6, 6)))
    ckpt = save_checkpoint_folder(model, cfg, root / "ckpt")
    lines = [json.loads(x) for x in (data / "probe_motion.jsonl").read_text().splitlines()]
    for k in (1, 2, 3):
        rows = [{**x, "split": "test" if (i + k) % 3 == 0 else "train"} for i, x in enumerate(lines)]
        (data / f"probe_{k}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return {"root": root, "data": data, "ckpt": str(ckpt)}


def test_eval_linear_splits_all_reports_each_split_and_the_mean(setup, capsys):
    out = setup["root"] / "splits.json"
    args = ["eval", "linear", "--checkpoint", setup["ckpt"], "--workers", "0", "--batch-size", "4", "--device", "cpu",
            "--train-epochs", "1", "--test-windows", "1", "--protocol", "config"]
    assert main([*args, "--data", str(setup["data"] / "probe_{split}.jsonl"), "--splits", "all",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    m = r["metrics"]
    per = [m[f"split_{k}"]["test_top1"] for k in (1, 2, 3)]
    assert m["mean"]["test_top1"] == pytest.approx(np.mean(per)) and m["std"]["test_top1"] == pytest.approx(np.std(per))
    assert [r["per_split"][str(k)]["settings"]["test_videos"] for k in (1, 2, 3)] == [
        sum((i + k) % 3 == 0 for i in range(8)) for k in (1, 2, 3)]  # each split's own test set
    table = out.with_suffix(".md").read_text()
    assert "| mean_std.test_top1 |" in table and "| split_3.test_top1 |" in table
    # Without one manifest per split the command refuses in one line.
    assert main([*args, "--data", str(setup["data"] / "probe_1.jsonl"), "--splits", "all"]) == 2
    assert "--splits needs --ucf101-splits / --hmdb51-splits or a --data path with '{split}'" in capsys.readouterr().err
