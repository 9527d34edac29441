"""Throughput of the training input pipeline against the raw decode rate of the same files.

:func:`run_data_bench` runs ``workers`` processes for ``seconds``. Each loads training samples with
:class:`~mmv_torch.data.datasets.PretrainDataset` (the exact code path of training: decode, augment,
log-mel, text) and, interleaved with them so that both see the same machine load, decodes whole
files of the same manifest with PyAV (every video frame, no conversion: the raw decode rate). About
``decode_share`` of each worker's time goes to the raw decoding.

Definitions (JSON keys):

- ``clips_per_s``: samples (clips) per second of one worker while it runs the pipeline (mean over workers);
  ``total_clips_per_s`` the sum over workers. With ``data.clips_per_video = K`` (``--clips-per-video``) each
  opened video gives K clips (``config.clips_per_video``): the limit still counts every clip's frames.
- ``decode_fps``: video frames per second of the raw decode (mean over workers), decoded with the
  same decoder threading as the pipeline (one thread).
- ``decode_limit_clips_per_s``: ``decode_fps / frames_per_clip``, where ``frames_per_clip`` is the
  number of source frames a clip spans (``num_frames / fps`` seconds at the sources' frame rate):
  the rate of a pipeline that did nothing but decode the frames its clips cover.
- ``fraction_of_limit``: ``clips_per_s / decode_limit_clips_per_s``; ``cpu_fraction_of_limit`` is
  the same ratio in CPU time (decode CPU per frame x frames per clip / pipeline CPU per clip), which
  a shared, loaded machine distorts less than wall-clock time.
- ``stages``: wall milliseconds per clip of ``open_seek``, ``video_decode``, ``convert`` (RGB
  conversion), ``augment``, ``audio_decode``, ``log_mel``, ``text`` and ``other`` (the rest of the
  sample: index bookkeeping, tensor packing), and each stage's share.
- ``target_clips_per_s`` (default: 60% of the decode limit) and ``verdict``.
- ``augment_on`` and ``worker_stages``: with ``data.augment_on = "batch"`` (the default) the worker only draws the
  augmentation (stage ``augment``) and returns uint8 frames; the pixels are then augmented per batch
  (:func:`~mmv_torch.data.media.batch_augment.augment_batch`), on the training device in training. That
  stage is timed separately here, in the main process on this CPU with one thread, on batches of
  ``batch_size`` clips collated from the same data: ``batch_stage_clips_per_s``, and
  ``combined_clips_per_s = 1 / (1 / clips_per_s + 1 / batch_stage_clips_per_s)`` (one core doing
  both, as a CPU-only run would) with its ``combined_fraction_of_limit``. ``clips_per_s`` and
  ``fraction_of_limit`` always describe the worker, i.e. the stages in ``worker_stages``.

Stage timing wraps the data set's transform, log-mel and text functions for the duration of the run
(restored afterwards) and uses :func:`mmv_torch.data.media.decode.stage_times` for the decoding stages.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmv_torch.config import DataConfig

STAGES = ("open_seek", "video_decode", "convert", "augment", "audio_decode", "log_mel", "text")
DEFAULT_TARGET_FRACTION = 0.6
"""Without an explicit target, the pipeline should reach this fraction of the decode limit."""


def _timed_function(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    from mmv_torch.data.media.decode import add_stage_time

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add_stage_time(stage, time.perf_counter() - t0)

    return wrapper


def _patch_stage_timers() -> Callable[[], None]:
    """Time the data set's transform, log-mel and text steps; returns the function that undoes it."""
    from mmv_torch.data import datasets

    names = {"train_transform": "augment", "dmvr_train_transform": "augment", "eval_transform": "augment",
             "deferred_augment": "augment",
             "log_mel_spectrogram": "log_mel",
             "nearest_narrations": "text", "encode_narrations": "text"}
    saved = {n: getattr(datasets, n) for n in names}
    for n, stage in names.items():
        setattr(datasets, n, _timed_function(stage, saved[n]))

    def restore() -> None:
        for n, fn in saved.items():
            setattr(datasets, n, fn)

    return restore


