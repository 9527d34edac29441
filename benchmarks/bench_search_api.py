"""Latency of the Python search API (``mmv_torch.index.open(...).search(...)``) on a demo-size index,
against the 50 ms target and against one ``mmv-torch index search`` process measured in the same run.

Usage (prints a markdown table; numbers go by hand, with the machine, to benchmarks/RESULTS.md, "Search API"):

    python benchmarks/bench_search_api.py --clips 64 --repeats 50

The index is the demo's: ``--clips`` synthetic retrieval clips at 64 px (the demo indexes its 64
retrieval clips) and an exported random ``tiny`` model with the synthetic vocabulary (the demo's
trained model has the same architecture, so the same cost). Each query kind is searched once (the
first call), then ``--repeats`` times with other texts / files; p50 and p95 are of the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_index(folder: Path, clips: int) -> tuple[Path, list[Path], list[str]]:
    import torch

    from mmv_torch.config import get_preset
    from mmv_torch.data.synthetic import vocabulary_words, write_dataset
    from mmv_torch.index.build import build_index
    from mmv_torch.models.mmv import MMV
    from mmv_torch.weights.checkpoint import export_model

    data = folder / "data"
    write_dataset(data, 0, 0, size=64, num_probe_train=0, num_probe_test=0, num_retrieval=clips, workers=2)
    cfg = get_preset("tiny")
    words = ["<pad>"] + [w for w in vocabulary_words() if w != "<pad>"]
    words += [f"filler{i}" for i in range(cfg.model.text.vocab_size - len(words))]
    torch.manual_seed(0)
    ckpt = export_model(MMV(cfg.model).eval(), cfg, folder / "ckpt", words=words)
    t0 = time.perf_counter()
    summary = build_index(ckpt, data / "retrieval.jsonl", folder / "idx", progress=False)
    print(f"built {summary['files']} files, {summary['windows']} windows in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    videos = sorted(p for p in data.rglob("*.mp4"))
    real = [w for w in words if w and not w.startswith("filler") and w != "<pad>"]
    return folder / "idx", videos, real


def timed(fn, repeats: int) -> tuple[float, float, float]:
    first = time.perf_counter()
    fn(0)
    first = time.perf_counter() - first
    times = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return first * 1e3, float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 95)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    import torch

    import mmv_torch.index as mi

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    with tempfile.TemporaryDirectory() as tmp:
        idx, videos, words = make_index(Path(tmp), args.clips)
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(words, size=4)) for _ in range(args.repeats + 1)]
        t0 = time.perf_counter()
        index = mi.open(idx)
        open_ms = (time.perf_counter() - t0) * 1e3
        rows = [("text", lambda i: index.search(text=texts[i], k=10)),
                ("text + filters (path glob, duration)", lambda i: index.search(
                    text=texts[i], k=10, filters=mi.api.Filters(path="*_00000[0-4]*", min_duration=1.0))),
                ("more like this (indexed window)", lambda i: index.similar(1 + i % 50, k=10)),
                ("text + sound file (fused)",
                 lambda i: index.search(text=texts[i], audio=videos[i % len(videos)], k=10)),
                ("video file (S_vt)", lambda i: index.search(video=videos[i % len(videos)], k=10))]
        out = [f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
               f"{torch.get_num_threads()}, load {open('/proc/loadavg').read().split()[:3]}",
               f"index: {index.info()['files']} files, {index.info()['windows']} windows; open(): {open_ms:.0f} ms", "",
               "| query | first ms | p50 ms | p95 ms | p95 / 50 ms |", "|---|---|---|---|---|"]
        for name, fn in rows:
            first, p50, p95 = timed(fn, args.repeats)
            out.append(f"| {name} | {first:.1f} | {p50:.1f} | {p95:.1f} | {p95 / 50:.2f} |")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmv_torch", "index", "search", str(idx), "--text", texts[0],
                        "--device", "cpu"], check=True, capture_output=True)
        cli_ms = (time.perf_counter() - t0) * 1e3
        out.append(f"\none `mmv-torch index search --text` process (start, model load, search): {cli_ms:.0f} ms")
        print("\n".join(out))


if __name__ == "__main__":
    main()
