"""A tiny exported checkpoint with a word list and an index of synthetic clips, shared by the index
tests (module-scoped fixtures build them once per test file)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def tiny_checkpoint(folder: Path, clips: Path) -> Path:
    """An exported random ``tiny`` model with a word list covering the synthetic captions' words. Its
    BatchNorm statistics are those of the windows of ``clips`` (a random network with the initial
    statistics maps every clip to the same direction), so its embeddings tell the clips apart."""
    from mmv_torch.config import get_preset
    from mmv_torch.data.synthetic import vocabulary_words
    from mmv_torch.index.embedding import decode_windows
    from mmv_torch.models.mmv import MMV
    from mmv_torch.weights.checkpoint import export_model

    cfg = get_preset("tiny")
    words = ["<pad>"] + [w for w in vocabulary_words() if w != "<pad>"]
    words += [f"filler{i}" for i in range(cfg.model.text.vocab_size - len(words))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MMV(cfg.model)
    decoded = [decode_windows(p, cfg, 1.0, 1.0, thumbs=False) for p in sorted(clips.glob("*.mp4"))]
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the one calibration batch
    with torch.no_grad():
        model.train()(video=torch.cat([d.video for d in decoded]), audio=torch.cat([d.audio for d in decoded]))
    return export_model(model.eval(), cfg, folder, words=words)


def synthetic_clips(folder: Path, n: int = 3, seed: int = 0) -> Path:
    """``n`` synthetic narrated clips (32 px, 2-4 s, with audio) in ``folder``; returns the folder."""
    from mmv_torch.data.synthetic import write_dataset

    write_dataset(folder, n, seed, size=32, num_probe_train=0, num_probe_test=0, num_retrieval=0, workers=1)
    for name in ("pretrain.jsonl", "probe_motion.jsonl", "probe_sound.jsonl", "retrieval.jsonl", "labels.json",
                 "classnames.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def clip_caption(video: Path) -> str:
    """The caption of a synthetic clip from its sidecar; it names the clip's object and motion."""
    return json.loads(video.with_suffix(".json").read_text())["caption"]


def plant_vectors(index: Path, video: Path, space: str, vec: np.ndarray, rows: slice | None = None) -> None:
    """Give every window of ``video`` (or its windows ``rows``, in time order) in ``space`` the embedding
    ``vec`` and rebuild the index, so a query embedding to ``vec`` has that clip as its certain top hit."""
    from mmv_torch.index.store import VECTORS, IndexStore

    store = IndexStore(index)
    rec = store.file(video)
    assert rec is not None and rec.status == "done"
    path = index / VECTORS / f"{rec.id}.npz"
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays[space][slice(None) if rows is None else rows] = vec
    np.savez(path, **arrays)
    store.rebuild()


@contextlib.contextmanager
def running_server(app, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields the base URL and stops
    the server (bounded by ``timeout``) when the block ends."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the test server did not stop"


def recalibrate(index: Path) -> dict:
    """Record the calibrated-score distributions of ``index`` again (after :func:`plant_vectors`), as
    ``index build`` does after every change; returns them."""
    from mmv_torch.index.calibrate import record_calibration
    from mmv_torch.index.query import open_searcher

    s = open_searcher(index)
    return record_calibration(s.store, s.model, s.tokenizer, s.word_mask)


def damage_stream(src: Path, dst: Path, stream: str, first: int = 0, last: int | None = None, seed: int = 0) -> Path:
    """``src`` remuxed with packets ``first`` to ``last`` (all from ``first`` when None) of its first
    ``stream`` (``"video"`` or ``"audio"``) replaced by random bytes; the other stream intact."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ins = {"video": inp.streams.video[0], "audio": inp.streams.audio[0]}
        outs = {k: out.add_stream_from_template(s) for k, s in ins.items()}
        n = 0
        for pkt in inp.demux():
            if pkt.dts is None:
                continue
            kind = "video" if pkt.stream is ins["video"] else "audio"
            if kind == stream:
                n += 1
                if first < n and (last is None or n <= last):
                    bad = av.Packet(rng.integers(0, 256, pkt.size, dtype=np.uint8).tobytes())
                    bad.pts, bad.dts, bad.time_base = pkt.pts, pkt.dts, pkt.time_base
                    pkt = bad
            pkt.stream = outs[kind]
            out.mux(pkt)
    return dst
