"""``mmv-torch vocab match`` on a GoogleNews-sized source: time and peak memory.

Writes a word2vec binary file of ``--words`` words x 300 float32 (3M: 3.6 GB, the size of
``GoogleNews-vectors-negative300.bin``; Gaussian vectors, words ``w0000000`` ...) and a 65,536-row
table drawn from it (row 0 zeros, the other rows random source rows in random order), then runs
:func:`mmv_torch.weights.vocab_match.run_vocab_match` in a child process and reports its wall time and peak
resident memory (``ru_maxrss`` of the child). The files are kept for reruns unless ``--cleanup``.
Run: ``nice -n 10 python benchmarks/bench_vocab_match.py --dir /tmp/vocab_bench`` (check ``df -h`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 300
CHUNK = 100_000


def generate(folder: Path, n_words: int, n_rows: int, seed: int = 0) -> tuple[Path, Path]:
    """The word2vec binary file and the table (``.npy``) drawn from it; skipped when both exist."""
    source, table_path = folder / f"w2v_{n_words}.bin", folder / f"table_{n_words}_{n_rows}.npy"
    if source.is_file() and table_path.is_file():
        return source, table_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picked = rng.choice(n_words, n_rows - 1, replace=False)
    slot = np.full(n_words, -1, np.int64)
    slot[picked] = np.arange(1, n_rows)
    table = np.zeros((n_rows, DIM), np.float32)
    width = 1 + len(str(n_words - 1))  # "w" + zero-padded index: fixed-width rows
    row_bytes = width + 1 + 4 * DIM + 1
    with open(source, "wb") as f:
        f.write(f"{n_words} {DIM}\n".encode())
        for start in range(0, n_words, CHUNK):
            stop = min(start + CHUNK, n_words)
            vectors = rng.standard_normal((stop - start, DIM)).astype("<f4")
            rows = np.empty((stop - start, row_bytes), np.uint8)
            names = np.array([f"w{i:0{width - 1}d}" for i in range(start, stop)], dtype=f"S{width}")
            rows[:, :width] = names.view(np.uint8).reshape(-1, width)
            rows[:, width] = ord(" ")
            rows[:, width + 1: -1] = vectors.view(np.uint8).reshape(-1, 4 * DIM)
            rows[:, -1] = ord("\n")
            f.write(rows.tobytes())
            here = slot[start:stop] >= 0
            table[slot[start:stop][here]] = vectors[here]
    np.save(table_path, table)
    return source, table_path


def match(source: Path, table_path: Path, out: Path) -> None:
    """Child process: the match itself; prints one JSON line with the time, peak memory and the result."""
    from mmv_torch.weights.vocab_match import run_vocab_match

    table = np.load(table_path)
    t0 = time.perf_counter()
    report = run_vocab_match(table, out / "vocab.txt", source, json_path=out / "report.json")
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib, "rows": report["rows"],
                      "matched": report["matched"], "exact": report["exact"], "source_rows": report["source_rows"],
                      "unmatched": report["unmatched_count"], "ambiguous": report["ambiguous_count"]}))


def main() -> None:
    """Generate (once), match in a child process, print a markdown row."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vocab_bench"))
    ap.add_argument("--words", type=int, default=3_000_000, help="source words (3M: 3.6 GB)")
    ap.add_argument("--rows", type=int, default=65_536, help="table rows")
    ap.add_argument("--cleanup", action="store_true", help="delete the generated files afterwards")
    ap.add_argument("--child", nargs=3, metavar=("SOURCE", "TABLE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        match(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
        return
    t0 = time.perf_counter()
    source, table_path = generate(args.dir, args.words, args.rows)
    print(f"source {source} ({source.stat().st_size / 2**30:.2f} GiB), table {table_path}: "
          f"{time.perf_counter() - t0:.0f} s to prepare", file=sys.stderr)
    out = args.dir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    child = subprocess.run([sys.executable, __file__, "--child", str(source), str(table_path), str(out)],
                           check=True, capture_output=True, text=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| source words x dim | file GiB | table rows | matched | exact | ambiguous | seconds | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['source_rows']:,} x {DIM} | {source.stat().st_size / 2**30:.2f} | {r['rows']:,} | {r['matched']:,} | "
          f"{r['exact']:,} | {r['ambiguous']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")
    if args.cleanup:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
