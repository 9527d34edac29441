"""Data pipeline throughput: decode + augment clips/s, one process and through a DataLoader.

Setting of the paper: 32 frames at 10 fps (3.2 s) cropped to 200x200, 2 s of audio at 16 kHz as an
80-bin log-mel, from a 25 fps 320x240 H.264 + AAC source (written here with PyAV into a temp dir).
"ours" is ``mmv_torch.data`` (seek to the clip, decode only its frames); "naive" decodes the whole file
first and then picks the frames and audio. Run: ``python benchmarks/bench_data.py``.

``--write-set DIR`` instead writes the data set of the pipeline benchmark ``mmv-torch data bench`` /
``python -m mmv_torch.data.tools.bench``: ``--files`` (20) such sources of 10-20 s with 2-s key frames and
their manifest ``DIR/manifest.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmv_torch.config import DataConfig
from mmv_torch.data.datasets import PretrainDataset
from mmv_torch.data.media.audio import log_mel_spectrogram
from mmv_torch.data.media.decode import load_clip, resample
from mmv_torch.data.media.transforms import random_start_time, train_transform


def make_source(path: Path, seconds: float, gop: int, width: int = 320, height: int = 240, fps: int = 25) -> None:
    """A textured, moving 320x240 25 fps H.264 video with 44.1 kHz stereo AAC (realistic bitrate)."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    tex = ((tex.astype(np.float32) + np.roll(tex, 1, 0) + np.roll(tex, 1, 1)) / 3).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = gop
        vs.options = {"preset": "veryfast", "crf": "23"}
        aus = out.add_stream("aac", rate=44100, layout="stereo")
        n = int(seconds * fps)
        for i in range(n):
            ox, oy = (3 * i) % width, (2 * i) % height
            img = tex[oy:oy + height, ox:ox + width].copy()
            cx, cy = width / 2 + 80 * np.sin(i / 10), height / 2 + 50 * np.cos(i / 13)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (255, 64, 32)
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            for p in vs.encode(fr):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        total = int(seconds * 44100)
        t = np.arange(total) / 44100
        sig = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(total)).astype(np.float32)
        for s in range(0, total, 1024):
            part = np.ascontiguousarray(np.repeat(sig[None, s:s + 1024], 2, 0))
            fr = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = 44100, s, Fraction(1, 44100)
            for p in aus.encode(fr):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)


def write_bench_set(out_dir: Path, files: int = 20, gop: int = 50) -> Path:
    """``files`` sources of 10-20 s (lengths spread evenly) and their manifest; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(files):
        seconds = 10 + (i * 10) // max(files - 1, 1)
        make_source(out_dir / f"v{i:02d}.mp4", seconds, gop)
        lines.append(json.dumps({"video": f"v{i:02d}.mp4"}))
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def naive_load(path: str, start: float, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: decode every frame and every audio sample of the file, then pick the clip."""
    with av.open(path) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(path) as c:
        chunks = [f.to_ndarray().mean(0) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].sample_rate
    times = np.array([t for t, _ in frames])
    want = start + np.arange(cfg.num_frames) / cfg.fps
    idx = np.clip(np.searchsorted(times, want + 1e-4, side="right") - 1, 0, len(frames) - 1)
    video = torch.from_numpy(np.stack([frames[i][1] for i in idx]))
    audio = np.concatenate(chunks)
    a0 = int(max(0.0, start + cfg.num_frames / cfg.fps / 2 - cfg.audio_seconds / 2) * rate)
    wave = resample(audio[a0:a0 + int(cfg.audio_seconds * rate)], rate, cfg.sample_rate,
                    int(cfg.audio_seconds * cfg.sample_rate))
    return video, torch.from_numpy(wave)


class NaiveDataset(Dataset):
    """The naive baseline as a map-style data set (same transforms as ours)."""

    def __init__(self, paths: list[str], duration: float, cfg: DataConfig) -> None:
        self.paths, self.duration, self.cfg = paths, duration, cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        start = random_start_time(self.duration, self.cfg.num_frames / self.cfg.fps, g)
        frames, wave = naive_load(self.paths[i], start, self.cfg)
        c = self.cfg
        video = train_transform(frames, c.crop_size, c.resize_short, c.scale_jitter, c.flip, c.color_jitter, g)
        return {"video": video, "audio": log_mel_spectrogram(wave, c.sample_rate, c.num_mel_bins)[0]}


