"""``mmv-torch eval linear`` with the probe protocols on the quick demo's network and probe clips: the
command the demo's trained-versus-random-init probe comparison runs."""

from __future__ import annotations

import json

from mmv_torch.cli.main import main


def test_eval_linear_protocol_on_the_quick_demo(quick_demo, tmp_path, capsys):
    folder, _ = quick_demo
    out = tmp_path / "motion.json"
    assert main(["eval", "linear", "--checkpoint", str(folder / "run"), "--data",
                 str(folder / "data" / "probe_motion.jsonl"), "--protocol", "config", "--train-epochs", "2",
                 "--test-windows", "2", "--workers", "0", "--device", "cpu", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    cfg = json.loads((folder / "run" / "config.json").read_text())["data"]
    p = r["settings"]["protocol"]
    assert (p["name"], p["num_frames"], p["source_fps"], p["crop_size"]) == (
        "config", cfg["num_frames"], cfg["fps"], cfg["eval_crop_size"])
    assert r["settings"]["test_windows"] == 2 and 0.0 <= r["metrics"]["test_top1"] <= 1.0
    lines = [json.loads(x) for x in (folder / "data" / "probe_motion.jsonl").read_text().splitlines()]
    assert r["settings"]["train_rows"] == 2 * sum(x["split"] == "train" for x in lines)  # 2 passes
