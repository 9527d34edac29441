"""The training loop: schedule, deterministic data order, exact kill-and-resume, atomic checkpoints,
the NaN/Inf guard, logs and export, and a 2-process gloo run equal to one process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mmv_torch.train.loop as T
import mmv_torch.weights.checkpoint as C
from mmv_torch.config import apply_overrides, get_preset, load_config, save_config
from mmv_torch.train.data import build_train_data
from mmv_torch.train.sampling import epoch_order
from mmv_torch.weights.resolve import create_model
from tests.helpers.train_worker_ddp import RandomClips, run_two_ranks


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machine has 2 shared cores: OpenMP threads fighting other processes are slower than one.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(**train):
    over = {"train.batch_size": 4, "train.steps": 5, "train.warmup_steps": 1, "train.log_every": 1,
            "train.ckpt_every": 2, "train.num_workers": 0, "data.num_frames": 8, "data.fps": 8.0,
            "data.crop_size": 32, "data.resize_short": 36, "data.audio_seconds": 0.5, "data.extra_vocab_words": 0}
    over.update({f"train.{k}": v for k, v in train.items()})
    return apply_overrides(get_preset("tiny"), over)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> Path:
    """12 synthetic narrated clips (36x36, 8 fps, 1.5-2 s) written once per test session."""
    from mmv_torch.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, 12, seed=0, size=36, fps=8.0, duration=(1.5, 2.0), workers=1, num_probe_train=0,
                  num_probe_test=0, num_retrieval=0)
    return out


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(run) if "event" not in r}


class Killed(Exception):
    pass


def kill_at_loss_call(monkeypatch, n: int) -> None:
    """Make the n-th call of the loss (1-based) raise, as if the process died there."""
    orig = T.mmv_loss
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed()
        return orig(*args, **kwargs)

    monkeypatch.setattr(T, "mmv_loss", wrapped)


# ---------------------------------------------------------------------------------------------
# Pure pieces


def test_lr_schedule_warmup_then_half_cosine_to_zero():
    peak, warm, total = 2e-3, 4, 20
    lrs = [T.lr_at(s, peak, warm, total) for s in range(total + 1)]
    assert lrs[:4] == pytest.approx([peak * (s + 1) / 4 for s in range(4)])
    assert lrs[4] == pytest.approx(peak)
    assert lrs[12] == pytest.approx(peak / 2)  # half way through the cosine
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert T.lr_at(0, peak, 0, total) == pytest.approx(peak)


# ---------------------------------------------------------------------------------------------
# The loop


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch, synthetic_set):
    cfg = tiny_cfg(steps=5, ckpt_every=2)
    data = [str(synthetic_set / "pretrain.jsonl")]  # 12 clips, 3 batches per epoch: crosses epochs
    full = T.train(cfg, data, tmp_path / "full", tensorboard=False, progress=False)
    assert full["steps"] == 5 and full["skipped_steps"] == 0

    kill_at_loss_call(monkeypatch, 4)  # dies during step 4, after the checkpoint of step 2
    with pytest.raises(Killed):
        T.train(cfg, data, tmp_path / "cut", tensorboard=False, progress=False)
    monkeypatch.undo()
    assert [s for s, _ in C.list_checkpoints(tmp_path / "cut")] == [2]
    assert max(losses(tmp_path / "cut")) == 3  # step 3 was logged, then lost
    # A new call resumes; DataLoader workers here must not change the samples.
    resumed_cfg = apply_overrides(cfg, {"train.num_workers": 1})
    out = T.train(resumed_cfg, data, tmp_path / "cut", resume="latest", tensorboard=False, progress=False)
    assert out["start_step"] == 2 and out["steps"] == 5

    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # exact floats, steps 1..5
    full_ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "full", 5))
    cut_ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "cut", 5))
    for k, v in full_ck["model"].items():
        assert torch.equal(v, cut_ck["model"][k]), k
    assert {**full_ck["data"], "num_workers": 1} == cut_ck["data"]
    assert (full_ck["data"]["epoch"], full_ck["data"]["batch"]) == (1, 2)
    # Optimizer moments equal too.
    for sa, sb in zip(full_ck["optimizer"]["state"].values(), cut_ck["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def killed_and_resumed(cfg, data, run, monkeypatch, kill_at: int = 3) -> dict[int, float]:
    """Train into ``run`` until the ``kill_at``-th loss call dies, resume it with one loader worker; its losses."""
    kill_at_loss_call(monkeypatch, kill_at)
    with pytest.raises(Killed):
        T.train(cfg, data, run, tensorboard=False, progress=False)
    monkeypatch.undo()
    T.train(apply_overrides(cfg, {"train.num_workers": 1}), data, run, resume="latest", tensorboard=False,
            progress=False)
    return losses(run)


def test_batch_augmentation_trains_and_resumes_exactly(tmp_path, monkeypatch, synthetic_set):
    """data.augment_on=batch: the loop augments the uint8 frames after to_device; a killed run resumes with
    the losses of an uninterrupted one (the draws come from the seeded per-sample generators)."""
    cfg = apply_overrides(tiny_cfg(steps=3, ckpt_every=2), {"data.augment_on": "batch"})
    data = [str(synthetic_set / "pretrain.jsonl")]
    full = T.train(cfg, data, tmp_path / "full", tensorboard=False, progress=False)
    assert full["steps"] == 3 and np.isfinite(full["final_loss"])
    # (The tiny model at initialisation is too ill-conditioned to compare its loss with augment_on=worker:
    # input noise of half a grey level moves it by ~10%; tests/data/test_batch_augment.py compares the inputs.)
    assert killed_and_resumed(cfg, data, tmp_path / "cut", monkeypatch) == losses(tmp_path / "full")


def test_clips_per_video_trains_with_same_video_groups_and_resumes_exactly(tmp_path, monkeypatch, synthetic_set):
    """data.clips_per_video=2: batches of 4 clips from 2 videos, the loss gets the videos as groups, and a killed
    run resumes with the losses of an uninterrupted one."""
    cfg = apply_overrides(tiny_cfg(steps=3, ckpt_every=2), {"data.clips_per_video": 2})
    data = [str(synthetic_set / "pretrain.jsonl")]
    seen = []
    orig = T.mmv_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["groups"].tolist())
        return orig(*args, **kwargs)

    monkeypatch.setattr(T, "mmv_loss", spy)
    full = T.train(cfg, data, tmp_path / "full", tensorboard=False, progress=False)
    monkeypatch.undo()
    assert full["steps"] == 3 and np.isfinite(full["final_loss"])
    assert len(seen) == 3 and all(len(g) == 4 and g[0] == g[1] and g[2] == g[3] for g in seen)
    order = epoch_order(build_train_data(data, cfg, tmp_path / "x").sources, cfg.train.seed, 0)
    assert [g[0] for g in seen] + [g[2] for g in seen] == [*order[0:6:2], *order[1:6:2]]  # 2 videos per batch
    assert killed_and_resumed(cfg, data, tmp_path / "cut", monkeypatch) == losses(tmp_path / "full")


def test_logs_config_checkpoints_and_export(tmp_path, synthetic_set):
    cfg = tiny_cfg(steps=3, ckpt_every=1, keep_ckpts=2)
    run = tmp_path / "run"
    out = T.train(cfg, [str(synthetic_set)], run, tensorboard=True, progress=False)
    log = read_log(run)
    assert log[0]["event"] == "contrastive_batch" and log[0]["clips_per_loss"] == 4  # how many negatives a clip sees
    log = [r for r in log if "event" not in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    for key in ("loss", "loss_va", "loss_vt", "lr", "clips_per_s", "data_time", "step_time", "skipped_steps",
                "grad_norm", "silent_clips"):
        assert all(np.isfinite(r[key]) for r in log), key
    assert log[0]["lr"] == pytest.approx(2e-3) and log[-1]["lr"] < log[0]["lr"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # The text table is sized to the narrations' words, which vocab.txt lists in id order.
    words = (run / "vocab.txt").read_text().splitlines()
    saved = load_config(run / "config.json")
    from mmv_torch.data.text.tokenizer import split_words

    narrated = {w for line in (synthetic_set / "pretrain.jsonl").read_text().splitlines()
                for seg in json.loads(line).get("narration", []) for w in split_words(seg["text"])}
    assert words[0] == "<pad>" and 10 < len(words) and set(words[1:]) <= narrated
    assert saved == apply_overrides(cfg, {"model.text.vocab_size": len(words), "model.text.word_dim": 50})
    assert [s for s, _ in C.list_checkpoints(run)] == [2, 3]  # keep_ckpts=2
    ck = C.load_checkpoint(C.checkpoint_path(run, 3))
    assert ck["config"] == json.loads((run / "config.json").read_text())
    assert set(ck) >= {"model", "optimizer", "scaler", "rng", "data", "step", "config", "bad_steps"}
    # The export loads through the public entry point and matches the final checkpoint.
    model = create_model(checkpoint=out["export"])
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ck["model"].items())
    assert (Path(out["export"]) / "vocab.txt").read_text().splitlines() == words
    from mmv_torch.data.text.wordvec import load_word_vectors

    glove = load_word_vectors(restrict_to=[words[5]])
    assert torch.equal(sd["text.embed.weight"][5], glove.vectors_tensor()[1])


def test_vocabulary_adds_the_top_words_of_the_vector_source(tmp_path, synthetic_set):
    """Narration words plus the words among the first N rows of the word vectors, in the vectors' order;
    a rebuilt vocabulary (resume) is the same list, and a run folder with another list is refused."""
    from mmv_torch.data.text.tokenizer import split_words
    from mmv_torch.data.text.wordvec import load_word_vectors
    from mmv_torch.train.data import build_train_data

    cfg = apply_overrides(tiny_cfg(), {"data.extra_vocab_words": 300})
    data = build_train_data([str(synthetic_set / "pretrain.jsonl")], cfg, tmp_path)
    narrated = {w for line in (synthetic_set / "pretrain.jsonl").read_text().splitlines()
                for seg in json.loads(line).get("narration", []) for w in split_words(seg["text"])}
    glove = load_word_vectors(limit=400000)
    top = [w for w in glove.words[1:301] if split_words(w) == [w]]
    assert 150 < len(top) < 300 and "," not in top and "the" not in top  # punctuation and stop words left out
    known = {w for w in narrated if w in glove.index}
    assert data.words[0] == "<pad>" and set(data.words[1:]) == known | set(top)
    assert data.words[1:] == sorted(data.words[1:], key=glove.index.__getitem__)  # the vectors' order
    assert torch.equal(data.vectors[data.words.index("people")], glove.vectors_tensor()[glove.index["people"]])
    base = build_train_data([str(synthetic_set / "pretrain.jsonl")], tiny_cfg(), tmp_path / "b")
    assert set(base.words[1:]) == known  # extra_vocab_words=0: narration words only
    (tmp_path / "vocab.txt").write_text("".join(w + "\n" for w in data.words))
    assert build_train_data([str(synthetic_set / "pretrain.jsonl")], cfg, tmp_path).words == data.words
    (tmp_path / "vocab.txt").write_text("".join(w + "\n" for w in base.words))
    with pytest.raises(ValueError, match="vocabulary"):
        build_train_data([str(synthetic_set / "pretrain.jsonl")], cfg, tmp_path)


def test_run_train_generates_synthetic_data_and_mixes_sources(tmp_path, synthetic_set):
    over = ["train.batch_size=4", "train.steps=1", "train.num_workers=0", "data.crop_size=32",
            "data.resize_short=36", "data.fps=8", "data.audio_seconds=0.5"]
    out = T.run_train("tiny", ["synthetic:8"], str(tmp_path / "run"), over)
    assert out["steps"] == 1 and np.isfinite(out["final_loss"])
    assert len((tmp_path / "run" / "synthetic" / "pretrain.jsonl").read_text().splitlines()) == 8
    cfg = load_config(tmp_path / "run" / "config.json")
    data = build_train_data([str(synthetic_set), str(synthetic_set / "pretrain.jsonl") + "@3"], cfg,
                              tmp_path / "other")
    assert [(s.offset, s.length, s.weight) for s in data.sources] == [(0, 12, 1.0), (12, 12, 3.0)]
    order = epoch_order(data.sources, 0, 0)
    assert (order >= 12).sum() == 18  # 3/4 of an epoch of 24
    with pytest.raises(ValueError, match="no such manifest"):
        build_train_data([str(tmp_path / "nope.jsonl")], cfg, tmp_path / "other")
    with pytest.raises(ValueError, match="--preset"):
        T.run_train(None, ["synthetic"], str(tmp_path / "x"))


def test_checkpoint_write_killed_midway_keeps_previous_one(tmp_path, monkeypatch):
    cfg = tiny_cfg(steps=4, ckpt_every=2)
    run = tmp_path / "run"
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if obj["step"] == 4:  # write half a checkpoint, then die
            import io

            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            raise Killed()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Killed):
        T.train(cfg, RandomClips(8), run, tensorboard=False, progress=False)
    monkeypatch.undo()
    assert [s for s, _ in C.list_checkpoints(run)] == [2]
    assert not list((run / C.CKPT_DIR).glob(".*tmp*"))  # the partial temporary file was removed
    # A kill that leaves a truncated temporary file, and even a corrupt newest checkpoint, are ignored.
    good = (run / C.CKPT_DIR / "ckpt_00000002.pt").read_bytes()
    (run / C.CKPT_DIR / ".ckpt_00000004.pt.tmp.999").write_bytes(good[:1000])
    (run / C.CKPT_DIR / "ckpt_00000003.pt").write_bytes(good[: len(good) // 3])
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        path, ck = C.resolve_resume("latest", run)
    assert path.name == "ckpt_00000002.pt" and ck["step"] == 2
    (run / C.CKPT_DIR / "ckpt_00000003.pt").unlink()
    out = T.train(cfg, RandomClips(8), run, resume="latest", tensorboard=False, progress=False)
    assert out["start_step"] == 2 and out["steps"] == 4
    assert not list((run / C.CKPT_DIR).glob(".*tmp*"))  # stale temporaries cleaned at start
    with pytest.raises(ValueError, match="cannot be read"):
        C.load_checkpoint(run / C.CKPT_DIR / "missing.pt")


def test_nan_guard_skips_counts_and_stops(tmp_path, monkeypatch):
    orig = T.mmv_loss
    calls = {"n": 0}

    def nan_on_some_steps(*args, **kwargs):
        calls["n"] += 1
        total, parts = orig(*args, **kwargs)
        if calls["n"] in (2, 3):
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(T, "mmv_loss", nan_on_some_steps)
    cfg = tiny_cfg(steps=4, ckpt_every=4, max_bad_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = T.train(cfg, RandomClips(8), tmp_path / "ok", tensorboard=False, progress=False)
    assert out["skipped_steps"] == 2 and out["steps"] == 4
    assert sum("non-finite loss" in str(w.message) for w in caught) == 2
    events = [r for r in read_log(tmp_path / "ok") if r.get("event") == "skipped_step"]
    assert [r["step"] for r in events] == [2, 3] and events[0]["loss"] is None  # NaN is logged as null
    ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "ok", 4))
    assert ck["bad_steps"] == 2
    adam_steps = {float(s["step"]) for s in ck["optimizer"]["state"].values()}
    assert adam_steps == {2.0}  # 4 steps, 2 skipped: only 2 updates

    calls["n"] = 0
    cfg = tiny_cfg(steps=4, ckpt_every=4, max_bad_steps=1)
    with pytest.raises(T.TrainingDivergedError, match="max_bad_steps=1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.train(cfg, RandomClips(8), tmp_path / "bad", tensorboard=False, progress=False)


def test_resume_rejects_a_changed_config(tmp_path):
    cfg = tiny_cfg(steps=1, ckpt_every=1)
    T.train(cfg, RandomClips(4), tmp_path / "run", tensorboard=False, progress=False)
    with pytest.raises(ValueError, match=r"train.lr"):
        T.train(apply_overrides(cfg, {"train.lr": 1e-3}), RandomClips(4), tmp_path / "run", resume="latest",
                tensorboard=False, progress=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        T.train(cfg, RandomClips(4), tmp_path / "empty", resume="latest", tensorboard=False, progress=False)


def test_two_process_gloo_run_equals_one_process_on_the_whole_batch(tmp_path):
    """torchrun-style launch of the real loop: 2 ranks x batch 2 (DDP, SyncBN, negatives gathered across
    ranks) give the losses and weights of 1 process x batch 4 on the same samples.

    In float64: the tiny network at initialisation is ill-conditioned enough (BatchNorm over nearly
    constant features) that merely permuting a float32 batch moves the loss by ~3e-4 relative.
    """
    steps = 3
    save_config(tiny_cfg(steps=steps, ckpt_every=steps, batch_size=2), tmp_path / "ddp.json")
    outputs = run_two_ranks(tmp_path, 12, timeout=240)
    run = tmp_path / "ddp"
    # No graph traversal for unused parameters and no gradient copied into a bucket of another layout:
    # PyTorch warns about either.
    assert not [o for o in outputs if "find_unused_parameters" in o or "Grad strides do not match" in o]
    summaries = [json.loads((run / f"summary_rank{r}.json").read_text()) for r in range(2)]
    assert [s["world_size"] for s in summaries] == [2, 2]
    assert summaries[0]["final_loss"] == summaries[1]["final_loss"]  # the global loss on every rank

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        T.train(tiny_cfg(steps=steps, ckpt_every=steps, batch_size=4), RandomClips(12), tmp_path / "one",
                tensorboard=False, progress=False)
    finally:
        torch.set_default_dtype(default)
    ddp_losses, one_losses = losses(run), losses(tmp_path / "one")
    assert sorted(ddp_losses) == list(range(1, steps + 1))
    # Float64 rounding differs between the two summation orders (per rank, then across ranks, vs one batch);
    # each Adam step amplifies it (ill-conditioned BatchNorm at initialisation). Measured on two Xeons: steps 1-2
    # agree to ~1e-12 relative, step 3 to 1e-10 on one and 1.1e-8 on an AVX-512 one; the weights after step 3
    # to 6e-9.
    for k in one_losses:
        assert ddp_losses[k] == pytest.approx(one_losses[k], rel=1e-10 if k < steps else 1e-7), k
    ck2 = C.load_checkpoint(C.checkpoint_path(run, steps))
    ck1 = C.load_checkpoint(C.checkpoint_path(tmp_path / "one", steps))
    assert ck2["world_size"] == 2 and len(ck2["rng"]) == 2
    assert set(ck2["model"]) == set(ck1["model"])  # SyncBatchNorm keeps the BatchNorm keys
    worst = max((ck2["model"][k].double() - v.double()).abs().max().item()
                for k, v in ck1["model"].items() if v.is_floating_point())
    assert ck1["model"]["heads.video_va.final_projection.weight"].dtype == torch.float64
    assert worst < 5e-8


def test_shard_folder_stream_resumes_exactly(tmp_path, monkeypatch, synthetic_set):
    from mmv_torch.data.tools.shard_writer import write_shards

    write_shards(synthetic_set / "pretrain.jsonl", tmp_path / "shards", samples_per_shard=4)
    data = [str(tmp_path / "shards")]
    cfg = tiny_cfg(steps=4, ckpt_every=2)
    T.train(cfg, data, tmp_path / "full", tensorboard=False, progress=False)
    kill_at_loss_call(monkeypatch, 4)
    with pytest.raises(Killed):
        T.train(cfg, data, tmp_path / "cut", tensorboard=False, progress=False)
    monkeypatch.undo()
    out = T.train(cfg, data, tmp_path / "cut", resume="latest", tensorboard=False, progress=False)
    assert out["start_step"] == 2
    full = losses(tmp_path / "full")
    assert sorted(full) == [1, 2, 3, 4] and losses(tmp_path / "cut") == full
    ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "cut", 4))
    assert ck["data"]["stream"] and ck["data"]["batches_per_epoch"] == 3  # 12 samples / batch 4
    with pytest.raises(ValueError, match="num_workers"):
        T.train(apply_overrides(cfg, {"train.num_workers": 1}), data, tmp_path / "cut", resume="latest",
                tensorboard=False, progress=False)
    with pytest.raises(ValueError, match="cannot be mixed"):
        build_train_data(data + [str(synthetic_set)], cfg, tmp_path / "x")
    with pytest.raises(ValueError, match="clips_per_video > 1 needs manifests"):
        build_train_data(data, apply_overrides(cfg, {"data.clips_per_video": 2}), tmp_path / "x")


def test_mixed_precision_on_cpu(tmp_path):
    """bf16 autocast trains; fp16 overflows are the GradScaler's to skip, not the NaN guard's."""
    out = T.train(tiny_cfg(steps=2, precision="bf16"), RandomClips(8), tmp_path / "bf16", tensorboard=False,
                  progress=False)
    assert out["skipped_steps"] == 0 and np.isfinite(out["final_loss"])
    out = T.train(tiny_cfg(steps=3, precision="fp16", max_bad_steps=0), RandomClips(8), tmp_path / "fp16",
                  tensorboard=False, progress=False)
    log = read_log(tmp_path / "fp16")
    # The tiny net's gradient norm (~1e5) overflows fp16 at the initial scale 2**16: the scaler skips those
    # updates and halves the scale each time; max_bad_steps=0 would have raised had the guard counted them.
    assert out["skipped_steps"] == 0 and log[-1]["grad_scale"] < 2.0**16
    ck = C.load_checkpoint(C.checkpoint_path(tmp_path / "fp16", 3))
    assert ck["scaler"]["scale"] == log[-1]["grad_scale"]
    # Resuming a finished run trains nothing and keeps the last loss.
    again = T.train(tiny_cfg(steps=3, precision="fp16", max_bad_steps=0), RandomClips(8), tmp_path / "fp16",
                    resume="latest", tensorboard=False, progress=False)
    assert again["start_step"] == 3 and again["final_loss"] == out["final_loss"]


def test_train_step_on_a_caller_built_state():
    """The public step: lr from the schedule, micro-batches accumulated, a non-finite step skipped and
    counted (weights untouched), and more than max_bad_steps skipped steps raise."""
    from torch.utils.data import default_collate

    from mmv_torch.models.mmv import MMV

    cfg = tiny_cfg(steps=4, grad_accum=2, max_bad_steps=1)
    torch.manual_seed(0)
    raw = MMV(cfg.model)
    clips = RandomClips(4)
    good = default_collate([clips[i] for i in range(4)])
    bad = {**good, "video": torch.full_like(good["video"], float("nan"))}
    feed = iter([good, good, good, bad, bad, good])
    events = []

    class Sink:
        def log(self, record):
            events.append(record)

    state = T.TrainState(raw, raw, T.build_optimizer(raw, cfg), torch.amp.GradScaler("cpu", enabled=False), cfg,
                         torch.device("cpu"), feed, logger=Sink())
    before = {k: v.detach().clone() for k, v in raw.named_parameters()}
    first = T.train_step(state)
    assert first.applied and first.step == state.step == 1 and np.isfinite(first.loss)
    assert first.lr == T.lr_at(0, cfg.train.lr, 1, 4) and state.optimizer.param_groups[0]["lr"] == first.lr
    assert set(first.parts) >= {"va", "vt"} and state.last_loss == first.loss
    changed = {k: v.detach().clone() for k, v in raw.named_parameters()}
    assert not torch.equal(changed["heads.video_va.final_projection.weight"],
                           before["heads.video_va.final_projection.weight"])
    with pytest.warns(UserWarning, match="step 1: non-finite loss"):
        skipped = T.train_step(state)  # one good and one NaN micro-batch
    assert not skipped.applied and state.bad_steps == 1 and state.step == 2 and state.last_loss == first.loss
    # The parameters are untouched (BatchNorm running statistics are not parameters: the forward moved them).
    assert all(torch.equal(v, changed[k]) for k, v in raw.named_parameters())
    assert [{k: v for k, v in e.items() if k not in ("loss", "grad_norm")} for e in events] == [
        {"step": 2, "event": "skipped_step", "skipped_steps": 1}]
    assert np.isnan(events[0]["loss"]) and np.isnan(skipped.loss)
    with pytest.raises(T.TrainingDivergedError, match="2 steps had a non-finite"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.train_step(state)


def test_unused_parameters_are_those_the_loss_never_reaches():
    from mmv_torch.models.mmv import MMV
    from mmv_torch.train.loop import unused_parameters

    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = MMV(cfg.model)
    state = torch.get_rng_state()
    unused = unused_parameters(model, cfg)
    assert torch.equal(torch.get_rng_state(), state)  # the training RNG is untouched
    assert unused and {n.split(".")[1] for n in unused} == {"audio_at", "text_at"}  # loss.weight_at = 0
    assert all(p.grad is None for p in model.parameters())  # the probe ran on a copy
    assert unused_parameters(model, apply_overrides(cfg, ["loss.weight_at=1"])) == []
    import dataclasses
    import json

    va = cfg.model.spaces["va"]
    shared = apply_overrides(cfg, ["model.graph=shared", f"model.spaces.vt.dim={va.dim}",
                                   f"model.spaces.at.dim={va.dim}",
                                   "model.spaces.vt.first=" + json.dumps(dataclasses.asdict(va.first))])
    assert unused_parameters(MMV(shared.model), shared) == []  # one head per tower, every term uses it
