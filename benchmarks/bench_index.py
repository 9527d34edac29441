"""Search-index benchmarks: index build clips/s, query latency p50/p95 at 10k and 1M vectors, recall@10
of the approximate index against exact search, and the text tower's time per query.

Usage (prints markdown tables; numbers go by hand, with the machine, to benchmarks/RESULTS.md, "Search index"):

    python benchmarks/bench_index.py build --clips 16            # tiny model, synthetic clips, CPU
    python benchmarks/bench_index.py query --sizes 10000 1000000 --dim 256

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


def bench_build(clips: int, workers: int) -> list[str]:
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from index_utils import synthetic_clips, tiny_checkpoint

    from mmv_torch.index.build import build_index
    from mmv_torch.index.query import open_searcher

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = synthetic_clips(root / "clips", n=clips, seed=0)
        ckpt = tiny_checkpoint(root / "ckpt", folder)
        t0 = time.perf_counter()
        summary = build_index(ckpt, folder, root / "idx", workers=workers, progress=False)
        seconds = time.perf_counter() - t0
        searcher = open_searcher(root / "idx")
        searcher.embed("text", text="a red ball bounces")
        t = time.perf_counter()
        for _ in range(20):
            searcher.embed("text", text="a red ball bounces")
        text_ms = (time.perf_counter() - t) / 20 * 1000
    return ["| clips | windows | workers | build s | clips/s | text tower ms/query | torch threads |",
            "|---|---|---|---|---|---|---|",
            f"| {clips} | {summary['windows']} | {workers} | {seconds:.1f} | {clips / seconds:.2f} | {text_ms:.2f} | "
            f"{torch.get_num_threads()} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--clips", type=int, default=16)
    b.add_argument("--workers", type=int, default=0)
    q = sub.add_parser("query")
    q.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    q.add_argument("--dim", type=int, default=256)
    q.add_argument("--queries", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    rows = bench_build(args.clips, args.workers) if args.what == "build" else bench_query(args.sizes, args.dim,
                                                                                         args.queries, args.seed)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
