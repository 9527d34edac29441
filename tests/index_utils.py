"""A tiny exported checkpoint with a word list and an index of synthetic clips, shared by the index
tests (module-scoped fixtures build them once per test file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def tiny_checkpoint(folder: Path) -> Path:
    """An exported random ``tiny`` model with a word list covering the synthetic captions' words."""
    from mmv_torch.checkpoints import export_model
    from mmv_torch.config import get_preset
    from mmv_torch.data.synthetic import vocabulary_words
    from mmv_torch.models.mmv import MMV

    cfg = get_preset("tiny")
    words = ["<pad>"] + [w for w in vocabulary_words() if w != "<pad>"]
    words += [f"filler{i}" for i in range(cfg.model.text.vocab_size - len(words))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MMV(cfg.model).eval()
    return export_model(model, cfg, folder, words=words)


def synthetic_clips(folder: Path, n: int = 3, seed: int = 0) -> Path:
    """``n`` synthetic narrated clips (32 px, 2-4 s, with audio) in ``folder``; returns the folder."""
    from mmv_torch.data.synthetic import write_dataset

    write_dataset(folder, n, seed, size=32, num_probe_train=0, num_probe_test=0, num_retrieval=0, workers=1)
    for name in ("pretrain.jsonl", "probe_motion.jsonl", "probe_sound.jsonl", "retrieval.jsonl", "labels.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def clip_caption(video: Path) -> str:
    """The caption of a synthetic clip from its sidecar; it names the clip's object and motion."""
    return json.loads(video.with_suffix(".json").read_text())["caption"]


def plant_vectors(index: Path, video: Path, space: str, vec: np.ndarray) -> None:
    """Give every window of ``video`` in ``space`` the embedding ``vec`` and rebuild the index, so a query
    embedding to ``vec`` has that clip as its certain top hit."""
    from mmv_torch.index.store import VECTORS, IndexStore

    store = IndexStore(index)
    rec = store.file(video)
    assert rec is not None and rec.status == "done"
    path = index / VECTORS / f"{rec.id}.npz"
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays[space][:] = vec
    np.savez(path, **arrays)
    store.rebuild()
