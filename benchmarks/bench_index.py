"""Search-index benchmarks: index build time against the limit of the same work measured in the same
run, query latency p50/p95 at 10k and 1M vectors and recall@10 of the approximate index against exact
search.

Usage (prints markdown tables; numbers go by hand, with the machine, to benchmarks/RESULTS.md, "Search index"):

    python benchmarks/bench_index.py build --files 6 --seconds 30                 # tiny model, CPU
    python benchmarks/bench_index.py build --preset mmv_s3d --files 2 --seconds 8 --batch-size 4
    python benchmarks/bench_index.py query --sizes 10000 1000000 --dim 256

Build: ``--files`` 320x240 25-fps H.264 + AAC videos (``bench_data.make_source``), indexed by
``build_index`` (``--workers`` decoding processes, ``--batch-size`` windows per forward). The limit is
measured after each build (``--repeats``; the best build against the best limit ends the table):
decoding every packet of the same files, converting to RGB the frames the windows sample, and the
batched forward (both towers) of as many windows on random inputs. A build also does the eval
transform, log-mel, thumbnails, the commits, the nearest-neighbour index and the calibration;
``limit / build`` above 1 is possible (decoding in a worker overlaps the forward on two cores).

Query vectors are synthetic but clustered like real embeddings (2,000 Gaussian clusters on the unit
sphere, noise of norm 1 around unit centres), L2-normalised; queries are 200 fresh points from the same clusters,
not in the index. Each size is indexed as `mmv-torch index build` would index it
(:func:`mmv_torch.index.store.build_faiss`: exact up to 100k vectors, IVF above with its nprobe tuned
on a sample to recall@10 >= 0.95), then queried one at a time as the server does.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, noise: float = 1.0) -> np.ndarray:
    """``n`` unit vectors drawn around random ``centres``."""
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_query(sizes: list[int], dim: int, queries: int, seed: int) -> list[str]:
    import faiss

    from mmv_torch.index.store import build_faiss

    rows = ["| vectors | dim | index | build s | nprobe | p50 ms | p95 ms | recall@10 vs exact |",
            "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(2000, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vecs = clustered(n, dim, centres, rng)
        q = clustered(queries, dim, centres, rng)
        t0 = time.perf_counter()
        index, kind = build_faiss(vecs, np.arange(n, dtype=np.int64), seed=seed)
        build_s = time.perf_counter() - t0
        exact = faiss.IndexFlatIP(dim)
        exact.add(vecs)
        _, truth = exact.search(q, 10)
        times, recall = [], []
        for i in range(queries):
            t = time.perf_counter()
            _, got = index.search(q[i:i + 1], 10)
            times.append((time.perf_counter() - t) * 1000)
            recall.append(len(set(got[0]) & set(truth[i])) / 10)
        p50, p95 = np.percentile(times, [50, 95])
        rows.append(f"| {n:,} | {dim} | {kind['type']} | {build_s:.1f} | {kind.get('nprobe', '-')} | {p50:.2f} | "
                    f"{p95:.2f} | {np.mean(recall):.3f} |")
        del index, exact, vecs
    return rows


def _checkpoint(preset: str, folder: Path, clips: Path) -> Path:
    """``tiny``: the tests' tiny checkpoint (BatchNorm statistics of ``clips``); else a random export."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if preset == "tiny":
        from tests.helpers.index_utils import tiny_checkpoint

        return tiny_checkpoint(folder, clips)
    import torch

    from mmv_torch.config import get_preset
    from mmv_torch.models.mmv import MMV
    from mmv_torch.weights.checkpoint import export_model

    cfg = get_preset(preset)
    torch.manual_seed(0)
    return export_model(MMV(cfg.model).eval(), cfg, folder)