def one_worker(path: str, duration: float, cfg: DataConfig, n: int, naive: bool) -> tuple[float, float]:
    """(clips per wall-clock second, CPU milliseconds of this process per clip)."""
    g = torch.Generator().manual_seed(0)
    span = cfg.num_frames / cfg.fps
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        start = random_start_time(duration, span, g)
        if naive:
            frames, wave = naive_load(path, start, cfg)
        else:
            clip = load_clip(path, start, cfg.num_frames, cfg.fps, cfg.sample_rate, cfg.audio_seconds)
            frames, wave = clip.frames, clip.audio
        video = train_transform(frames, cfg.crop_size, cfg.resize_short, cfg.scale_jitter, cfg.flip,
                                cfg.color_jitter, g)
        audio = log_mel_spectrogram(wave, cfg.sample_rate, cfg.num_mel_bins)
        assert video.shape == (3, 32, 200, 200) and audio.shape[-1] == cfg.num_mel_bins
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1000


def loader_rate(ds: Dataset, workers: int, batch: int, batches: int) -> float:
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False, persistent_workers=False)
    it = iter(loader)
    next(it)  # start-up and the first batch are not timed
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        assert b["video"].shape[1:] == (3, 32, 200, 200)
    return batches * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=30, help="clips timed per single-process row")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the source video")
    ap.add_argument("--gop", type=int, default=50, help="key frame interval of the source (frames)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--no-naive-loader", action="store_true", help="skip the naive DataLoader rows")
    ap.add_argument("--write-set", type=Path, default=None, metavar="DIR",
                    help="only write the data set of `mmv-torch data bench` to DIR and exit")
    ap.add_argument("--files", type=int, default=20, help="sources written by --write-set")
    args = ap.parse_args()
    if args.write_set is not None:
        t0 = time.perf_counter()
        manifest = write_bench_set(args.write_set, args.files, args.gop)
        print(f"wrote {manifest} ({args.files} sources) in {time.perf_counter() - t0:.1f} s")
        return
    torch.set_num_threads(1)
    cfg = DataConfig()  # 32 frames @ 10 fps, 200 crop, 2 s audio @ 16 kHz, 80 mel bins
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.mp4"
        t0 = time.perf_counter()
        make_source(src, args.seconds, args.gop)
        print(f"source: {src.stat().st_size / 1e6:.2f} MB, {args.seconds:.0f} s 320x240 25 fps H.264 (gop "
              f"{args.gop}) + AAC 44.1 kHz stereo, written in {time.perf_counter() - t0:.1f} s")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, PyAV {av.__version__}")
        n = 64
        manifest = Path(tmp) / "m.jsonl"
        manifest.write_text(f'{{"video": "src.mp4", "duration": {args.seconds}}}\n' * n)
        rows = []
        for naive in (False, True):
            name = "naive (decode whole file)" if naive else "ours (seek + decode clip)"
            rate, cpu_ms = one_worker(str(src), args.seconds, cfg,
                                      args.clips if not naive else max(3, args.clips // 10), naive)
            rows.append((name, "1 process", rate, f"{cpu_ms:.0f} ms CPU/clip = {1000 / cpu_ms:.1f} clips/CPU-s"))
        ds = PretrainDataset(manifest, cfg)
        for w in args.workers:
            rows.append(("ours (seek + decode clip)", f"DataLoader {w} workers",
                         loader_rate(ds, w, args.batch, args.batches), ""))
        if not args.no_naive_loader:
            nds = NaiveDataset([str(src)] * n, args.seconds, cfg)
            for w in args.workers:
                rows.append(("naive (decode whole file)", f"DataLoader {w} workers", loader_rate(nds, w, 2, 2), ""))
        print(f"\n{'pipeline':28s} {'how':22s} {'clips/s':>8s}  note")
        for name, how, rate, note in rows:
            print(f"{name:28s} {how:22s} {rate:8.2f}  {note}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    from mmv_torch.cli.runtime import enable_fast_cpu_memory

    enable_fast_cpu_memory()  # as the CLI: huge pages for large CPU tensors, before the first allocation
    main()
