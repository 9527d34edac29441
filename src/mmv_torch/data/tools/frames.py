"""Labelled video manifest -> labelled image set: the middle frame of every clip.

``mmv-torch data frames MANIFEST OUT`` writes ``OUT/img_NNNN.png`` and ``OUT/images.jsonl`` with
``{"image", "label", "split"}`` per line, ready for ``mmv-torch eval image --data OUT/images.jsonl``
(image probes of the deflated video network on the same content, e.g. the demo's synthetic objects).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmv_torch.data.manifests import read_labelled_manifest
from mmv_torch.data.media.decode import load_clip, probe
from mmv_torch.fileio import atomic_write, atomic_write_text

MANIFEST_NAME = "images.jsonl"


def png_bytes(frame: np.ndarray) -> bytes:
    """A lossless PNG of one uint8 ``(H, W, 3)`` RGB frame, encoded by FFmpeg's PNG encoder (PyAV)."""
    import av

    h, w = frame.shape[:2]
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = w, h, "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_middle_frames(manifest: str | Path, out_dir: str | Path) -> Path:
    """Save the middle frame of every video entry of ``manifest`` as a PNG in ``out_dir`` and a labelled
    image manifest beside them; returns the manifest's path. Entries that are not videos are an error."""
    entries = read_labelled_manifest(manifest)
    not_video = [e.path for e in entries if e.modality != "video"]
    if not_video:
        raise ValueError(f"{manifest}: {len(not_video)} entries are not videos, e.g. {not_video[0]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, e in enumerate(entries):
        duration = probe(e.path).duration
        frame = np.asarray(load_clip(e.path, duration / 2, 1, 8.0).frames[0])
        name = f"img_{i:04d}.png"
        atomic_write(out / name, lambda tmp, f=frame: tmp.write_bytes(png_bytes(f)))
        rows.append({"image": name, "label": e.label, "split": e.split})
    path = out / MANIFEST_NAME
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path
