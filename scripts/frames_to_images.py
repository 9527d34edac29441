"""Turn a labelled video manifest into a labelled image set: the middle frame of every clip.

    python scripts/frames_to_images.py runs/demo/data/probe_sound.jsonl runs/demo/images

writes ``OUT/img_NNNN.png`` and ``OUT/images.jsonl`` with ``{"image", "label", "split"}`` per line, ready for
``mmv-torch eval image --data OUT/images.jsonl`` (the demo's deflation check: image probes of the deflated
video network on the synthetic objects).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmv_torch.data.datasets import read_labelled_manifest
from mmv_torch.data.decode import load_clip, probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", help="labelled JSONL manifest whose entries are video files")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, e in enumerate(read_labelled_manifest(args.manifest)):
        duration = probe(e.path).duration
        frame = load_clip(e.path, duration / 2, 1, 8.0).frames[0]
        name = f"img_{i:04d}.png"
        Image.fromarray(np.asarray(frame)).save(out / name)
        rows.append({"image": name, "label": e.label, "split": e.split})
    (out / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} images and {out / 'images.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