def decode_all_frames(path: str) -> tuple[int, float, float, float]:
    """Decode every video frame of ``path`` (one decoder thread, no conversion).

    Returns (frames, wall seconds, CPU seconds of this process, average frame rate of the stream).
    """
    from mmv_torch.data.media.decode import DecodeError, _decode_errors, _open

    container = _open(path)
    t0, c0 = time.perf_counter(), time.process_time()
    with _decode_errors(path, container):
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "SLICE"
        vs.codec_context.thread_count = 1
        rate = vs.average_rate or vs.guessed_rate
        frames = sum(1 for _ in container.decode(vs))
    return frames, time.perf_counter() - t0, time.process_time() - c0, float(rate) if rate else 0.0


def _worker(manifest: str, cfg: DataConfig, seconds: float, worker: int, seed: int, decode_share: float,
            tokenize: Any) -> dict[str, Any]:
    """One worker's measurements (see :func:`run_data_bench`)."""
    import torch

    from mmv_torch.data.datasets import PretrainDataset, SkipRateExceeded, av_errors
    from mmv_torch.data.media.decode import DecodeError, stage_times

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    restore = _patch_stage_timers()
    try:
        ds = PretrainDataset(manifest, cfg, tokenize=tokenize, train=True, seed=seed + worker)
        paths = sorted({e.path for e in ds.entries})
        rng = random.Random(seed * 1000 + worker)
        rng.shuffle(paths)
        order = list(range(len(ds)))
        rng.shuffle(order)
        ds[order[0]]  # warm-up (lazy imports, first allocations): not timed
        r: dict[str, Any] = {"clips": 0, "wall": 0.0, "cpu": 0.0, "frames": 0, "decode_wall": 0.0,
                             "decode_cpu": 0.0, "rate_frames": 0.0, "decode_failures": 0}
        end = time.perf_counter() + seconds
        k = k_item = 0
        with stage_times() as stages:
            while time.perf_counter() < end or r["clips"] == 0 or r["frames"] == 0:
                if r["decode_wall"] <= decode_share * (r["decode_wall"] + r["wall"]) and len(paths) > 0:
                    path = paths[k % len(paths)]
                    k += 1
                    try:
                        n, wall, cpu, rate = decode_all_frames(path)  # times no stage
                    except (DecodeError, av_errors()):
                        r["decode_failures"] += 1
                        paths.remove(path)
                        continue
                    r["frames"] += n
                    r["decode_wall"] += wall
                    r["decode_cpu"] += cpu
                    r["rate_frames"] += rate * n
                    continue
                if not paths:
                    raise SkipRateExceeded(f"no file of {manifest} decodes")
                t0, c0 = time.perf_counter(), time.process_time()
                got = ds[order[k_item % len(order)]]
                r["wall"] += time.perf_counter() - t0
                r["cpu"] += time.process_time() - c0
                r["clips"] += len(got) if isinstance(got, list) else 1  # data.clips_per_video clips per item
                k_item += 1
        r["stages"] = dict(stages)
        r["skips"] = ds.tracker.skips
        return r
    finally:
        restore()
        torch.set_num_threads(threads)


def _run_workers(manifest: str, cfg: DataConfig, workers: int, seconds: float, seed: int, decode_share: float,
                 tokenize: Any) -> list[dict[str, Any]]:
    args = [(manifest, cfg, seconds, w, seed, decode_share, tokenize) for w in range(workers)]
    if workers == 1:
        return [_worker(*args[0])]
    import multiprocessing as mp

    # Fresh interpreters: a forked child of a process that has run PyAV/torch threads can deadlock.
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(_worker, args)