def decode_limit(paths: list[Path], cfg, window_s: float, stride_s: float) -> tuple[float, float, int]:
    """(seconds decoding every packet of ``paths``, seconds converting the frames the windows sample to
    RGB, frames converted): the decoding part of the limit."""
    import av

    from mmv_torch.index.embedding import window_starts

    decode_s = convert_s = 0.0
    converted = 0
    for path in paths:
        t0 = time.perf_counter()
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            rate = float(vs.average_rate)
            duration = float(c.duration) / 1e6
            fps = cfg.data.num_frames / window_s
            want = {round((s + j / fps) * rate) for s in window_starts(duration, window_s, stride_s)
                    for j in range(cfg.data.num_frames)}
            conv = 0.0
            index = 0
            for packet in c.demux():
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        if index in want:
                            t = time.perf_counter()
                            frame.to_ndarray(format="rgb24")
                            conv += time.perf_counter() - t
                            converted += 1
                        index += 1
        decode_s += time.perf_counter() - t0 - conv
        convert_s += conv
    return decode_s, convert_s, converted


def forward_limit(model, video_shape: tuple, audio_shape: tuple, windows: int, batch: int) -> float:
    """Seconds of the batched forward (video and audio towers) of ``windows`` windows, ``batch`` at a time."""
    import torch

    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, windows, batch):
            n = min(batch, windows - i)
            model(video=torch.rand((n, *video_shape), generator=g), audio=torch.randn((n, *audio_shape), generator=g))
    return time.perf_counter() - t0


def bench_build(preset: str, files: int, seconds: float, workers: int, batch: int, repeats: int) -> list[str]:
    """``build_index`` of ``files`` 320x240 25-fps H.264 + AAC videos of ``seconds`` s against the limit
    measured in the same run after each of ``repeats`` builds: decoding every packet, converting the
    sampled frames, the batched forward of as many windows; the last row compares the best of each."""
    import torch
    from bench_data import make_source

    from mmv_torch.data.datasets import clip_span
    from mmv_torch.index.build import build_index
    from mmv_torch.index.embedding import decode_windows
    from mmv_torch.weights.resolve import resolve_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        paths = [root / "clips" / f"v{i:02d}.mp4" for i in range(files)]
        for p in paths:
            make_source(p, seconds, gop=50)
        ckpt = _checkpoint(preset, root / "ckpt", root / "clips")
        resolved = resolve_checkpoint(ckpt)
        cfg = resolved.config
        window_s = float(clip_span(cfg.data))
        model = resolved.load_model("cpu")
        one = decode_windows(paths[0], cfg, window_s, window_s, starts=[0.0], thumbs=False)
        shapes = (tuple(one.video.shape[1:]), tuple(one.audio.shape[1:]))
        rows = ["| preset | files x s | windows | workers | batch | limit s (decode + convert + forward) | build s | "
                "limit / build | load before, after |", "|---|---|---|---|---|---|---|---|---|"]
        builds, limits = [], []
        for r in range(repeats):  # build, then the limit of the same work, alternately
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            summary = build_index(ckpt, root / "clips", root / f"idx{r}", workers=workers, batch_size=batch,
                                  progress=False)
            builds.append(time.perf_counter() - t0)
            windows = int(summary["windows"])
            dec, conv, frames = decode_limit(paths, cfg, window_s, window_s)
            fwd = forward_limit(model, *shapes, windows, batch)
            limits.append(dec + conv + fwd)
            rows.append(f"| {preset} | {files} x {seconds:g} | {windows} | {workers} | {batch} | {limits[-1]:.1f} "
                        f"({dec:.1f} + {conv:.1f} [{frames} frames] + {fwd:.1f}) | {builds[-1]:.1f} | "
                        f"{limits[-1] / builds[-1]:.2f} | {load:.1f}, {os.getloadavg()[0]:.1f} |")
    best = min(limits) / min(builds)
    rows.append(f"| best of {repeats} | | | | | {min(limits):.1f} | {min(builds):.1f} | **{best:.2f}** | |")
    rows.append(f"torch threads {torch.get_num_threads()}; window {window_s:g} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--preset", default="tiny", help="tiny (BatchNorm calibrated) or another preset (random)")
    b.add_argument("--files", type=int, default=6)
    b.add_argument("--seconds", type=float, default=30.0)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3)
    q = sub.add_parser("query")
    q.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    q.add_argument("--dim", type=int, default=256)
    q.add_argument("--queries", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    if args.what == "build":
        rows = bench_build(args.preset, args.files, args.seconds, args.workers, args.batch_size, args.repeats)
    else:
        rows = bench_query(args.sizes, args.dim, args.queries, args.seed)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
