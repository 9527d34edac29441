"""Shot boundaries of real videos: this project's PyAV frame-difference detector
(:mod:`mmv_torch.data.media.shots`) against PySceneDetect's ``AdaptiveDetector`` and ``ContentDetector``
(``pip install scenedetect-headless``): cuts found, how many agree (within ``--tolerance`` seconds)
and the time per minute of video.

Usage (numbers go by hand to docs/search.md):

    python benchmarks/bench_shots.py VIDEO [VIDEO ...] [--tolerance 0.25]
"""

from __future__ import annotations

import argparse
import time

from mmv_torch.data.media.decode import probe
from mmv_torch.data.media.shots import cuts_from_changes, frame_changes


def _scenedetect(path: str, detector: str) -> list[float]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    det = AdaptiveDetector() if detector == "adaptive" else ContentDetector()
    scenes = detect(path, det)
    return [round(s[0].get_seconds(), 3) for s in scenes[1:]]


def _agree(a: list[float], b: list[float], tol: float) -> int:
    return sum(1 for x in a if any(abs(x - y) <= tol for y in b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--tolerance", type=float, default=0.25)
    args = ap.parse_args()
    print(f"{'video':28s} {'min':>5s} | {'pyav':>4s} {'s/min':>6s} | {'adapt':>5s} {'s/min':>6s} {'agree':>5s} | "
          f"{'content':>7s} {'s/min':>6s} {'agree':>5s}")
    for v in args.videos:
        minutes = probe(v).duration / 60
        t = time.perf_counter()
        times, changes = frame_changes(v)
        ours = cuts_from_changes(times, changes)
        t_ours = time.perf_counter() - t
        row = f"{v.rsplit('/', 1)[-1][:28]:28s} {minutes:5.2f} | {len(ours):4d} {t_ours / minutes:6.2f} |"
        for name in ("adaptive", "content"):
            t = time.perf_counter()
            theirs = _scenedetect(v, name)
            t_theirs = time.perf_counter() - t
            row += f" {len(theirs):{5 if name == 'adaptive' else 7}d} {t_theirs / minutes:6.2f} " \
                   f"{_agree(ours, theirs, args.tolerance):5d} |"
        print(row.rstrip(" |"))
        print(f"  pyav cuts: {ours}")
        for name in ("adaptive", "content"):
            print(f"  {name} cuts: {_scenedetect(v, name)}")


if __name__ == "__main__":
    main()
