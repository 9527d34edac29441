"""The atomic-write helper behind every writer of the package."""

import os

import pytest
import torch

from mmv_torch.fileio import (
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    is_temporary,
    remove_temporaries,
    temporary_path,
)


def test_replaces_whole_content(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old content that is longer")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_keeps_old_file_and_removes_temporary(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def write(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # an interrupt mid-write, not only an Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, write)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_before_first_write_leaves_nothing(tmp_path):
    p = tmp_path / "b.bin"

    def write(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, write)
    assert os.listdir(tmp_path) == []


def test_torch_save_round_trip(tmp_path):
    p = tmp_path / "ckpt.pt"
    atomic_torch_save({"x": torch.arange(3)}, p)
    assert torch.equal(torch.load(p)["x"], torch.arange(3))


def test_temporaries_are_recognised_and_removed(tmp_path):
    keep = tmp_path / "model.safetensors"
    keep.write_text("x")
    stale = temporary_path(keep)
    stale.write_text("partial")
    assert is_temporary(stale) and not is_temporary(keep)
    assert not is_temporary(tmp_path / ".hidden")
    assert remove_temporaries(tmp_path) == 1
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_check_output_catches_bad_paths_before_work(tmp_path):
    from mmv_torch.fileio import check_output

    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert check_output(tmp_path / "new" / "deeper" / "out.json", "--json") == tmp_path / "new" / "deeper" / "out.json"
    assert check_output(tmp_path / "dir", "--out", folder=True) == tmp_path / "dir"
    with pytest.raises(ValueError, match="--json .*is a folder"):
        check_output(tmp_path / "dir", "--json")
    with pytest.raises(ValueError, match="--out .*is a file, expected a folder"):
        check_output(tmp_path / "file.txt", "--out", folder=True)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output(tmp_path / "file.txt" / "out.json", "--json")
    with pytest.raises(ValueError, match="would overwrite the input"):
        check_output(tmp_path / "file.txt", "--clean", inputs=(str(tmp_path / "dir" / ".." / "file.txt"),))
    with pytest.raises(ValueError, match="would overwrite the input"):
        check_output(tmp_path / "file", "--out", inputs=(tmp_path / "file.txt",), suffixes=(".txt",))
    with pytest.raises(ValueError, match="empty path"):
        check_output("", "--json")


def test_check_output_unwritable_folder(tmp_path):
    from mmv_torch.fileio import check_output

    with pytest.raises(ValueError, match="--json /sys/x.json: cannot write in /sys"):  # read-only even for root
        check_output("/sys/x.json", "--json")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root ignores permission bits
            with pytest.raises(ValueError, match="cannot write"):
                check_output(ro / "x.json", "--json")
    finally:
        ro.chmod(0o700)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mmv-write-test-")]


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    from mmv_torch.fileio import atomic_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(os.listdir(out)) == ["stale.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(os.listdir(out)) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_folder_removes_folders_of_dead_writers(tmp_path):
    import subprocess
    import sys

    from mmv_torch.fileio import atomic_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp.{int(dead.stdout)}"
    stale.mkdir()
    (stale / "x").write_text("partial")
    with pytest.warns(UserWarning, match="left by an interrupted write"), atomic_folder(tmp_path / "out") as tmp:
        (tmp / "y").write_text("ok")
    assert sorted(os.listdir(tmp_path)) == ["out"]