def _summarise(per: list[dict[str, Any]], cfg: DataConfig, target: float | None) -> dict[str, Any]:
    clips = sum(r["clips"] for r in per)
    wall = sum(r["wall"] for r in per)
    rates = [r["clips"] / r["wall"] for r in per]
    fps_per = [r["frames"] / r["decode_wall"] for r in per]
    frames = sum(r["frames"] for r in per)
    source_fps = sum(r["rate_frames"] for r in per) / frames
    frames_per_clip = cfg.num_frames / cfg.fps * source_fps
    clips_per_s = sum(rates) / len(rates)
    decode_fps = sum(fps_per) / len(fps_per)
    limit = decode_fps / frames_per_clip
    cpu_ms_per_clip = 1000 * sum(r["cpu"] for r in per) / clips
    decode_cpu_ms_per_frame = 1000 * sum(r["decode_cpu"] for r in per) / frames
    stage_ms = {s: 1000 * sum(r["stages"].get(s, 0.0) for r in per) / clips for s in STAGES}
    stage_ms["other"] = max(0.0, 1000 * wall / clips - sum(stage_ms.values()))
    total_ms = sum(stage_ms.values())
    tgt = DEFAULT_TARGET_FRACTION * limit if target is None else float(target)
    ok = clips_per_s >= tgt
    return {
        "clips_per_s": clips_per_s,
        "clips_per_s_by_worker": rates,
        "total_clips_per_s": sum(rates),
        "cpu_ms_per_clip": cpu_ms_per_clip,
        "decode_fps": decode_fps,
        "decode_cpu_ms_per_frame": decode_cpu_ms_per_frame,
        "source_fps": source_fps,
        "frames_per_clip": frames_per_clip,
        "decode_limit_clips_per_s": limit,
        "fraction_of_limit": clips_per_s / limit,
        "cpu_fraction_of_limit": decode_cpu_ms_per_frame * frames_per_clip / cpu_ms_per_clip,
        "stages": {s: {"ms_per_clip": v, "share": v / total_ms if total_ms else 0.0} for s, v in stage_ms.items()},
        "target_clips_per_s": tgt,
        "target_source": "given" if target is not None else f"{DEFAULT_TARGET_FRACTION:.0%} of the decode limit",
        "verdict": (f"{'meets' if ok else 'below'} target: {clips_per_s:.2f} clips/s per worker "
                    f"{'>=' if ok else '<'} {tgt:.2f} ({clips_per_s / limit:.0%} of the decode limit "
                    f"{limit:.2f} clips/s)"),
        "meets_target": ok,
        "clips": clips,
        "decoded_frames": frames,
        "skips": sum(r["skips"] for r in per),
        "decode_failures": sum(r["decode_failures"] for r in per),
    }


