"""CLI smoke tests: ``cli.main([...])`` in process."""

import json

import pytest

from mmv_torch.cli.main import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mmv_s3d" in out and "9,146,000" in out and "93,891,712" in out and "tiny" in out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_data_synthetic_writes_manifests(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), "--num-clips", "4", "--size", "32", "--workers", "1",
                 "--num-probe-train", "2", "--num-probe-test", "2", "--num-retrieval", "1"]) == 0
    lines = [json.loads(x) for x in (out / "pretrain.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all((out / x["video"]).is_file() for x in lines)
    assert (out / "retrieval.jsonl").is_file() and (out / "labels.json").is_file()


def test_data_check_and_shard(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), "--num-clips", "3", "--size", "32", "--workers", "1",
                 "--num-probe-train", "0", "--num-probe-test", "0", "--num-retrieval", "0"]) == 0
    (out / "broken.mp4").write_bytes(b"not a video at all")
    with (out / "pretrain.jsonl").open("a") as f:
        f.write(json.dumps({"video": "broken.mp4"}) + "\n")
    report_path = tmp_path / "report.json"
    clean = tmp_path / "clean.jsonl"
    assert main(["data", "check", str(out / "pretrain.jsonl"), "--json", str(report_path),
                 "--clean", str(clean)]) == 1
    report = json.loads(report_path.read_text())
    assert report["num_bad"] == 1
    assert len(clean.read_text().splitlines()) == 3
    assert main(["data", "shard", str(clean), str(tmp_path / "shards"), "--samples-per-shard", "2"]) == 0
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 2


def test_train_then_load_export(tmp_path, capsys):
    from mmv_torch.weights.resolve import create_model

    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", "synthetic:6", "--out", str(run), "--set",
                 "train.steps=2", "train.batch_size=2", "train.num_workers=0", "train.warmup_steps=1",
                 "data.num_frames=4", "data.crop_size=32", "data.resize_short=36", "data.eval_crop_size=32"]) == 0
    assert (run / "config.json").is_file() and (run / "log.jsonl").is_file()
    model = create_model(checkpoint=run / "export")
    assert not model.training


def test_train_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--data", "synthetic:2", "--out", str(tmp_path / "r"),
                 "--set", "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().err


def test_convert_refuses_a_malicious_pickle(tmp_path, capsys):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"params": Evil()}))
    assert main(["convert", str(bad), str(tmp_path / "out")]) == 2
    assert "os" in capsys.readouterr().err and not (tmp_path / "pwned").exists()


def test_data_shard_refuses_a_non_empty_folder_and_check_full(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), "--num-clips", "2", "--size", "32", "--workers", "1",
                 "--num-probe-train", "0", "--num-probe-test", "0", "--num-retrieval", "0"]) == 0
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "old-000000.tar").write_bytes(b"old")
    assert main(["data", "shard", str(out / "pretrain.jsonl"), str(shards)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (shards / "old-000000.tar").read_bytes() == b"old"
    assert main(["data", "shard", str(out / "pretrain.jsonl"), str(shards), "--overwrite"]) == 0
    assert not (shards / "old-000000.tar").exists() and len(list(shards.glob("*.tar"))) == 1
    report = tmp_path / "full.json"
    assert main(["data", "check", str(out / "pretrain.jsonl"), "--full", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["checked"] == "full"


def test_data_bench_runs_through_the_cli(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), "--num-clips", "2", "--size", "32", "--workers", "1",
                 "--num-probe-train", "0", "--num-probe-test", "0", "--num-retrieval", "0"]) == 0
    report = tmp_path / "bench.json"
    assert main(["data", "bench", str(out / "pretrain.jsonl"), "--seconds", "1", "--preset", "tiny",
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["clips_per_s"] > 0 and result["decode_fps"] > 0
    assert main(["data", "bench", str(out / "pretrain.jsonl"), "--seconds", "1", "--preset", "tiny",
                 "--clips-per-video", "3", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["config"]["clips_per_video"] == 3 and result["clips"] % 3 == 0 and result["clips"] >= 3
