"""P21 for the index and the server: a moved checkpoint, a missing --videos folder and a busy port are one
line each that says what is wrong (exit status 2), never a traceback or a misleading option name."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from mmv_torch.cli.main import main
from mmv_torch.index.build import build_index
from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint, clips, index of the clips)."""
    root = tmp_path_factory.mktemp("messages")
    clips = synthetic_clips(root / "clips", n=2)
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    build_index(ckpt, clips, root / "idx", progress=False)
    return ckpt, clips, root / "idx"


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_index_whose_checkpoint_moved_names_it(made, tmp_path, capsys) -> None:
    ckpt, clips, idx = made
    moved = tmp_path / "elsewhere"
    shutil.move(str(ckpt), moved)
    try:
        for argv in (["index", "search", str(idx), "--text", "ball", "--device", "cpu"],
                     ["index", "add", str(idx), "--videos", str(clips), "--no-progress", "--device", "cpu"]):
            assert main(argv) == 2
            line = _one_line(capsys)
            assert f"was built with the checkpoint {ckpt}, which is gone" in line and "--checkpoint:" not in line
    finally:
        shutil.move(str(moved), ckpt)


def test_add_from_a_missing_folder_says_so(made, tmp_path, capsys) -> None:
    _, _, idx = made
    assert main(["index", "add", str(idx), "--videos", str(tmp_path / "missing"), "--no-progress",
                 "--device", "cpu"]) == 2
    line = _one_line(capsys)
    assert "no such folder or manifest" in line and "cannot read manifest" not in line


def test_serve_on_a_busy_port_is_one_line_before_it_claims_to_serve(made, capsys) -> None:
    _, _, idx = made
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(idx), "--port", str(port), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "serving" not in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"cannot serve on 127.0.0.1:{port}" in err[0], err
