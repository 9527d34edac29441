"""The paper's named benchmark protocols: their settings reach the data (windows decoded inside the segments,
clip protocol, classifier), the metrics are the ones they name (checked against scikit-learn), retrieval
counts every caption, and a manifest that does not fit is a clear error or a warning in the report."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

import mmv_torch.data.datasets as datasets_mod
import mmv_torch.data.probe_sampling as protocols_mod
import mmv_torch.eval.linear_probe as probe_mod
from mmv_torch import cli
from mmv_torch.cli import eval as cli_eval
from mmv_torch.config import DataConfig, get_preset
from mmv_torch.data.sources import manifest_source
from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary
from mmv_torch.eval.benchmarks import LinearOverrides, linear_benchmark, linear_overrides, retrieval_benchmark
from mmv_torch.eval.metrics import d_prime, mean_auc, roc_auc
from mmv_torch.eval.paper_protocols import (
    CODE,
    DATA,
    GIVEN,
    LINEAR_NAMES,
    OURS,
    PAPER,
    PAPER_PROTOCOLS,
    RETRIEVAL_NAMES,
    detect_protocol,
    get_protocol,
)
from mmv_torch.eval.pipelines import LoaderOptions
from tests.helpers.media_utils import make_video, make_wav

CFG = dataclasses.replace(get_preset("tiny"), data=DataConfig(
    num_frames=4, fps=8.0, crop_size=32, eval_crop_size=32, resize_short=36, audio_seconds=0.5, num_mel_bins=20,
    sample_rate=8000, num_candidates=3, max_words=5))
OPTS = LoaderOptions(batch_size=4, workers=0, seed=0)
WORDS = ["<pad>", "onion", "cut", "dog", "runs", "girl", "jumps", "soup", "stir"]


class Features(nn.Module):
    """A stand-in network with deterministic, content-dependent embeddings in every space: audio, the
    log-mel averaged over time (it tells tones apart); video, per-channel means and variances; text, a bag
    of words."""

    def forward(self, video=None, audio=None, text=None, word_mask=None):
        if audio is not None:
            f = audio.mean(dim=2).flatten(1)
            return {"audio": {s: f for s in ("va", "at", "repr")}}
        if video is not None:
            f = torch.cat([video.mean(dim=(2, 3, 4)), video.var(dim=(2, 3, 4)), video[:, :, 0].mean(dim=(2, 3))], 1)
            return {"video": {s: torch.cat([f, f], 1)[:, :len(WORDS)] for s in ("va", "vt", "repr")}}
        bag = torch.zeros(text.shape[0], len(WORDS))
        bag.scatter_add_(1, text, torch.ones(text.shape, dtype=torch.float32))
        bag[:, 0] = 0.5
        return {"text": {s: bag for s in ("vt", "at")}}


def _write(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _count(monkeypatch, module, *names):
    """Record (path, start, args) of every window decoded through ``module.<name>`` (``load_clips``: one record
    per window) and pass the calls through."""
    calls = []

    def wrap(name, real):
        def wrapped(src, start, *args, **kwargs):
            for s in start if name == "load_clips" else [start]:
                calls.append((str(src), float(s), args))
            return real(src, start, *args, **kwargs)
        return wrapped

    for name in names:
        monkeypatch.setattr(module, name, wrap(name, getattr(module, name)))
    return calls


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """Tones of two pitches: 1-s clips and one 3-s file for segment windows."""
    root = tmp_path_factory.mktemp("tones")
    for i in range(10):
        make_wav(root / f"c{i}.wav", seconds=1.0, freq=300.0 if i % 2 else 1500.0)
    make_wav(root / "long.wav", seconds=3.0, freq=800.0)
    return root


def test_registry_names_sources_and_cli_agree():
    assert cli_eval.LINEAR_PROTOCOLS == LINEAR_NAMES and cli_eval.RETRIEVAL_PROTOCOLS == RETRIEVAL_NAMES
    assert set(PAPER_PROTOCOLS) == {"kinetics600-linear", "vggsound-linear", "audioset-mlp", "esc50", "msrvtt-1ka",
                                    "msrvtt-full", "youcook2-val"}
    for p in PAPER_PROTOCOLS.values():
        assert {s.source for s in p.settings.values()} <= {PAPER, CODE, DATA, OURS}, p.name
        assert "metric" in p.settings
    with pytest.raises(ValueError, match="not a paper protocol of eval retrieval"):
        get_protocol("esc50", "retrieval")
    parser = cli.build_parser()
    assert parser.parse_args(["eval", "linear", "--checkpoint", "x", "--protocol", "audioset-mlp"]).train_epochs is None
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "retrieval", "--checkpoint", "x", "--protocol", "esc50"])


def test_auc_and_d_prime_match_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((40, 4)) < 0.3).astype(np.float32)
    s = np.round(rng.normal(size=(40, 4)) + y, 1)  # rounding makes ties
    y[:, 3] = 1.0  # no negative: left out
    for c in range(3):
        assert roc_auc(s[:, c], y[:, c]) == pytest.approx(roc_auc_score(y[:, c], s[:, c]), abs=1e-12)
    got = mean_auc(s, y)
    want = np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(3)])
    assert got["classes"] == 3 and got["AUC"] == pytest.approx(want, abs=1e-12)
    from scipy.stats import norm
    assert got["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(want), rel=1e-9)
    assert d_prime(1.0) is None


def test_audioset_mlp_averages_windows_inside_segments_and_scores_map(sounds, tmp_path, monkeypatch):
    lines = [{"audio": str(sounds / f"c{i}.wav"), "labels": ["low" if i % 2 else "high"] + (["x"] if i % 3 else []),
              "split": "train" if i < 6 else "test", "dataset": "audioset"} for i in range(10)]
    lines.append({"audio": str(sounds / "long.wav"), "start": 1.0, "end": 2.5, "labels": ["mid", "x"], "split": "test",
                  "dataset": "audioset"})
    lines.append({"audio": str(sounds / "long.wav"), "start": 0.5, "end": 2.0, "labels": ["mid"], "split": "train",
                  "dataset": "audioset"})
    source = manifest_source(_write(tmp_path / "as.jsonl", lines)).as_modality("audio")
    proto = detect_protocol(source, "linear", "audio")
    assert proto is not None and proto.name == "audioset-mlp"
    assert detect_protocol(source, "linear", "video") is None  # the protocol takes audio only
    calls = _count(monkeypatch, datasets_mod, "load_audio")
    seen = {}
    real_probe = probe_mod.multilabel_probe

    def capture(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        seen["res"] = real_probe(*args, **kwargs)
        return seen["res"]

    monkeypatch.setattr(probe_mod, "multilabel_probe", capture)
    given = LinearOverrides(test_windows=3, probe={"epochs": 20, "hidden": (8,)})
    with pytest.warns(UserWarning, match="12 of 12 lines|where audioset-mlp has"):
        r = linear_benchmark(Features(), CFG, source, OPTS, proto, modality="audio", given=given)
    # every segment decoded in 3 windows of 0.5 s, linearly spaced inside its window, for training and test alike
    assert len(calls) == 12 * 3
    long_starts = sorted(s for p, s, _ in calls if p.endswith("long.wav"))
    assert long_starts == pytest.approx([0.5, 1.0, 1.0, 1.5, 1.5, 2.0])  # [1, 2.5] and [0.5, 2]
    assert all(a == (0.5, 8000) for _, _, a in calls)
    # train and test features are one embedding per segment; mAP and AUC against scikit-learn
    xtr, ytr, xte, yte = seen["args"]
    assert xtr.shape[0] == 7 and xte.shape == (5, 20) and seen["kwargs"]["hidden"] == (8,)
    from sklearn.metrics import average_precision_score, roc_auc_score
    p = seen["res"]["test_scores"]
    aps = [average_precision_score(yte[:, c], p[:, c]) for c in range(yte.shape[1]) if yte[:, c].any()]
    aucs = [roc_auc_score(yte[:, c], p[:, c]) for c in range(yte.shape[1]) if 0 < yte[:, c].sum() < len(yte)]
    m = r["metrics"]
    assert m["test_mAP"] == pytest.approx(np.mean(aps)) and m["test_AUC"] == pytest.approx(np.mean(aucs))
    s = r["settings"]
    assert s["segment_windows"] == 3 and s["train_segments"] == 7 and s["test_segments"] == 5 and s["hidden"] == [8]
    rec = s["paper_protocol"]
    assert rec["name"] == "audioset-mlp" and rec["settings"]["segment_windows"] == {
        "value": 3, "source": GIVEN, "protocol_value": 10}
    assert rec["settings"]["metric"]["source"] == PAPER and rec["settings"]["hidden"]["source"] == GIVEN
    assert any("10 of 12 lines have no start/end window" in w for w in rec["warnings"])
    assert any("classes where audioset-mlp has 527" in w for w in rec["warnings"])


def test_audioset_mlp_refuses_single_label_lines(sounds, tmp_path):
    lines = [{"audio": str(sounds / f"c{i}.wav"), "label": "low", "split": "train" if i < 5 else "test"}
             for i in range(10)]
    source = manifest_source(_write(tmp_path / "x.jsonl", lines))
    with pytest.raises(ValueError, match="needs 'labels'"):
        linear_benchmark(Features(), CFG, source, OPTS, PAPER_PROTOCOLS["audioset-mlp"], modality="audio")
    with pytest.raises(ValueError, match="takes --modality audio"):
        linear_benchmark(Features(), CFG, source, OPTS, PAPER_PROTOCOLS["audioset-mlp"], modality="video")


def test_esc50_five_folds_with_windows(sounds, tmp_path, monkeypatch):
    lines = [{"audio": str(sounds / f"c{i}.wav"), "label": "low" if i % 2 else "high", "fold": i // 2 + 1,
              "dataset": "esc50"} for i in range(10)]
    source = manifest_source(_write(tmp_path / "esc.jsonl", lines))
    proto = detect_protocol(source, "linear", "audio")
    assert proto is not None and proto.name == "esc50"
    calls = _count(monkeypatch, datasets_mod, "load_audio")
    with pytest.warns(UserWarning, match="10 clips where esc50 has 2,000"):
        r = linear_benchmark(Features(), CFG, source, OPTS, proto, modality="audio",
                             given=LinearOverrides(test_windows=4))
    assert len(calls) == 10 * 4  # four linearly spaced 0.5-s windows of every 1-s clip
    assert sorted({round(s, 3) for _, s, _ in calls}) == pytest.approx([0.0, 0.167, 0.333, 0.5])
    assert sorted(r["per_fold"]) == ["1", "2", "3", "4", "5"]
    assert r["metrics"]["test_top1_mean"] == pytest.approx(np.mean([f["test_top1"] for f in r["per_fold"].values()]))
    assert r["metrics"]["test_top1_mean"] == 1.0  # the two pitches are separable
    s = r["settings"]
    assert s["test_windows"] == 4 and s["classifier"] == "StandardScaler+LinearSVC" and len(s["C_grid"]) > 1
    assert s["paper_protocol"]["settings"]["folds"]["source"] == DATA
    no_folds = manifest_source(_write(tmp_path / "nf.jsonl", [{k: v for k, v in x.items() if k != "fold"}
                                                              for x in lines]))
    with pytest.raises(ValueError, match="needs a 'fold' on every line"):
        linear_benchmark(Features(), CFG, no_folds, OPTS, proto, modality="audio")
    with pytest.raises(ValueError, match="--multilabel does not apply"):
        linear_benchmark(Features(), CFG, source, OPTS, proto, modality="audio", given=LinearOverrides(multilabel=True))


def test_vggsound_linear_audio_takes_the_split_and_segment(sounds, tmp_path, monkeypatch):
    lines = [{"audio": str(sounds / f"c{i}.wav"), "label": "low" if i % 2 else "high",
              "split": "train" if i < 6 else "test", "dataset": "vggsound"} for i in range(10)]
    lines[8] = {**lines[8], "audio": str(sounds / "long.wav"), "start": 2.0, "end": 3.0}
    source = manifest_source(_write(tmp_path / "vgg.jsonl", lines)).as_modality("audio")
    proto = detect_protocol(source, "linear", "audio")
    assert proto is not None and proto.name == "vggsound-linear"
    calls = _count(monkeypatch, datasets_mod, "load_audio")
    with pytest.warns(UserWarning):
        r = linear_benchmark(Features(), CFG, source, OPTS, proto, modality="audio",
                             given=LinearOverrides(test_windows=2, probe={"weight_decays": (0.01,), "seed": 0}))
    assert len(calls) == 6 + 4 * 2  # one random window per training clip (one epoch), two per test clip
    assert sorted(s for p, s, _ in calls if p.endswith("long.wav")) == pytest.approx([2.0, 2.5])
    s = r["settings"]
    assert s["classifier"] == "logistic regression (adam)" and s["weight_decay"] == 0.01 and s["test_windows"] == 2
    assert s["train_epochs"] == 1 and r["task"].startswith("vggsound-linear")
    ps = s["paper_protocol"]["settings"]
    assert ps["classifier"] == {"value": "logistic", "source": OURS, "note": ps["classifier"]["note"]}
    assert ps["probe"]["source"] == GIVEN and ps["probe"]["value"]["weight_decays"] == [0.01]
    assert 0.0 <= r["metrics"]["test_top1"] <= 1.0
    with pytest.raises(ValueError, match="--C do not apply"):
        linear_benchmark(Features(), CFG, source, OPTS, proto, modality="audio",
                         given=LinearOverrides(probe={"cs": (1.0,)}))


def test_kinetics600_linear_uses_the_clip_protocol(tmp_path, monkeypatch):
    paths = []
    for i in range(6):
        paths.append(make_video(tmp_path / f"k{i}.mp4", num_frames=30, fps=10, size=(40, 32), acodec=None))
    lines = [{"video": str(p), "label": "a" if i % 2 else "b", "split": "train" if i < 4 else "test",
              "start": 0.5, "end": 2.5, "dataset": "kinetics"} for i, p in enumerate(paths)]
    source = manifest_source(_write(tmp_path / "k.jsonl", lines))
    proto = detect_protocol(source, "linear", "video")
    assert proto is not None and proto.name == "kinetics600-linear"
    calls = _count(monkeypatch, protocols_mod, "load_clips")
    with pytest.warns(UserWarning, match="2 classes where kinetics600-linear has 600"):
        r = linear_benchmark(Features(), CFG, source, OPTS, proto, given=LinearOverrides(test_windows=2))
    assert len(calls) == 4 + 2 * 2
    # official-cv: 32 frames at 25/2 fps from inside the 2-s segment
    assert all(a[:2] == (32, 12.5) and 0.5 <= s < 2.5 for _, s, a in calls)
    p = r["settings"]["protocol"]
    assert (p["name"], p["num_frames"], p["stride"], p["crop_size"]) == ("official-cv", 32, 2, 224)
    rec = r["settings"]["paper_protocol"]
    assert rec["settings"]["clip_protocol"]["value"] == "official-cv" and rec["settings"]["train_epochs"]["value"] == 1
    assert set(r["metrics"]) == {"train_top1", "train_top5", "test_top1", "test_top5"}
    train_only = manifest_source(_write(tmp_path / "t.jsonl", [x for x in lines if x["split"] == "train"]))
    with pytest.raises(ValueError, match=r"needs lines of split \['test'\]"):
        linear_benchmark(Features(), CFG, train_only, OPTS, proto)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ret")
    return [make_video(root / f"v{i}.mp4", num_frames=20 + 4 * i, fps=10, size=(40, 32), acodec=None)
            for i in range(3)]


def _tokenizer():
    return Tokenizer(Vocabulary(WORDS), max_words=5)


def test_msrvtt_full_counts_every_caption_and_1ka_warns(videos, tmp_path):
    caps = [["cut onion", "stir soup", "onion soup"], ["dog runs", "girl jumps"], ["girl runs", "dog jumps", "cut"]]
    lines = [{"video": str(v), "captions": c, "id": f"video{i}", "dataset": "msrvtt"}
             for i, (v, c) in enumerate(zip(videos, caps))]
    source = manifest_source(_write(tmp_path / "full.jsonl", lines))
    proto = detect_protocol(source, "retrieval")
    assert proto is not None and proto.name == "msrvtt-full"
    with pytest.warns(UserWarning, match="3 videos where msrvtt-full has 2,990"):
        r = retrieval_benchmark(Features(), CFG, source, OPTS, proto, tokenizer=_tokenizer(), windows=2)
    assert r["metrics"]["text2video"]["queries"] == 8 and r["metrics"]["video2text"]["queries"] == 3
    assert r["settings"]["captions"] == 8 and r["settings"]["windows"] == 2
    assert r["settings"]["paper_protocol"]["settings"]["windows"]["source"] == GIVEN
    assert set(r["metrics"]["text2video"]) >= {"R@1", "R@5", "R@10", "median_rank"}
    # the 1k-A protocol on the same lines: still every caption, with a warning in the report
    with pytest.warns(UserWarning):
        r = retrieval_benchmark(Features(), CFG, source, OPTS, PAPER_PROTOCOLS["msrvtt-1ka"], tokenizer=_tokenizer(),
                                windows=1)
    assert any("3 of 3 videos have several captions" in w for w in r["settings"]["paper_protocol"]["warnings"])
    one = manifest_source(_write(tmp_path / "1ka.jsonl", [{**x, "captions": x["captions"][:1]} for x in lines]))
    assert detect_protocol(one, "retrieval").name == "msrvtt-1ka"
    bare = manifest_source(_write(tmp_path / "bare.jsonl", [{"video": str(v)} for v in videos]))
    with pytest.raises(ValueError, match="needs a 'caption' or 'captions' on every line"):
        retrieval_benchmark(Features(), CFG, bare, OPTS, proto, tokenizer=_tokenizer())


def test_youcook2_val_decodes_inside_each_segment(videos, tmp_path, monkeypatch):
    segs = [(0.0, 1.0, "cut onion"), (1.0, 2.0, "stir soup"), (0.5, 2.5, "dog runs")]
    lines = [{"video": str(videos[2]), "start": a, "end": b, "caption": c, "segment": f"s{i}", "dataset": "youcook2"}
             for i, (a, b, c) in enumerate(segs)]
    source = manifest_source(_write(tmp_path / "yc.jsonl", lines))
    proto = detect_protocol(source, "retrieval")
    assert proto is not None and proto.name == "youcook2-val"
    calls = _count(monkeypatch, datasets_mod, "load_clips")
    with pytest.warns(UserWarning, match="3 segments where youcook2-val has 3,350"):
        r = retrieval_benchmark(Features(), CFG, source, OPTS, proto, tokenizer=_tokenizer(), windows=3)
    assert len(calls) == 3 * 3
    span = CFG.data.num_frames / CFG.data.fps
    for (a, b, _), starts in zip(segs, (sorted(s for _, s, _ in calls)[:3], None, None)):
        if starts is not None:
            assert starts == pytest.approx([a, a + (b - a - span) / 2, b - span])
    for a, b, _ in segs:  # every segment has its three clips inside its own window
        inside = [s for _, s, _ in calls if a - 1e-9 <= s and s + span <= b + 1e-9]
        assert len(inside) >= 3
    assert r["metrics"]["text2video"]["queries"] == 3 and r["settings"]["segments"] == 3
    rec = r["settings"]["paper_protocol"]
    assert rec["settings"]["windows"]["value"] == 3 and rec["settings"]["video_side"]["source"] == DATA


def test_linear_overrides_from_options():
    g = linear_overrides(None, 3, None, None, "0.1", "16,8", 100, 7)
    assert g.test_windows == 3 and g.probe == {"seed": 7, "weight_decays": (0.1,), "hidden": (16, 8)}
    assert linear_overrides(None, None, None, None, None, None, 5, 0).probe == {"seed": 0, "epochs": 5}
    with pytest.raises(ValueError, match="--C: expected comma-separated numbers"):
        linear_overrides(None, None, None, "x", None, None, 100, 0)
