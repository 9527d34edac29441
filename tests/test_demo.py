"""The end-to-end demo at seconds-long sizes: data, training, evaluation and the report."""

import dataclasses
import functools
import json

import numpy as np
import pytest

from mmv_torch.config import get_preset
from mmv_torch.demo import (
    DEMO_OVERRIDES,
    QUICK,
    DemoSettings,
    demo_config,
    motion_given_object,
    prepare_run_dir,
    run_demo,
)


def test_quick_demo_writes_report_and_plots(quick_demo):
    folder, results = quick_demo
    for name in ("report.md", "results.json", "loss.png", "retrieval.png"):
        assert (folder / name).is_file(), name
    saved = json.loads((folder / "results.json").read_text())
    for which in ("trained", "random_init"):
        t2v = saved[which]["retrieval"]["t2v"]
        assert t2v["queries"] == 2 * QUICK.num_retrieval and 1 <= t2v["median_rank"] <= QUICK.num_retrieval
        for task in ("motion", "sound"):
            assert 0.0 <= saved[which][task]["metrics"]["test_top1"] <= 1.0
        # 8 retrieval clips, one per held-out combination: each held-out object has two, with two motions
        mgo = saved[which]["retrieval"]["motion_given_object"]
        assert mgo["queries"] == 2 * QUICK.num_retrieval and mgo["chance"] == 0.5 and 0.0 <= mgo["accuracy"] <= 1.0
    assert results["train"]["steps"] == QUICK.steps
    report = (folder / "report.md").read_text()
    assert "text->video R@1" in report and "random init" in report and "held-out motion, zero-shot" in report
    # the demo ends with a search index of its retrieval clips
    from mmv_torch.index.query import open_searcher

    hits = open_searcher(folder / "index").search("text", k=3, text="okay so the red ball bounces")
    assert hits and all(h["path"].endswith(".mp4") for h in hits)


def test_a_demo_with_other_settings_moves_the_finished_run_aside(quick_demo_copy):
    # Other settings (here the training length): the first run is moved aside, not resumed or deleted.
    folder = quick_demo_copy
    assert not list(folder.glob("run.old-*"))
    again = run_demo(folder, dataclasses.replace(QUICK, steps=QUICK.steps + 1), progress=False, say=lambda m: None)
    assert again["train"]["steps"] == QUICK.steps + 1
    old = list(folder.glob("run.old-*"))
    assert len(old) == 1 and any((old[0] / "checkpoints").glob("*.pt"))


def test_prepare_run_dir_resumes_only_a_run_with_the_same_settings(tmp_path):
    run = tmp_path / "run"
    msgs = []
    assert prepare_run_dir(run, {"a": (1, 2)}, msgs.append) is False  # new folder
    assert prepare_run_dir(run, {"a": [1, 2]}, msgs.append) is False  # same settings, no checkpoint yet
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_000001.pt").write_bytes(b"x")
    assert prepare_run_dir(run, {"a": [1, 2]}, msgs.append) is True
    assert not msgs
    assert prepare_run_dir(run, {"a": [1, 3]}, msgs.append) is False
    moved = list(tmp_path.glob("run.old-*"))
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "step_000001.pt").is_file()
    assert run.is_dir() and not (run / "checkpoints").exists() and "moved to" in msgs[0]
    # a folder from before the stamp existed (no demo_stamp.json) is moved aside too
    (run / "demo_stamp.json").unlink()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_000002.pt").write_bytes(b"x")
    assert prepare_run_dir(run, {"a": [1, 3]}, msgs.append) is False
    assert len(list(tmp_path.glob("run.old-*"))) == 2  # both moved folders are kept, even when moved within one second


def test_demo_config_applies_the_demo_overrides_then_the_settings_overrides():
    cfg = demo_config(DemoSettings())
    tiny = get_preset("tiny")

    def at(c, key):
        return functools.reduce(getattr, key.split("."), c)

    assert {k: at(cfg, k) for k in DEMO_OVERRIDES} == DEMO_OVERRIDES
    assert all(at(tiny, k) != v for k, v in DEMO_OVERRIDES.items())  # each override changes the preset
    cfg = demo_config(DemoSettings(overrides=("model.video.backbone=s3d", "data.color_jitter=0.4")))
    assert (cfg.model.video.backbone, cfg.data.color_jitter, cfg.train.steps) == ("s3d", 0.4, DemoSettings().steps)
    with pytest.raises(ValueError, match="unknown config key"):
        demo_config(DemoSettings(overrides=("data.colour_jitter=0.4",)))


def test_motion_given_object_against_a_loop_over_the_candidates():
    rng = np.random.default_rng(0)
    objects = ["ball", "ball", "ball", "cube", "cube", "star"]
    motions = ["spin", "fall", "fall", "spin", "bounce", "orbit"]
    caption_video = np.array([0, 1, 2, 3, 4, 5, 0, 4])
    sim = rng.standard_normal((len(caption_video), len(objects)))
    got = motion_given_object(sim, caption_video, objects, motions)
    hits, chance = 0, 0.0
    for row, video in enumerate(caption_video):
        candidates = [j for j in range(len(objects)) if objects[j] == objects[video]]
        best = max(candidates, key=lambda j: sim[row, j])
        hits += motions[best] == motions[video]
        chance += sum(motions[j] == motions[video] for j in candidates) / len(candidates)
    assert got == {"accuracy": hits / 8, "chance": pytest.approx(chance / 8), "queries": 8}
    # a video of another object scoring highest does not count: only the object's own clips compete
    sim[:, 5] = 10.0
    assert motion_given_object(sim, caption_video, objects, motions)["accuracy"] == got["accuracy"]
    # the right clip scoring highest among its object's clips is always a hit
    sim = np.eye(6)[caption_video]
    assert motion_given_object(sim, caption_video, objects, motions)["accuracy"] == 1.0
