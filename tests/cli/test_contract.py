"""The command line's contract, driven through the real CLI in subprocesses: no lost work, outputs
checked before any work, one line and exit status 2 for every anticipated failure, no traceback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TINY = ["train.batch_size=2", "train.num_workers=0", "train.warmup_steps=1", "data.num_frames=4", "data.crop_size=32",
        "data.resize_short=36", "data.eval_crop_size=32"]


def cli(*argv, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "mmv_torch", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(res, *needles):
    """Exit status 2, no traceback, exactly one stderr line that says 'error:' (warnings aside)."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("mmv-torch"), res.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny training run (2 steps on 6 synthetic clips) made by the CLI."""
    root = tmp_path_factory.mktemp("contract")
    run = root / "run"
    res = cli("train", "--preset", "tiny", "--data", "synthetic:6", "--out", run, "--set", "train.steps=2",
              "train.ckpt_every=1", *TINY)
    assert res.returncode == 0, res.stderr
    return root, run


def test_second_train_into_a_finished_run_changes_nothing(finished):
    root, run = finished
    before = snapshot(run)
    assert {"config.json", "log.jsonl", "export/model.safetensors"} <= set(before)
    assert any(k.startswith("checkpoints/") for k in before)
    res = cli("train", "--preset", "tiny", "--data", "synthetic:6", "--out", run, "--set", "train.steps=3", *TINY)
    assert_one_line_error(res, "already holds a run", "--resume latest", "--overwrite")
    assert snapshot(run) == before and not (run / ".lock").exists()


def test_overwrite_moves_the_old_run_aside(finished, tmp_path):
    import shutil

    root, run = finished
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    before = snapshot(mine)
    res = cli("train", "--preset", "tiny", "--data", "synthetic:6", "--out", mine, "--overwrite", "--set",
              "train.steps=1", *TINY)
    assert res.returncode == 0, res.stderr
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert json.loads((mine / "log.jsonl").read_text().splitlines()[-1])["step"] == 1
    assert not (mine / ".lock").exists()


