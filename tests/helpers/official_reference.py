"""Test helper: the official MMV reference data in ``tests/assets/official_mmv/``.

The files were produced by the unmodified official JAX/Haiku code with weights filled
deterministically from each parameter's NAME and SHAPE (see ``tests/assets/official_mmv/README.md``).
This module regenerates those weights (the "fill rule"), derives the width-2 TSM key set from the
width-1 one, and loads the recorded inputs, outputs and intermediates.
"""

from __future__ import annotations

import json
import math
import zlib
from functools import cache
from typing import Any

import numpy as np

from tests.helpers import ASSETS

DATA = ASSETS / "official_mmv"
CONFIGS = ("s3d", "tsm_resnet_x1")
TSM = "text_audio_video/visual_module/~/TSMResNetV2/"
VID2AUDIO_INNER_W = "text_audio_video/~_get_pair_embedding_heads/vid2audio_embd/final_projection_inner/w"


@cache
def params_json(config: str) -> dict[str, Any]:
    """The parsed ``params.json`` of ``config`` ('s3d' or 'tsm_resnet_x1')."""
    return json.loads((DATA / config / "params.json").read_text())


def key_shapes(config: str) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """``(params, state)``: official key → haiku shape. ``config`` may also be 'tsm_resnet_x2'
    (derived from x1 by the width rule, see :func:`widen_tsm_shapes`)."""
    if config == "tsm_resnet_x2":
        p, s = key_shapes("tsm_resnet_x1")
        return widen_tsm_shapes(p), widen_tsm_shapes(s)
    d = params_json(config)
    return ({k: tuple(v["shape"]) for k, v in d["params"].items()},
            {k: tuple(v["shape"]) for k, v in d["state"].items()})


def widen_tsm_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``mmv_tsm_resnet_x2`` from those of x1: every TSM channel count doubles (the stem's
    3 RGB input channels excepted), and so does the input of the video→audio head."""
    out = {}
    for k, shape in shapes.items():
        s = list(shape)
        if k.startswith(TSM) and s:
            if k.endswith("/w"):  # conv [kh, kw, Cin, Cout]
                s[-1] *= 2
                if s[-2] != 3:
                    s[-2] *= 2
            else:  # BN [1, 1, 1, C]
                s[-1] *= 2
        elif k == VID2AUDIO_INNER_W:
            s[0] *= 2
        out[k] = tuple(s)
    return out


def fill(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The deterministic value of official leaf ``key`` (README "Deterministic fill rule")."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    leaf = key.rsplit("/", 1)[-1]
    if key.endswith("/counter"):
        return np.zeros(shape, np.int32)
    if key.endswith("/hidden"):
        return np.zeros(shape, np.float32)
    if key.endswith("/mean_ema/average"):
        v = rng.standard_normal(shape) * 0.1
    elif key.endswith("/var_ema/average"):
        v = rng.uniform(0.5, 1.5, shape)
    elif leaf == "w":
        v = rng.standard_normal(shape) * math.sqrt(1.0 / math.prod(shape[:-1]))
    elif leaf in ("b", "offset"):
        v = rng.standard_normal(shape) * 0.1
    elif leaf == "scale":
        v = 1.0 + rng.standard_normal(shape) * 0.1
    elif leaf == "embeddings":
        v = rng.standard_normal(shape) * 0.1
    else:
        raise ValueError(f"no fill rule for {key}")
    return v.astype(np.float32)


def official_mapping(config: str, two_level: bool = False, zeros: bool = False) -> dict[str, dict[str, Any]]:
    """``{'params': ..., 'state': ...}`` filled by the rule (or with zeros, when only keys and shapes
    matter), flat ``"module/leaf"`` keys, or haiku's two-level ``{module: {leaf: array}}`` with
    ``two_level=True``."""
    out: dict[str, dict[str, Any]] = {}
    for kind, shapes in zip(("params", "state"), key_shapes(config)):
        if zeros:
            flat = {k: np.zeros(s, np.int32 if k.endswith("/counter") else np.float32) for k, s in shapes.items()}
        else:
            flat = dict(_filled(config, kind))  # a new dict of the cached (read-only) arrays
        if two_level:
            nested: dict[str, dict[str, np.ndarray]] = {}
            for k, v in flat.items():
                module, leaf = k.rsplit("/", 1)
                nested.setdefault(module, {})[leaf] = v
            out[kind] = nested
        else:
            out[kind] = flat
    return out


@cache
def _filled(config: str, kind: str) -> tuple[tuple[str, np.ndarray], ...]:
    """Fill-rule leaves of ``config`` (``kind`` 'params' or 'state'), computed once, read-only."""
    shapes = key_shapes(config)[0 if kind == "params" else 1]
    items = []
    for k, s in shapes.items():
        v = fill(k, s)
        v.flags.writeable = False
        items.append((k, v))
    return tuple(items)


def load_npz(config: str, name: str) -> dict[str, np.ndarray]:
    """``inputs``, ``outputs`` or ``intermediates`` of ``config`` as a dict of arrays."""
    with np.load(DATA / config / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def reduce_intermediate(x: np.ndarray) -> dict[str, np.ndarray]:
    """The recorded summaries of a channels-last map: ``mean`` over all axes but the first and last
    (``[N, C]``), ``slice0`` = ``x[0, ..., :8]`` and the full ``shape``."""
    axes = tuple(range(1, x.ndim - 1))
    return {"mean": x.mean(axis=axes), "slice0": x[0, ..., :8], "shape": np.asarray(x.shape)}
