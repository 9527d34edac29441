"""The command line's manners: ``--version``, defaults in help pages, ``--quiet`` and progress bars only on a
terminal, one-line summaries."""

import io
import json

import pytest

import mmv_torch
from mmv_torch import progress
from mmv_torch.cli.main import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"mmv-torch {mmv_torch.__version__}"


def test_help_pages_show_defaults(capsys):
    for argv, shown in ((["eval", "zeroshot", "--help"], "(default: 8)"), (["data", "synthetic", "--help"],
                                                                            "default: 16.0"),
                        (["eval", "linear", "--help"], "(default: 0)")):
        with pytest.raises(SystemExit):
            main(argv)
        assert shown in " ".join(capsys.readouterr().out.split())


def test_every_leaf_command_takes_quiet():
    parser = build_parser()
    for argv in (["models"], ["eval", "zeroshot", "--checkpoint", "x", "--data", "y"], ["index", "search", "i",
                                                                                       "--text", "t"]):
        assert parser.parse_args([*argv, "--quiet"]).quiet is True
        assert parser.parse_args(argv).quiet is False


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("MMV_TORCH_QUIET", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.enabled()
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress.enabled() and not progress.enabled(requested=False)
    progress.set_quiet(True)
    try:
        assert not progress.enabled()
        assert list(progress.bar(range(3))) == [0, 1, 2]
    finally:
        progress.set_quiet(False)
    monkeypatch.setenv("MMV_TORCH_QUIET", "1")
    assert not progress.enabled()


def test_data_synthetic_ends_with_one_line_and_a_summary_file(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), "--num-clips", "2", "--size", "16", "--workers", "1",
                 "--num-probe-train", "1", "--num-probe-test", "1", "--num-retrieval", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("wrote 4 clips") and "summary.json" in printed[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_files"] == 4 and summary["counts"]["pretrain"] == 2