def test_a_second_process_on_a_run_folder_is_refused(finished, tmp_path):
    root, _ = finished
    run = tmp_path / "busy"
    first = subprocess.Popen([sys.executable, "-m", "mmv_torch", "train", "--preset", "tiny", "--data",
                              str(root / "run" / "synthetic" / "pretrain.jsonl"), "--out", str(run), "--set",
                              "train.steps=100000", *TINY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 120
        while not (run / ".lock").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert (run / ".lock").exists(), first.stderr.read() if first.poll() is not None else "no lock"
        owner = json.loads((run / ".lock").read_text())
        assert owner["pid"] == first.pid
        res = cli("train", "--preset", "tiny", "--data", "synthetic:6", "--out", run, "--resume", "latest", "--set",
                  *TINY)
        assert_one_line_error(res, "is in use by process", str(first.pid))
    finally:
        first.kill()
        first.wait()
    # The killed owner left its lock: stale (its process is gone), so the next run takes over with a warning.
    assert (run / ".lock").exists()
    res = cli("train", "--preset", "tiny", "--data", str(root / "run" / "synthetic" / "pretrain.jsonl"), "--out",
              run, "--overwrite", "--set", "train.steps=1", *TINY)
    assert res.returncode == 0, res.stderr
    assert "stale lock" in res.stderr and not (run / ".lock").exists()


def test_unwritable_outputs_fail_before_any_work(finished, tmp_path):
    root, run = finished
    missing_ckpt = tmp_path / "no_such_checkpoint"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # The checkpoint does not exist: an error about the output proves nothing was loaded first.
    res = cli("eval", "linear", "--checkpoint", missing_ckpt, "--data", tmp_path / "m.jsonl", "--json", "/sys/r.json")
    assert_one_line_error(res, "--json /sys/r.json", "cannot write")
    res = cli("eval", "retrieval", "--checkpoint", missing_ckpt, "--data", tmp_path / "m.jsonl", "--json", tmp_path)
    assert_one_line_error(res, "is a folder")
    res = cli("embed", "--checkpoint", missing_ckpt, "--data", tmp_path, "--modality", "video", "--out",
              blocker / "emb")
    assert_one_line_error(res, "is a file, not a folder")
    res = cli("train", "--preset", "tiny", "--data", "synthetic:6", "--out", blocker)
    assert_one_line_error(res, "--out", "is a file, expected a folder")
    manifest = root / "run" / "synthetic" / "pretrain.jsonl"
    res = cli("data", "check", manifest, "--clean", manifest)
    assert_one_line_error(res, "would overwrite the input")
    assert not list(tmp_path.glob(".*tmp*"))


def _bad_cases(root: Path, run: Path, tmp: Path):
    ckpt = run / "export"
    manifest = tmp / "missing.jsonl"
    manifest.write_text("".join(json.dumps({"video": f"gone_{i}.mp4", "label": "ab"[i % 2], "split": s}) + "\n"
                                for i in range(4) for s in ("train", "test")))
    one_class = tmp / "one_class.jsonl"
    videos = sorted((root / "run" / "synthetic").glob("*.mp4"))
    one_class.write_text("".join(json.dumps({"video": str(v), "label": "a", "split": s}) + "\n"
                                 for v, s in zip(videos, ["train", "train", "test", "test"])))
    broken = tmp / "broken_ckpt"
    broken.mkdir()
    (broken / "config.json").write_bytes((ckpt / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:1000])
    eval_common = ["--checkpoint", ckpt, "--workers", "0", "--device", "cpu"]
    return {
        "windows 0": (["embed", *eval_common, "--data", one_class, "--modality", "video", "--windows", "0", "--out",
                       tmp / "e"], ["--windows", "must be >= 1"]),
        "windows -2": (["embed", *eval_common, "--data", one_class, "--modality", "video", "--windows", "-2",
                        "--out", tmp / "e"], ["must be >= 1, got -2"]),
        "test windows 0": (["eval", "finetune", *eval_common, "--data", one_class, "--out", tmp / "ft",
                            "--test-windows", "0"], ["--test-windows"]),
        "lr nan": (["eval", "finetune", *eval_common, "--data", one_class, "--out", tmp / "ft", "--lr", "nan"],
                   ["finite number"]),
        "cuda": (["eval", "linear", "--checkpoint", ckpt, "--data", one_class, "--device", "cuda"],
                 ["no CUDA device"]),
        "truncated weights": (["eval", "linear", "--checkpoint", broken, "--data", one_class, "--device", "cpu"],
                              ["model.safetensors cannot be read"]),
        "config and preset": (["train", "--preset", "tiny", "--config", run / "config.json", "--data",
                               "synthetic:6", "--out", tmp / "t"], ["exactly one of --preset"]),
        "finetune resume nothing": (["eval", "finetune", *eval_common, "--data", one_class, "--out", tmp / "empty",
                                     "--resume", "latest"], ["holds no finetune.pt"]),
        "most videos missing": (["eval", "linear", *eval_common, "--data", manifest, "--train-epochs", "1",
                                 "--test-windows", "1"], ["failed to decode"]),
        "one class": (["eval", "linear", *eval_common, "--data", one_class], ["at least two"]),
        "missing manifest": (["eval", "linear", *eval_common, "--data", tmp / "nope.jsonl"], ["nope.jsonl"]),
    }


def test_anticipated_failures_are_one_line(finished, tmp_path):
    root, run = finished
    for name, (argv, needles) in _bad_cases(root, run, tmp_path).items():
        res = cli(*argv)
        try:
            assert_one_line_error(res, *needles)
        except AssertionError as e:
            raise AssertionError(f"case {name!r}: {e}") from None


def test_ctrl_c_prints_the_resume_hint(finished, tmp_path):
    root, _ = finished
    run = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "mmv_torch", "train", "--preset", "tiny", "--data",
                             str(root / "run" / "synthetic" / "pretrain.jsonl"), "--out", str(run), "--set",
                             "train.steps=100000", "train.log_every=1", *TINY], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "log.jsonl").is_file() or not (run / "log.jsonl").read_text().strip():
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume latest" in err
    assert not (run / ".lock").exists()


def test_checkpoint_takes_a_run_folder_or_a_checkpoint_file(finished, tmp_path):
    """--checkpoint RUN (its export/) and --checkpoint RUN/checkpoints/ckpt_<last>.pt give the same weights."""
    import numpy as np

    root, run = finished
    videos = run / "synthetic"  # a plain folder of videos (searched recursively)
    last = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    outs = []
    for i, ckpt in enumerate((run, last)):
        out = tmp_path / f"e{i}"
        res = cli("embed", "--checkpoint", ckpt, "--data", videos, "--modality", "video", "--space", "va",
                  "--workers", "0", "--device", "cpu", "--out", out)
        assert res.returncode == 0, res.stderr
        assert "checkpoint: " in res.stderr
        outs.append(np.load(str(out) + ".npy"))
    assert outs[0].shape[0] == len(list(videos.glob("*.mp4")))
    np.testing.assert_array_equal(outs[0], outs[1])


