"""Nearest-neighbour search at scale with cross-modal queries: recall@10 against exact search, latency,
build time, memory and size on disk of the index `mmv-torch index build` chooses (mmv_torch.index.nn).

Usage (every stage's output is cached in WORK, so a killed run resumes where it stopped; tables go by
hand, with the machine and its load, to benchmarks/RESULTS.md, "Search index at scale"):

    mmv-torch index build --checkpoint CKPT --videos CLIPS --out WORK/real_index   # the real vectors
    python benchmarks/bench_index_scale.py --work WORK real --index WORK/real_index
    python benchmarks/bench_index_scale.py --work WORK run --mode text --sizes 0 1000000 --memory-gb 4

``real`` reads the index's video windows (the video tower: ``video_vt`` for text queries, ``video_va``
for audio queries) and makes the queries of what users search with: each clip's caption through the
text tower (its positive: the clip's best-matching window) and each window's audio through the audio
tower (``audio_va``; its positive: the same window in ``video_va``). Size 0 is the real set itself.

**The generator** extends the real vectors to N: base vectors are drawn from a Gaussian mixture
(32 diagonal components) fitted to the real video vectors and L2-normalised; each query is a drawn
base vector (its positive) turned towards a drawn real query: it keeps that real pair's positive
cosine ``c`` exactly and the real query's residual orthogonal to its positive (projected off the new
base vector): ``q = c b + sqrt(1 - c^2) u``. The residuals carry the modality gap (the queries' mean
lies apart from the video vectors' mean) and the spread of the real positive cosines, so the generated
queries are as far from their positives, and as cross-modal, as the real ones; ``run`` prints those
statistics for real and generated.

Per size: ``exact`` ground truth by chunked brute force on 300 evaluation queries (200 other queries
tune ``nprobe``, as the build tunes it on stored vectors); the build (``--memory-gb`` or ``--factory``)
with its time, peak RSS and size on disk; then a fresh process opens the index memory-mapped as
``serve`` does and runs the 300 queries one at a time and in batches of 32: p50/p95 latency, recall@10
against exact, its resident memory (touched pages of the memory map included) and start time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TUNE, EVAL, BATCH = 200, 300, 32


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def real(work: Path, index: Path) -> None:
    """The real base vectors and queries of both modes from an index built with a trained checkpoint."""
    from mmv_torch.index.query import open_searcher

    searcher = open_searcher(index)
    store = searcher.store
    vt, vt_ids = store.vectors("video_vt")
    va, va_ids = store.vectors("video_va")
    au, au_ids = store.vectors("audio_va")
    pos = {int(w): i for i, w in enumerate(va_ids)}
    audio_pos = np.asarray([pos[int(w)] for w in au_ids])
    row = {int(w): i for i, w in enumerate(vt_ids)}
    texts, text_pos = [], []
    for (fid, path) in store.db.execute("SELECT id, path FROM files WHERE status = 'done' ORDER BY id").fetchall():
        side = Path(path).with_suffix(".json")
        wins = [int(w) for (w,) in store.db.execute("SELECT id FROM windows WHERE file = ?", (fid,))]
        if not side.is_file() or not wins or any(w not in row for w in wins):  # no caption, or added since
            continue
        q = searcher.embed("text", text=json.loads(side.read_text())["caption"])
        rows = [row[w] for w in wins]
        texts.append(q)
        text_pos.append(rows[int(np.argmax(vt[rows] @ q))])
    np.savez(work / "real_text.npz", base=vt, queries=np.asarray(texts, np.float32), pos=np.asarray(text_pos))
    np.savez(work / "real_audio.npz", base=va, queries=au, pos=audio_pos)
    print(f"real: {len(vt)} windows, {len(texts)} text queries, {len(au)} audio queries")


def stats(base: np.ndarray, queries: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Positive cosine, cosine to random base vectors, base-to-base cosine and the modality gap."""
    qb = np.asarray(base[np.sort(pos)], np.float32)[np.argsort(np.argsort(pos))]
    pc = np.sum(queries * qb, axis=1)
    r = np.asarray(base[np.sort(rng.choice(len(base), 2000, replace=len(base) < 2000))], np.float32)
    return {"pos_cos_mean": float(pc.mean()), "pos_cos_std": float(pc.std()),
            "query_to_random_base_cos": float((queries[:500] @ r.T).mean()),
            "base_to_base_cos": float((r[:1000] @ r[1000:].T).mean()),
            "modality_gap": float(np.linalg.norm(queries.mean(0) - r.mean(0)))}