def measure_batch_stage(manifest: str, cfg: DataConfig, seconds: float, batch_size: int = 8, seed: int = 0,
                        tokenize: Any = None) -> dict[str, Any]:
    """Clips per second of :func:`~mmv_torch.data.media.batch_augment.augment_batch` on this CPU (one thread) on
    collated batches of ``batch_size`` clips of ``manifest`` (loaded untimed), for about ``seconds``."""
    import torch

    from mmv_torch.data.datasets import PretrainDataset
    from mmv_torch.data.media.batch_augment import augment_batch, collate_samples

    ds = PretrainDataset(manifest, dataclasses.replace(cfg, clips_per_video=1), tokenize=tokenize, train=True,
                         seed=seed + 7919)
    batch = collate_samples([ds[i % len(ds)] for i in range(batch_size)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        augment_batch(batch)  # warm-up
        wall, reps = 0.0, 0
        while wall < seconds or reps < 2:
            t0 = time.perf_counter()
            augment_batch(batch)
            wall += time.perf_counter() - t0
            reps += 1
    finally:
        torch.set_num_threads(threads)
    return {"batch_stage_clips_per_s": reps * batch_size / wall, "batch_stage_ms_per_clip": 1000 * wall /
            (reps * batch_size), "batch_stage_batch_size": batch_size, "batch_stage_threads": 1,
            "batch_stage_frames_shape": list(batch["frames"].shape)}


def run_data_bench(manifest: str | Path, cfg: DataConfig, workers: int = 1, seconds: float = 20.0,
                   target_clips_per_s: float | None = None, *, tokenize: Any = None, seed: int = 0,
                   decode_share: float = 0.25) -> dict[str, Any]:
    """Measure the training input pipeline of ``manifest`` against the raw decode rate (module doc).

    Args:
        manifest: pretraining manifest (JSONL) whose videos are loaded.
        cfg: clip, augmentation and audio settings (as in training).
        workers: processes run in parallel (1: in this process).
        seconds: how long each worker runs (at least one clip and one file are always measured).
        target_clips_per_s: per-worker rate for the verdict; None: 60% of the decode limit.
        tokenize: narration tokenizer as for :class:`~mmv_torch.data.datasets.PretrainDataset`.
        seed: sampling seed (worker ``w`` uses ``seed + w``).
        decode_share: fraction of each worker's time spent on the raw decode measurement.

    Returns:
        The JSON-serialisable result (keys in the module doc) plus ``config``, ``machine`` and
        ``settings``. Raises ``ValueError`` for bad arguments, a manifest that cannot be read, or
        data of which nothing decodes.
    """
    if workers < 1:
        raise ValueError(f"data bench: --workers must be >= 1, got {workers}")
    if not seconds > 0:
        raise ValueError(f"data bench: --seconds must be > 0, got {seconds}")
    if target_clips_per_s is not None and not target_clips_per_s > 0:
        raise ValueError(f"data bench: --target-clips-per-s must be > 0, got {target_clips_per_s}")
    if not 0 < decode_share < 1:
        raise ValueError(f"data bench: decode_share must be in (0, 1), got {decode_share}")
    import av
    import torch

    from mmv_torch.data.datasets import SkipRateExceeded
    from mmv_torch.data.manifests import read_pretrain_manifest

    if not read_pretrain_manifest(manifest):
        raise ValueError(f"data bench: manifest {manifest} lists no videos")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    try:
        per = _run_workers(str(manifest), cfg, workers, float(seconds), seed, decode_share, tokenize)
    except SkipRateExceeded as e:
        raise ValueError(f"data bench: {manifest}: {e}") from e
    out = _summarise(per, cfg, target_clips_per_s)
    out["augment_on"] = "batch" if cfg.batch_augment else "worker"
    out["worker_stages"] = [st for st in STAGES if not cfg.batch_augment or st != "augment"] + (
        ["augment (draw only)"] if cfg.batch_augment else [])
    if cfg.batch_augment:
        out.update(measure_batch_stage(str(manifest), cfg, max(1.0, seconds / 4), seed=seed, tokenize=tokenize))
        out["combined_clips_per_s"] = 1.0 / (1.0 / out["clips_per_s"] + 1.0 / out["batch_stage_clips_per_s"])
        out["combined_fraction_of_limit"] = out["combined_clips_per_s"] / out["decode_limit_clips_per_s"]
    out["config"] = {k: getattr(cfg, k) for k in ("num_frames", "fps", "crop_size", "resize_short", "augment_on",
                                                  "scale_jitter", "color_jitter", "audio_seconds",
                                                  "sample_rate", "num_mel_bins", "clips_per_video")}
    out["settings"] = {"manifest": str(manifest), "workers": workers, "seconds": float(seconds),
                       "decode_share": decode_share, "seed": seed, "elapsed_s": time.perf_counter() - t0}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "load_before": load_before,
                      "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                      "torch": torch.__version__, "pyav": av.__version__,
                      "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "")}
    return out


def format_report(result: dict[str, Any]) -> str:
    """A human-readable summary of a :func:`run_data_bench` result."""
    r = result
    lines = [
        f"pipeline: {r['clips_per_s']:.2f} clips/s per worker, {r['total_clips_per_s']:.2f} in total "
        f"({r['settings']['workers']} workers, {r['clips']} clips, {r['config']['clips_per_video']} per opened "
        f"video), {r['cpu_ms_per_clip']:.1f} ms CPU/clip",
        f"raw decode: {r['decode_fps']:.0f} frames/s per worker ({r['decode_cpu_ms_per_frame']:.3f} ms CPU/frame); "
        f"a clip spans {r['frames_per_clip']:.1f} source frames -> limit {r['decode_limit_clips_per_s']:.2f} "
        f"clips/s",
        f"fraction of the decode limit: {r['fraction_of_limit']:.0%} (wall), {r['cpu_fraction_of_limit']:.0%} (CPU)",
        "stages (wall ms/clip): " + ", ".join(f"{k} {v['ms_per_clip']:.1f} ({v['share']:.0%})"
                                              for k, v in r["stages"].items()),
        r["verdict"],
    ]
    if r.get("augment_on") == "batch":
        lines.insert(3, f"augment_on=batch: the worker ran {', '.join(r['worker_stages'])}; batch stage on this CPU "
                     f"(1 thread, {r['batch_stage_batch_size']} clips/batch): {r['batch_stage_clips_per_s']:.2f} "
                     f"clips/s; worker + batch stage on one core: {r['combined_clips_per_s']:.2f} clips/s "
                     f"({r['combined_fraction_of_limit']:.0%} of the decode limit)")
    m = r["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpus']} CPUs, load {m['load_before']} -> {m['load_after']}, "
                 f"torch {m['torch']}, PyAV {m['pyav']}, THP_MEM_ALLOC_ENABLE={m['thp_mem_alloc'] or 'unset'}")
    return "\n".join(lines)
