"""A small stand-in for a released checkpoint: the official key layout of ``mmv_s3d.pkl`` (keys, haiku
shapes and array layouts) at 1/8 of the widths, with a tiny word table, as a plain pickle that the
converter reads like the real file (a few MB instead of 230)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch

from mmv_torch.config import SpaceConfig
from mmv_torch.models.mmv import MMV
from mmv_torch.weights.convert import infer_model_config, official_to_torch_key
from tests.helpers import official_reference as ref


def _small_model(seed: int) -> MMV:
    full = infer_model_config(ref.official_mapping("s3d", zeros=True)["params"])
    va = full.spaces["va"]
    small = dataclasses.replace(
        full, video=dataclasses.replace(full.video, width_mult=0.125),
        audio=dataclasses.replace(full.audio, width_mult=0.125),
        text=dataclasses.replace(full.text, vocab_size=40, word_dim=12, hidden_dim=16),
        spaces={"va": SpaceConfig(16, dataclasses.replace(va.first, hidden=(16,)), va.second),
                "vt": dataclasses.replace(full.spaces["vt"], dim=8),
                "at": dataclasses.replace(full.spaces["at"], dim=8)})
    torch.manual_seed(seed)
    return MMV(small).eval()


def _official_layout(key: str, t: torch.Tensor, haiku_ndim: int) -> np.ndarray:
    a = t.detach().numpy()
    leaf = key.rsplit("/", 1)[-1]
    if leaf == "w":
        if a.ndim == 5:
            return a.transpose(2, 3, 4, 1, 0).copy()
        if a.ndim == 4:
            return a.transpose(2, 3, 1, 0).copy()
        return a.T[None].copy() if haiku_ndim == 3 else a.T.copy()
    if leaf == "counter":
        return a.astype(np.int32).reshape((1,) * haiku_ndim)
    if leaf in ("scale", "offset", "average") or leaf == "hidden":
        return a.reshape((1,) * (haiku_ndim - 1) + (-1,)).copy()
    return a.copy()


def standin_mapping(seed: int = 0) -> tuple[dict[str, dict[str, np.ndarray]], MMV]:
    """``({"params": {module: {leaf: array}}, "state": ...}, the MMV it holds)``."""
    model = _small_model(seed)
    own = model.state_dict()
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {"params": {}, "state": {}}
    for kind, shapes in zip(("params", "state"), ref.key_shapes("s3d")):
        for key, shape in shapes.items():
            target = official_to_torch_key(key, model)
            if target is None:  # training-only EMA leaves: the average's shape (hidden) or a counter
                base = key.rsplit("/", 1)[0]
                avg = official_to_torch_key(f"{base}/average", model)
                t = own[avg] if key.endswith("hidden") else torch.zeros(())
            else:
                t = own[target]
            module, leaf = key.rsplit("/", 1)
            out[kind].setdefault(module, {})[leaf] = _official_layout(key, t, len(shape))
    return out, model  # type: ignore[return-value]


def write_standin(path: str | Path, seed: int = 0) -> MMV:
    """Write the stand-in pickle to ``path``; returns the model it holds."""
    mapping, model = standin_mapping(seed)
    Path(path).write_bytes(pickle.dumps(mapping, protocol=4))
    return model
