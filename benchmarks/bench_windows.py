"""Several windows of one file: ``load_clip`` per window against ``load_clips`` (one opened container, near
windows in one decoding pass), as multi-window evaluation, probe protocols and the index decode them.

Usage (numbers go by hand, with the machine, to benchmarks/RESULTS.md):

    python benchmarks/bench_data.py --write-set /tmp/benchset     # 20 files, 320x240 25 fps H.264 + AAC
    python benchmarks/bench_windows.py /tmp/benchset --files 6 --windows 10 4

Windows are linearly spaced over each file (as ``LabelledDataset``'s test windows): 32 frames at 10 fps and
2 s of 48-kHz audio each; the best of ``--repeats`` per file and method.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from mmv_torch.data.media.decode import load_clip, load_clips, probe


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="folder of .mp4 files")
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--windows", type=int, nargs="+", default=[10, 4])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    files = sorted(a.folder.glob("*.mp4"))[: a.files]
    if not files:
        ap.error(f"no .mp4 files in {a.folder}")
    for n in a.windows:
        each = joint = 0.0
        for f in files:
            starts = [float(x) for x in np.linspace(0.0, max(0.0, probe(f).duration - 3.2), n)]
            t_each = t_joint = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                for s in starts:
                    load_clip(f, s, 32, 10.0, 48000, 2.0)
                t_each = min(t_each, time.perf_counter() - t0)
                t0 = time.perf_counter()
                load_clips(f, starts, 32, 10.0, 48000, 2.0)
                t_joint = min(t_joint, time.perf_counter() - t0)
            each, joint = each + t_each, joint + t_joint
        print(f"{n} windows: load_clip per window {1e3 * each / len(files):.0f} ms/file, load_clips "
              f"{1e3 * joint / len(files):.0f} ms/file: {each / joint:.2f}x (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