def _wait_for_lines(path: Path, n: int, proc, what: str):
    deadline = time.time() + 180
    while not path.is_file() or len(path.read_text().splitlines()) < n:
        assert proc.poll() is None, f"{what} ended early: {proc.stderr.read()}"
        assert time.time() < deadline, f"{what} did not get going"
        time.sleep(0.05)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if "event" not in r}


def test_sigterm_saves_the_step_and_resume_is_exact(finished, tmp_path):
    root, _ = finished
    data = str(root / "run" / "synthetic" / "pretrain.jsonl")
    steps = ["--set", "train.steps=12", "train.log_every=1", "train.ckpt_every=100", *TINY]
    ref = tmp_path / "ref"
    assert cli("train", "--preset", "tiny", "--data", data, "--out", ref, *steps).returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mmv_torch", "train", "--preset", "tiny", "--data", data, "--out",
                             str(run), *steps], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(run / "log.jsonl", 2, proc, "training")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if "interrupted at step" in ln][0]
    step = int(line.split("interrupted at step ")[1].split()[0])
    assert 2 <= step < 12 and (run / "checkpoints" / f"ckpt_{step:08d}.pt").is_file()
    assert "--resume latest" in line and "train.steps=12" in line and not (run / ".lock").exists()
    res = cli("train", "--preset", "tiny", "--data", data, "--out", run, "--resume", "latest", *steps)
    assert res.returncode == 0, res.stderr
    assert _losses(run) == _losses(ref)  # bit-exact continuation
    from safetensors.torch import load_file

    a, b = load_file(str(run / "export" / "model.safetensors")), load_file(str(ref / "export" / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_finetune_sigterm_mid_epoch_resumes_exactly(finished, tmp_path):
    import torch

    root, run = finished
    videos = sorted((root / "run" / "synthetic").glob("*.mp4"))
    rows = [{"video": str(v), "label": "ab"[i % 2], "split": "train"} for _ in range(8) for i, v in enumerate(videos)]
    rows += [{"video": str(v), "label": "ab"[i % 2], "split": "test"} for i, v in enumerate(videos)]
    manifest = tmp_path / "ft.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["eval", "finetune", "--checkpoint", run, "--data", manifest, "--batch-size", "2", "--workers", "0",
              "--device", "cpu", "--epochs", "2", "--test-windows", "1"]
    assert cli(*common, "--out", tmp_path / "ref").returncode == 0
    out = tmp_path / "ft"
    proc = subprocess.Popen([sys.executable, "-m", "mmv_torch", *map(str, common), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out / "finetune_log.jsonl", 1, proc, "fine-tuning")  # step 10 of 24 in epoch 0
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    saved = torch.load(out / "finetune.pt", weights_only=False)
    assert "partial" in saved and 10 <= saved["step"] < 24 and saved["partial"]["batches"] == saved["step"]
    res = cli(*common, "--out", out, "--resume", "latest")
    assert res.returncode == 0, res.stderr
    a, b = torch.load(out / "finetune.pt", weights_only=False), torch.load(tmp_path / "ref" / "finetune.pt",
                                                                          weights_only=False)
    assert a["step"] == b["step"] == 48 and "partial" not in a
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_shards_go_into_a_fresh_folder(finished, tmp_path):
    root, _ = finished
    manifest = root / "run" / "synthetic" / "pretrain.jsonl"
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "earlier-000000.tar").write_bytes(b"an earlier run")
    res = cli("data", "shard", manifest, shards, "--no-verify")
    assert_one_line_error(res, "is not empty", "--overwrite")
    assert sorted(p.name for p in shards.iterdir()) == ["earlier-000000.tar"]
    res = cli("data", "shard", manifest, shards, "--no-verify", "--overwrite", "--samples-per-shard", "4")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in shards.iterdir())
    assert "earlier-000000.tar" not in names and names and all(n.endswith(".tar") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no temporary or old folder left
