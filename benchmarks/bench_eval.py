"""Evaluation benchmarks: feature-extraction clips/s and chunked retrieval time at 1M x 256-d.

Usage (prints a markdown table; numbers go by hand, with the machine, to benchmarks/RESULTS.md, "Evaluation"):

    python benchmarks/bench_eval.py extract --device cpu
    python benchmarks/bench_eval.py retrieval --queries 1000 --gallery 1000000 --dim 256 --device cpu
    python benchmarks/bench_eval.py retrieval --queries 1000000 --gallery 1000000 --device cuda  # 1M x 1M

Extraction runs :func:`mmv_torch.eval.features.extract_features` over an in-memory loader of random
clips (decoding excluded: see bench_data.py) for the tiny preset and the full S3D-G video tower.
Retrieval ranks every query's positive (query i ↔ gallery i) among the whole gallery by counting
higher scores block by block (:func:`mmv_torch.eval.retrieval.positive_ranks`), so memory stays at
one ``query_chunk × gallery_chunk`` block.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from mmv_torch.eval.features import extract_features
from mmv_torch.eval.retrieval import positive_ranks, rank_metrics


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_extract(device: str, repeats: int) -> list[str]:
    from mmv_torch.weights.resolve import create_model

    rows = []
    settings = [("tiny", 8, 64, 8, 4), ("mmv_s3d", 32, 224, 1 if device == "cpu" else 16, 2 if device == "cpu" else 4)]
    for preset, frames, size, batch, n_batches in settings:
        model = create_model(preset).eval().to(device)
        clips = torch.rand(batch, 3, frames, size, size)
        loader = [{"video": clips, "index": torch.arange(i * batch, (i + 1) * batch)} for i in range(n_batches)]
        extract_features(model, loader[:1], "video", "repr", device=device)  # warm-up
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            extract_features(model, loader, "video", "repr", device=device)
            _sync(device)
            times.append(time.perf_counter() - t0)
        best = min(times)
        n = batch * n_batches
        rows.append(f"| extract video repr | {preset} | {frames}x{size}x{size}, batch {batch} | {device} | "
                    f"{n} clips | {n / best:.2f} clips/s (best of {repeats}) |")
    return rows


def bench_retrieval(queries: int, gallery: int, dim: int, device: str, query_chunk: int,
                    gallery_chunk: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    gal = torch.randn(gallery, dim, generator=g)
    q = gal[:queries] + 4.0 * torch.randn(queries, dim, generator=g)  # noisy copies: non-trivial ranks
    if device.startswith("cuda"):
        gal, q = gal.to(device), q.to(device)
    keys_q, keys_g = np.arange(queries), np.arange(gallery)
    positive_ranks(q[:16], gal[:4096], keys_q[:16], keys_g[:4096], device=device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    ranks = positive_ranks(q, gal, keys_q, keys_g, query_chunk=query_chunk, gallery_chunk=gallery_chunk,
                           device=device)
    _sync(device)
    dt = time.perf_counter() - t0
    m = rank_metrics(ranks)
    return [f"| retrieval ranks | {queries:,} queries x {gallery:,} gallery, {dim}-d | {device} | "
            f"chunks {query_chunk}x{gallery_chunk} | {dt:.2f} s | "
            f"R@1 {m['R@1']:.3f}, median rank {m['median_rank']:.0f} |"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--device", default="cpu")
    e.add_argument("--repeats", type=int, default=2)
    r = sub.add_parser("retrieval")
    r.add_argument("--queries", type=int, default=1000)
    r.add_argument("--gallery", type=int, default=1_000_000)
    r.add_argument("--dim", type=int, default=256)
    r.add_argument("--device", default="cpu")
    r.add_argument("--query-chunk", type=int, default=1024)
    r.add_argument("--gallery-chunk", type=int, default=16384)
    a = p.parse_args()
    dev_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {dev_name}, {torch.get_num_threads()} CPU threads")
    print("| benchmark | what | device | setting | result | note |")
    print("|---|---|---|---|---|---|")
    rows = (bench_extract(a.device, a.repeats) if a.what == "extract" else
            bench_retrieval(a.queries, a.gallery, a.dim, a.device, a.query_chunk, a.gallery_chunk))
    for row in rows:
        print(row)


if __name__ == "__main__":
    from mmv_torch.cli.runtime import enable_fast_cpu_memory

    enable_fast_cpu_memory()  # as the CLI: huge pages for large CPU tensors, before the first allocation
    main()
