"""CLI smoke tests: ``cli.main([...])`` in process."""

import json

import pytest

from mmv_torch.cli import main


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
