"""Checkpoint I/O and the one resolver behind every ``--checkpoint``: a run folder (its export/, else its
latest checkpoint), an export/convert folder, or a training checkpoint .pt file."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from mmv_torch.config import apply_overrides, get_preset, load_config
from mmv_torch.train.loop import train
from mmv_torch.train.sampling import TrainData, TrainSource
from mmv_torch.weights.checkpoint import CKPT_DIR, checkpoint_path, list_checkpoints, load_checkpoint
from mmv_torch.weights.resolve import resolve_checkpoint
from tests.helpers.train_worker_ddp import RandomClips

WORDS = ["<pad>"] + [f"w{i}" for i in range(1, 40)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-step tiny run with a 40-word vocabulary: checkpoints of steps 1 and 2, and export/."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = apply_overrides(get_preset("tiny"), {
            "train.batch_size": 4, "train.steps": 2, "train.warmup_steps": 1, "train.ckpt_every": 1,
            "train.num_workers": 0, "data.num_frames": 8, "data.crop_size": 32})
        vectors = torch.randn(len(WORDS), 12, generator=torch.Generator().manual_seed(0))
        vectors[0] = 0
        data = TrainData(RandomClips(8, vocab=len(WORDS)), [TrainSource("clips", 0, 8)], WORDS, vectors)
        out = tmp_path_factory.mktemp("ckpt") / "run"
        train(cfg, data, out, tensorboard=False, progress=False)
    finally:
        torch.set_num_threads(n)
    return out


def _copy(run: Path, dest: Path, export: bool = True) -> Path:
    shutil.copytree(run, dest)
    if not export:
        shutil.rmtree(dest / "export")
    return dest


def _same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k], v) for k, v in state.items())


def test_run_folder_prefers_its_export(run):
    r = resolve_checkpoint(run)
    assert r.kind == "folder" and r.path == run / "export"
    assert r.description == f"run {run}: export/ (the weights at the end of training)"
    assert r.config == load_config(run / "config.json")
    assert r.config.model.text.vocab_size == len(WORDS) and r.config.model.text.word_dim == 12
    assert r.words == WORDS and r.vocab_path == run / "export" / "vocab.txt"
    model = r.load_model("cpu")
    assert not model.training
    assert _same_weights(model, load_checkpoint(checkpoint_path(run, 2))["model"])


def test_export_folder_itself(run):
    r = resolve_checkpoint(run / "export")
    assert r.kind == "folder" and r.path == run / "export" and r.description == f"exported weights {run / 'export'}"
    assert r.words == WORDS and r.step is None


def test_run_folder_without_export_uses_its_latest_checkpoint(run, tmp_path):
    cut = _copy(run, tmp_path / "cut", export=False)
    r = resolve_checkpoint(cut)
    assert r.kind == "file" and r.path == checkpoint_path(cut, 2) and r.step == 2
    assert r.description == f"run {cut}: latest checkpoint step 2 (no export/ yet)"
    assert r.words == WORDS and r.vocab_path == cut / "vocab.txt"
    assert r.config == load_config(cut / "config.json")
    before = torch.get_rng_state()
    model = r.load_model(torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)  # the throw-away initialisation leaves the RNG alone
    assert not model.training
    assert _same_weights(model, load_checkpoint(checkpoint_path(cut, 2))["model"])
    # A corrupt newest checkpoint is skipped with a warning, as for --resume latest.
    good = checkpoint_path(cut, 2).read_bytes()
    checkpoint_path(cut, 2).write_bytes(good[: len(good) // 3])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        older = resolve_checkpoint(cut)
    assert older.step == 1 and "latest checkpoint step 1" in older.description
    assert not _same_weights(older.load_model(), load_checkpoint(checkpoint_path(run, 2))["model"])
    checkpoint_path(cut, 1).write_bytes(good[:100])
    with pytest.raises(ValueError, match=r"^--checkpoint .*no readable checkpoint"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolve_checkpoint(cut)


def test_checkpoint_file(run):
    path = checkpoint_path(run, 1)
    r = resolve_checkpoint(path)
    assert r.kind == "file" and r.path == path and r.step == 1
    assert r.description == f"checkpoint file {path}: step 1"
    assert r.words == WORDS and r.vocab_path is None  # the words stored in the .pt
    assert r.config == load_config(run / "config.json")
    assert _same_weights(r.load_model(), load_checkpoint(path)["model"])


def test_export_older_than_a_checkpoint_is_noted(run, tmp_path):
    longer = _copy(run, tmp_path / "longer")
    newest = checkpoint_path(longer, 2)
    stamp = (longer / "export" / "model.safetensors").stat().st_mtime + 10
    os.utime(newest, (stamp, stamp))
    r = resolve_checkpoint(longer)
    assert r.path == longer / "export"
    assert r.description.endswith(f"; {CKPT_DIR}/{newest.name} is newer (pass that file to use it)")


def test_unknown_paths_say_what_was_expected(run, tmp_path):
    expected = r"expected a training run folder .*export or `mmv-torch convert` folder .*checkpoint \.pt file"
    with pytest.raises(ValueError, match=r"no such file or folder; " + expected):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--checkpoint .*empty: a folder with neither"):
        resolve_checkpoint(tmp_path / "empty")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(run / "config.json", half / "config.json")  # config.json without model.safetensors
    with pytest.raises(ValueError, match=expected):
        resolve_checkpoint(half)
    with pytest.raises(ValueError, match=r"not an mmv-torch training checkpoint.*" + expected):
        bogus = tmp_path / "bogus.pt"
        torch.save({"step": 3}, bogus)
        resolve_checkpoint(bogus)
    with pytest.raises(ValueError, match=r"cannot be read.*" + expected):
        resolve_checkpoint(run / "config.json")
    assert [s for s, _ in list_checkpoints(run)] == [1, 2]  # the run itself is untouched