def cross_modal(base: np.ndarray, rq: np.ndarray, rp: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Queries ``(Q, D)`` for positives ``base`` ``(Q, D)``: query ``i`` has the cosine of the real pair
    ``pick[i]`` (query ``rq``, positive ``rp``) to its positive, and that real query's residual
    orthogonal to its positive (projected off ``base[i]``, rescaled): ``c b + sqrt(1 - c^2) u``."""
    c = np.sum(rq * rp, axis=1)[pick][:, None]
    u = rq[pick] - c * rp[pick]
    u -= np.sum(u * base, axis=1, keepdims=True) * base
    u = _unit(u) * np.sqrt(np.maximum(1 - c**2, 0))
    return _unit(c * base + u)


def generate(work: Path, mode: str, n: int, seed: int = 0) -> Path:
    """Base vectors and queries of size ``n`` (``WORK/<mode>_<n>/``; 0: the real set)."""
    from sklearn.mixture import GaussianMixture

    out = work / f"{mode}_{n}"
    if (out / "queries.npz").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    src = np.load(work / f"real_{mode}.npz")
    rb, rq, rp = src["base"], src["queries"], src["pos"]
    rng = np.random.default_rng(seed)
    if n == 0:
        np.save(out / "base.npy", rb)
        perm = rng.permutation(len(rq))
        q, p = rq[perm], rp[perm]
    else:
        if not (out / "base.npy").is_file():
            gm = GaussianMixture(32, covariance_type="diag", random_state=seed, max_iter=50).fit(rb)
            base = np.lib.format.open_memmap(out / "base.tmp.npy", mode="w+", dtype=np.float32,
                                             shape=(n, rb.shape[1]))
            for start in range(0, n, 1_000_000):
                m = min(n, start + 1_000_000) - start
                comp = rng.choice(len(gm.weights_), size=m, p=gm.weights_)
                x = gm.means_[comp] + rng.standard_normal((m, rb.shape[1])) * np.sqrt(gm.covariances_[comp])
                base[start:start + m] = _unit(x)
            base.flush()
            del base
            os.replace(out / "base.tmp.npy", out / "base.npy")
        p = np.sort(rng.choice(n, size=TUNE + EVAL, replace=False))
        p = p[rng.permutation(len(p))]
        b = np.load(out / "base.npy", mmap_mode="r")
        q = cross_modal(np.asarray(b[np.sort(p)])[np.argsort(np.argsort(p))], rq, rb[rp],
                        rng.integers(0, len(rq), len(p)))
    base = np.load(out / "base.npy", mmap_mode="r")
    st = {"real": stats(rb, rq, rp, np.random.default_rng(1)), "this": stats(base, q, p, np.random.default_rng(1))}
    (out / "stats.json").write_text(json.dumps(st, indent=1))
    np.savez(out / "queries.npz", queries=q, pos=p)
    return out


def truth(out: Path) -> np.ndarray:
    """Exact top-10 rows of the evaluation queries (cached)."""
    from mmv_torch.index.nn import exact_search

    f = out / "truth.npy"
    if not f.is_file():
        q = np.load(out / "queries.npz")["queries"]
        t0 = time.perf_counter()
        t = exact_search(np.load(out / "base.npy", mmap_mode="r"), q[TUNE:TUNE + EVAL], 10)
        np.save(f, t)
        (out / "truth.json").write_text(json.dumps({"exact_s": time.perf_counter() - t0}))
    return np.load(f)


def build(out: Path, memory_gb: float | None, factory: str | None, tag: str) -> dict[str, Any]:
    """The index of ``out``'s base vectors as ``index build`` chooses it (cached as ``<tag>.faiss``)."""
    import faiss

    from mmv_torch.index import nn

    meta = out / f"{tag}.json"
    if meta.is_file():
        return json.loads(meta.read_text())
    base = np.load(out / "base.npy", mmap_mode="r")
    n, d = base.shape
    ids = np.arange(n, dtype=np.int64)
    queries = np.load(out / "queries.npz")["queries"][:TUNE]
    factory = factory or nn.choose_factory(n, d, None if memory_gb is None else memory_gb * 2**30 * nn.SERVE_SHARE)
    t0 = time.perf_counter()
    index, kind = nn.build(base, ids, factory, vectors=nn.VectorFile(out / "base.npy", ids), queries=queries,
                           target_recall=0.95)
    build_s = time.perf_counter() - t0
    faiss.write_index(index.index, str(out / f"{tag}.faiss"))
    res = {"kind": kind, "build_s": build_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "faiss_mb": (out / f"{tag}.faiss").stat().st_size / 2**20, "vectors_mb": (out / "base.npy").stat().st_size
           / 2**20}
    meta.write_text(json.dumps(res, indent=1))
    return res


def query(out: Path, tag: str) -> dict[str, Any]:
    """In this (fresh) process: open the index as ``serve`` does and run the evaluation queries."""
    import faiss

    from mmv_torch.index import nn

    faiss.omp_set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kind = json.loads((out / f"{tag}.json").read_text())["kind"]
    rss0 = _rss_mb()[0]
    t0 = time.perf_counter()
    ids = np.load(out / "base.npy", mmap_mode="r")
    index = nn.NNIndex(faiss.read_index(str(out / f"{tag}.faiss"), nn._open_flags(kind)), kind,
                       nn.VectorFile(out / "base.npy", np.arange(len(ids), dtype=np.int64)) if kind["rerank"] else None)
    open_s = time.perf_counter() - t0
    q = np.load(out / "queries.npz")["queries"][TUNE:TUNE + EVAL]
    t = truth(out)
    single, got = [], []
    for i in range(len(q)):
        s = time.perf_counter()
        got.append(index.search(q[i:i + 1], 10)[1][0])
        single.append((time.perf_counter() - s) * 1000)
    batch = []
    for i in range(0, len(q), BATCH):
        s = time.perf_counter()
        index.search(q[i:i + BATCH], 10)
        batch.append((time.perf_counter() - s) * 1000 / len(q[i:i + BATCH]))
    rss, hwm = _rss_mb()
    return {"open_s": open_s, "p50_ms": float(np.percentile(single, 50)), "p95_ms": float(np.percentile(single, 95)),
            "batch_p50_ms_per_query": float(np.percentile(batch, 50)),
            "batch_p95_ms_per_query": float(np.percentile(batch, 95)),
            "recall_at_10": nn.recall_at(np.asarray(got), t), "rss_mb": rss, "hwm_mb": hwm, "rss_before_mb": rss0}


def run(work: Path, mode: str, sizes: list[int], memory_gb: float | None, factory: str | None) -> None:
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    rows = []
    for n in sizes:
        out = generate(work, mode, n)
        truth(out)
        tag = "index_" + (factory.replace(",", "_") if factory else f"{memory_gb or 0:g}gb")
        b = build(out, memory_gb, factory, tag)
        qf = out / f"{tag}.query.json"
        if not qf.is_file():
            r = subprocess.run([sys.executable, __file__, "--work", str(work), "_query", str(out), tag],
                               check=True, capture_output=True, text=True)
            qf.write_text(r.stdout)
        qr = json.loads(qf.read_text())
        st = json.loads((out / "stats.json").read_text())["this"]
        rows.append({"n": len(np.load(out / "base.npy", mmap_mode="r")), "mode": mode, **b, **qr, "stats": st})
        print(json.dumps(rows[-1]), flush=True)
    print("| vectors | queries | index | nprobe | build s | build peak RSS MB | .faiss MB | p50 ms | p95 ms | "
          "batch-32 ms/query p50 | recall@10 vs exact | serve-like RSS MB | open s | pos cos | gap |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["kind"]
        print(f"| {r['n']:,} | {r['mode']} | {k['factory']}{' +rerank' if k['rerank'] else ''} "
              f"| {k.get('nprobe', '-')} "
              f"| {r['build_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['faiss_mb']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {r['batch_p50_ms_per_query']:.2f} | {r['recall_at_10']:.3f} | {r['rss_mb']:.0f} | "
              f"{r['open_s']:.2f} | {r['stats']['pos_cos_mean']:.3f} | {r['stats']['modality_gap']:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the data (outside any repository)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("real")
    p.add_argument("--index", type=Path, required=True)
    p = sub.add_parser("run")
    p.add_argument("--mode", choices=["text", "audio"], default="text")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000_000])
    p.add_argument("--memory-gb", type=float, default=4.0)
    p.add_argument("--factory", default=None)
    p = sub.add_parser("_query")
    p.add_argument("out", type=Path)
    p.add_argument("tag")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.cmd == "real":
        real(a.work, a.index)
    elif a.cmd == "run":
        run(a.work, a.mode, a.sizes, a.memory_gb, a.factory)
    else:
        print(json.dumps(query(a.out, a.tag)))


if __name__ == "__main__":
    main()
