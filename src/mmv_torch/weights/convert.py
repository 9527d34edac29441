"""DeepMind's released MMV checkpoints (JAX/Haiku pickles) → :class:`~mmv_torch.models.mmv.MMV`.

Three parts:

1. **The checkpoint tree.** :func:`official_leaves` takes a released pickle (read by
   :func:`mmv_torch.weights.unpickle.load_official_pickle`, a restricted unpickler that executes nothing
   from the file) or an already loaded mapping and flattens its ``params`` and ``state`` into
   ``{"module/leaf": ndarray}``.
2. **Conversion.** :func:`load_official` infers the architecture from the keys and shapes (not the
   file name), builds the model and maps every official key exactly once through the key table
   (:data:`KEY_TABLE`, rows of ``compiled pattern → target template`` tried in order, then the rows
   of the model's heads; :func:`official_to_torch_key`): Conv3D ``[kt,kh,kw,Cin,Cout]`` →
   ``[Cout,Cin,kt,kh,kw]``, Conv2D ``[kh,kw,Cin,Cout]`` → ``[Cout,Cin,kh,kw]``, Linear ``[in,out]``
   → ``[out,in]``, the kernel-1 Conv1D ``text_conv1`` ``[1,300,2048]`` → Linear ``[2048,300]``, BN
   ``scale/offset/mean_ema/var_ema`` ``[1,..,1,C]`` → ``[C]`` (eps 1e-5). The EMA ``counter`` goes
   to ``num_batches_tracked``; the EMA ``hidden`` (= average·(1-0.9^counter), training-only) is
   shape-checked and dropped. Missing, unknown, duplicate or mis-shaped keys raise ONE
   ``ValueError`` listing them all.
3. **Checkpoint folder.** :func:`convert_checkpoint` writes ``model.safetensors`` + ``config.json``
   for ``create_model(checkpoint=OUT_DIR)``.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch.config import (
    AudioConfig,
    BatchNormConfig,
    Config,
    HeadConfig,
    ModelConfig,
    SpaceConfig,
    TextConfig,
    VideoConfig,
    apply_overrides,
    get_preset,
)
from mmv_torch.models.mmv import MMV
from mmv_torch.weights.folder import check_replaceable, write_weights_folder
from mmv_torch.weights.unpickle import load_official_pickle

ROOT = "text_audio_video/"
"""Top-level haiku module name of every official key."""

# Official head name -> this package's head name (``MMV.heads`` key).
HEAD_NAMES = {
    "vid2audio_embd": "video_va", "vis_embd": "video_vt", "audio_embd": "audio_va",
    "audio2txt_embd": "audio_at", "txt_embd": "text_vt", "txt2audio_embd": "text_at",
}


# =============================================================================================
# 1. The checkpoint tree


def _as_array(value: Any, key: str, source: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not (isinstance(value, (np.ndarray, np.generic, int, float)) or hasattr(value, "__array__")):
        raise ValueError(f"{source}: leaf {key!r} is a {type(value).__name__}, not an array")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{source}: leaf {key!r} has dtype {arr.dtype}, not a numeric array")
    return arr


def flatten_tree(tree: Mapping[str, Any], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """``{module: {leaf: array}}`` (haiku layout, any nesting) or ``{"module/leaf": array}`` →
    ``{"module/leaf": ndarray}``."""
    flat: dict[str, np.ndarray] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if not isinstance(k, str):
                raise ValueError(f"{source}: key {k!r} under {prefix or '/'} is not a string")
            key = f"{prefix}/{k}" if prefix else k
            if isinstance(v, Mapping):
                walk(v, key)
            else:
                if key in flat:
                    raise ValueError(f"{source}: key {key!r} appears twice")
                flat[key] = _as_array(v, key, source)

    walk(tree, "")
    return flat


def official_leaves(path_or_mapping: str | Path | Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                             dict[str, np.ndarray], str]:
    """The flat ``params`` and ``state`` of an official checkpoint (file or loaded mapping) and a
    source name for messages. Other top-level keys (e.g. optimizer state) are ignored."""
    if isinstance(path_or_mapping, Mapping):
        tree, source = dict(path_or_mapping), "official mapping"
    else:
        tree, source = load_official_pickle(path_or_mapping), str(path_or_mapping)
    missing = [k for k in ("params", "state") if k not in tree]
    if missing:
        raise ValueError(f"{source}: missing top-level {missing}; found {sorted(map(str, tree))}")
    for k in ("params", "state"):
        if not isinstance(tree[k], Mapping):
            raise ValueError(f"{source}: '{k}' is a {type(tree[k]).__name__}, not a mapping")
    return flatten_tree(tree["params"], f"{source}['params']"), flatten_tree(tree["state"], f"{source}['state']"), \
        source


# =============================================================================================
# 2. Architecture inference

_S3D = ROOT + "visual_module/~/S3D/"
_TSM = ROOT + "visual_module/~/TSMResNetV2/"
_AUDIO = ROOT + "audio_module/~/res_net_v2/"
_TEXT = ROOT + "text_module/~/"
_HEADS = ROOT + "~_get_pair_embedding_heads/"

_DEPTH_BY_BLOCKS = {(2, 2, 2, 2): (18,), (3, 4, 6, 3): (34, 50), (3, 4, 23, 3): (101,), (3, 8, 36, 3): (152,)}


def _get(params: Mapping[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in params:
        raise ValueError(f"{source}: cannot infer the architecture, key {key!r} is missing")
    return params[key]


def _resnet_depth(params: Mapping[str, np.ndarray], group_re: str, source: str) -> int:
    """Depth from the number of blocks per group (``group_re`` captures group and block index)."""
    blocks: dict[int, set[int]] = collections.defaultdict(set)
    bottleneck = False
    for k in params:
        m = re.match(group_re, k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
            bottleneck |= "conv_2/" in k
    counts = tuple(len(blocks[i]) for i in range(4))
    if sorted(blocks) != [0, 1, 2, 3] or counts not in _DEPTH_BY_BLOCKS:
        raise ValueError(f"{source}: ResNet block groups {dict(sorted((i, len(b)) for i, b in blocks.items()))} "
                         f"match no depth in {sorted(d for ds in _DEPTH_BY_BLOCKS.values() for d in ds)}")
    depths = _DEPTH_BY_BLOCKS[counts]
    return depths[-1] if bottleneck else depths[0]


def _head_config(params: Mapping[str, np.ndarray], name: str, source: str) -> tuple[int, int, HeadConfig]:
    """``(in_dim, out_dim, HeadConfig)`` of the official head ``name`` from its keys and shapes."""
    prefix = f"{_HEADS}{name}/"
    inner = {}
    for k, v in params.items():
        m = re.fullmatch(re.escape(prefix) + r"final_projection_inner(?:_(\d+))?/w", k)
        if m:
            inner[int(m.group(1) or 0)] = v
    hidden = tuple(int(inner[i].shape[-1]) for i in range(len(inner)))
    if sorted(inner) != list(range(len(inner))):
        raise ValueError(f"{source}: head {name} has inner projections {sorted(inner)}, not 0..{len(inner) - 1}")
    final = _get(params, f"{prefix}final_projection/w", source)
    bn_re = re.escape(prefix) + r"(__cross_replica_batch_norm(?:_\d+)?)/"
    bns = {m.group(1) for k in params if (m := re.match(bn_re, k))}
    if hidden:
        bn_after = f"{prefix}final_projection/b" not in params
    else:
        bn_after = len(bns) == 1
    n_inner_bn = len(bns) - int(bn_after)
    if n_inner_bn not in (0, len(hidden)):
        raise ValueError(f"{source}: head {name} has {len(bns)} BatchNorms, which fits neither an 'mlp' nor an "
                         f"'mlp_nobn' head with hidden sizes {hidden}")
    cfg = HeadConfig(hidden=hidden, inner_bn=bool(hidden) and n_inner_bn == len(hidden), bn_after_proj=bn_after)
    in_dim = int(inner[0].shape[0]) if hidden else int(final.shape[0])
    return in_dim, int(final.shape[-1]), cfg


def infer_model_config(params: Mapping[str, np.ndarray], source: str = "checkpoint") -> ModelConfig:
    """The :class:`ModelConfig` of an official checkpoint from its param keys and shapes.

    The video backbone is S3D (stem from the ``Conv2d_1a_7x7`` kernel: ``[2,4,4,24,C]`` is the
    space-to-depth stem, ``[7,7,7,3,C]`` the standard one) or TSM-ResNet (depth from the blocks per
    unit, ``width_mult = C/64`` from the stem). The graph is FAC with a ReLU (all released models).
    """
    keys = list(params)
    if any(k.startswith(_S3D) for k in keys):
        w = _get(params, _S3D + "Conv2d_1a_7x7/~/conv3_d/w", source)
        if w.shape[:4] == (2, 4, 4, 24):
            stem = "space_to_depth"
        elif w.shape[:4] == (7, 7, 7, 3):
            stem = "standard"
        else:
            raise ValueError(f"{source}: S3D stem kernel of shape {w.shape} is neither [2,4,4,24,C] nor [7,7,7,3,C]")
        video = VideoConfig(backbone="s3d", width_mult=w.shape[-1] / 64, s3d_stem=stem,
                            s3d_gating=any(k.startswith(_S3D) and "/self_gating/" in k for k in keys))
    elif any(k.startswith(_TSM) for k in keys):
        w = _get(params, _TSM + "tsm_resnet_stem/w", source)
        depth = _resnet_depth(params, re.escape(_TSM) + r"tsm_resnet_unit_(\d+)/block_(\d+)/", source)
        video = VideoConfig(backbone="tsm_resnet", depth=depth, width_mult=w.shape[-1] / 64)
    else:
        tops = sorted({"/".join(k.split("/")[:3]) for k in keys})
        raise ValueError(f"{source}: no S3D or TSMResNetV2 visual module found; top-level modules: {tops}")
    w = _get(params, _AUDIO + "~/initial_conv/w", source)
    audio = AudioConfig(depth=_resnet_depth(params, re.escape(_AUDIO) + r"~/block_group_(\d+)/block_(\d+)/", source),
                        width_mult=w.shape[-1] / 64)
    emb = _get(params, _TEXT + "embed/embeddings", source)
    conv = _get(params, _TEXT + "text_conv1/w", source)
    text = TextConfig(vocab_size=int(emb.shape[0]), word_dim=int(emb.shape[1]), hidden_dim=int(conv.shape[-1]))
    heads = {name: _head_config(params, name, source) for name in HEAD_NAMES}
    va, vt, at = heads["audio_embd"][1], heads["txt_embd"][1], heads["txt2audio_embd"][1]
    if heads["vis_embd"][0] != heads["vid2audio_embd"][1]:
        raise ValueError(f"{source}: vis_embd takes {heads['vis_embd'][0]} inputs, not the "
                         f"{heads['vid2audio_embd'][1]} of vid2audio_embd: not a FAC checkpoint")
    spaces = {
        "va": SpaceConfig(va, heads["vid2audio_embd"][2], heads["audio_embd"][2]),
        "vt": SpaceConfig(vt, heads["vis_embd"][2], heads["txt_embd"][2]),
        "at": SpaceConfig(at, heads["audio2txt_embd"][2], heads["txt2audio_embd"][2]),
    }
    return ModelConfig(video=video, audio=audio, text=text, graph="fac", fac_activation="relu", spaces=spaces,
                       bn=BatchNormConfig(eps=1e-5))


def infer_config(params: Mapping[str, np.ndarray], source: str = "checkpoint") -> Config:
    """The full :class:`Config`: the matching preset with the inferred model config."""
    model = infer_model_config(params, source)
    if model.video.backbone == "s3d":
        preset = "mmv_s3d"
    else:
        preset = "mmv_tsm_r50x2" if model.video.width_mult == 2 else "mmv_tsm_r50"
    return dataclasses.replace(get_preset(preset), model=model)


# =============================================================================================
# 2b. The key table
#
# Each row maps one kind of official module to the ``state_dict`` prefix of the module holding its
# weights: ``pattern`` (relative to ``text_audio_video/``; its groups, lower-cased, fill the ``{0}``,
# ``{1}``, ... of the template) and the leaves that module has. Rows are tried in order and the
# first full match wins; a key no row matches is unknown.

_LAYER = {"w": "weight", "b": "bias", "embeddings": "weight"}
"""Leaves of a convolution, linear or embedding module (haiku → torch)."""
_BN = {"scale": "weight", "offset": "bias", "~/mean_ema/average": "running_mean",
       "~/var_ema/average": "running_var", "~/mean_ema/counter": "num_batches_tracked",
       "~/mean_ema/hidden": None, "~/var_ema/hidden": None, "~/var_ema/counter": None}
"""Leaves of a BatchNorm (haiku → torch); ``None``: understood but not stored (training-only EMA
``hidden`` and the duplicate ``var_ema/counter``)."""


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One row of the key table: an official key matching ``pattern`` maps to ``template``.

    ``pattern`` matches the whole official key and ends in the named group ``leaf``; ``template`` is
    filled with the lower-cased positional groups and ``leaf=leaves[leaf]`` (``None``: nothing to
    store).
    """

    pattern: re.Pattern[str]
    template: str
    leaves: Mapping[str, str | None]

    def target(self, key: str) -> str | None | bool:
        """The torch key of ``key``, ``None`` for a leaf that is not stored, ``False`` if no match."""
        m = self.pattern.fullmatch(key)
        if m is None:
            return False
        leaf = self.leaves[m["leaf"]]
        groups = [g.lower() for g in m.groups()[:-1]]
        return None if leaf is None else self.template.format(*groups, leaf=leaf)


def _rule(module: str, target: str, leaves: Mapping[str, str | None]) -> KeyRule:
    """The row ``ROOT + module + '/' + leaf`` → ``target + '.' + torch leaf``."""
    leaf_re = "|".join(re.escape(leaf) for leaf in leaves)
    return KeyRule(re.compile(f"{re.escape(ROOT)}{module}/(?P<leaf>{leaf_re})"), target + ".{leaf}", leaves)


_BN_NAME = "__cross_replica_batch_norm"  # haiku numbers repeated modules: name, name_1, name_2, ...
_S3D_CONV = r"visual_module/~/S3D/(Conv2d_\w+)"
_S3D_BRANCH = r"visual_module/~/S3D/(Mixed_\w+)/(Branch_\d_\w+)"
_TSM_BLOCK = r"visual_module/~/TSMResNetV2/tsm_resnet_unit_(\d+)/block_(\d+)"
_AUDIO_BLOCK = r"audio_module/~/res_net_v2/~/block_group_(\d+)/block_(\d+)"

KEY_TABLE: tuple[KeyRule, ...] = (
    # S3D stem and Conv2d units: the (spatial) conv, the temporal conv, their BNs, the self-gating.
    _rule(f"{_S3D_CONV}/~/conv3_d", "video.{0}.conv", _LAYER),
    _rule(f"{_S3D_CONV}/~/conv3_d_1", "video.{0}.conv_t", _LAYER),
    _rule(f"{_S3D_CONV}/{_BN_NAME}", "video.{0}.bn", _BN),
    _rule(f"{_S3D_CONV}/{_BN_NAME}_1", "video.{0}.bn_t", _BN),
    _rule(f"{_S3D_CONV}/self_gating", "video.{0}.gating.self_gating", _LAYER),
    # S3D Mixed blocks: the same unit in every branch.
    _rule(f"{_S3D_BRANCH}/~/conv3_d", "video.{0}.{1}.conv", _LAYER),
    _rule(f"{_S3D_BRANCH}/~/conv3_d_1", "video.{0}.{1}.conv_t", _LAYER),
    _rule(f"{_S3D_BRANCH}/{_BN_NAME}", "video.{0}.{1}.bn", _BN),
    _rule(f"{_S3D_BRANCH}/{_BN_NAME}_1", "video.{0}.{1}.bn_t", _BN),
    _rule(f"{_S3D_BRANCH}/self_gating", "video.{0}.{1}.gating.self_gating", _LAYER),
    # TSM-ResNet: the stem conv, each block's convs and pre-activation BNs, the final BN.
    _rule(r"visual_module/~/TSMResNetV2/tsm_resnet_stem", "video.stem", _LAYER),
    _rule(rf"{_TSM_BLOCK}/(?:~/)?(conv_[012]|shortcut_conv)", "video.unit_{0}.block_{1}.{2}", _LAYER),
    _rule(f"{_TSM_BLOCK}/{_BN_NAME}", "video.unit_{0}.block_{1}.bn_0", _BN),
    _rule(f"{_TSM_BLOCK}/{_BN_NAME}_([12])", "video.unit_{0}.block_{1}.bn_{2}", _BN),
    _rule(f"visual_module/~/TSMResNetV2/{_BN_NAME}", "video.final_bn", _BN),
    # Audio ResNet: the initial conv, each block's convs and BNs, the final BN.
    _rule(r"audio_module/~/res_net_v2/~/initial_conv", "audio.initial_conv", _LAYER),
    _rule(rf"{_AUDIO_BLOCK}/(?:~/)?(conv_[012]|shortcut_conv)", "audio.block_group_{0}.block_{1}.{2}", _LAYER),
    _rule(f"{_AUDIO_BLOCK}/{_BN_NAME}", "audio.block_group_{0}.block_{1}.bn_0", _BN),
    _rule(f"{_AUDIO_BLOCK}/{_BN_NAME}_([12])", "audio.block_group_{0}.block_{1}.bn_{2}", _BN),
    _rule(f"audio_module/~/res_net_v2/{_BN_NAME}", "audio.final_bn", _BN),
    # Text tower: the word embeddings and the kernel-1 conv.
    _rule(r"text_module/~/(embed|text_conv1)", "text.{0}", _LAYER),
)
"""The rows of the backbones and the text tower; :func:`key_table` adds those of the heads."""


def _bn_name(index: int) -> str:
    return _BN_NAME if index == 0 else f"{_BN_NAME}_{index}"


@functools.lru_cache(maxsize=16)
def _head_rules(layout: tuple[tuple[str, str, int], ...]) -> tuple[KeyRule, ...]:
    """Rows of the heads ``(official name, MMV.heads key, BNs between the MLP layers)``."""
    rows = []
    for official, name, n_inner_bn in layout:
        src, dst = f"~_get_pair_embedding_heads/{official}", f"heads.{name}"
        rows += [
            # The MLP's inner layers and the final projection.
            _rule(f"{src}/final_projection_inner", f"{dst}.final_projection_inner.0", _LAYER),
            _rule(rf"{src}/final_projection_inner_(\d+)", dst + ".final_projection_inner.{0}", _LAYER),
            _rule(f"{src}/final_projection", f"{dst}.final_projection", _LAYER),
            # The BNs after the inner layers (inner_bn.K), then the one after the final projection.
            *(_rule(f"{src}/{_bn_name(k)}", f"{dst}.inner_bn.{k}", _BN) for k in range(n_inner_bn)),
            _rule(f"{src}/{_bn_name(n_inner_bn)}", f"{dst}.final_bn", _BN),
        ]
    return tuple(rows)


def key_table(model: MMV) -> tuple[KeyRule, ...]:
    """The key table of ``model``: :data:`KEY_TABLE`, then the rows of its projection heads.

    A head's BatchNorms are numbered by haiku in creation order, so which one is ``final_bn``
    depends on how many BatchNorms the head has between its MLP layers.
    """
    layout = tuple((official, name, sum(isinstance(b, nn.BatchNorm1d) for b in model.heads[name].inner_bn))
                   for official, name in HEAD_NAMES.items() if name in model.heads)
    return KEY_TABLE + _head_rules(layout)


def _lookup(key: str, table: tuple[KeyRule, ...]) -> str | None | bool:
    """The target of the first row of ``table`` matching ``key``; ``False`` when none does."""
    for rule in table:
        target = rule.target(key)
        if target is not False:
            return target
    return False


def official_to_torch_key(key: str, model: MMV) -> str | None:
    """The ``state_dict`` key of ``model`` that the official ``key`` maps to.

    Returns ``None`` when the official key is understood but carries nothing to store (the
    training-only EMA ``hidden`` and the duplicate ``var_ema/counter``); raises ``KeyError`` when the
    key is not part of the table.
    """
    out = _lookup(key, key_table(model))
    if out is False:
        raise KeyError(key)
    return out  # type: ignore[return-value]


def _to_torch_layout(key: str, arr: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray | None:
    """Official array → PyTorch layout for a target of ``target_shape``; ``None`` if the shape cannot fit."""
    leaf = key.rsplit("/", 1)[-1]
    if leaf == "w":
        if arr.ndim == 5:
            arr = arr.transpose(4, 3, 0, 1, 2)
        elif arr.ndim == 4:
            arr = arr.transpose(3, 2, 0, 1)
        elif arr.ndim == 3 and arr.shape[0] == 1:  # kernel-1 Conv1D used as a Linear
            arr = arr[0].T
        elif arr.ndim == 2:
            arr = arr.T
        else:
            return None
    elif leaf in ("scale", "offset", "average") or key.endswith("/hidden"):
        if arr.ndim == 0 or any(d != 1 for d in arr.shape[:-1]):
            return None
        arr = arr.reshape(-1)
    elif leaf == "counter":
        if arr.size != 1:
            return None
        arr = arr.reshape(())
    if tuple(arr.shape) != tuple(target_shape):
        return None
    return arr


def official_state_dict(params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray], model: MMV,
                        source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of ``model`` filled from the official flat ``params`` and ``state``.

    Every official key is used exactly once; the error lists every missing, unknown, duplicate and
    mis-shaped key at once. Tensors take the dtype of ``model``'s own tensors.
    """
    own = model.state_dict()
    table = key_table(model)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unknown, misshaped, duplicate = [], [], []
    for kind, tree in (("params", params), ("state", state)):
        for key, arr in tree.items():
            target = _lookup(key, table)
            if key.endswith("/hidden") or key.endswith("/var_ema/counter"):
                # Training-only EMA leaves: checked against their BN module's average, not stored.
                ema = key.rsplit("/", 1)[0]
                sibling = f"{ema}/average"
                if target is None and _lookup(sibling, table) in own:
                    ok = arr.size == 1 if key.endswith("counter") else (
                        sibling not in tree or np.shape(arr) == np.shape(tree[sibling]))
                    if not ok:
                        misshaped.append(f"{kind} {key}: shape {list(np.shape(arr))}")
                    continue
                target = False
            if target is False or target is None or target not in own:
                unknown.append(f"{kind} {key}")
                continue
            if target in out:
                duplicate.append(f"{kind} {key} and {origin[target]} -> {target}")
                continue
            conv = _to_torch_layout(key, np.asarray(arr), tuple(own[target].shape))
            if conv is None:
                misshaped.append(f"{kind} {key}: shape {list(arr.shape)} does not fit {target} "
                                 f"{list(own[target].shape)}")
                continue
            # Same dtype and strides (memory format) as the model's own tensor.
            ref = own[target]
            t = torch.empty_strided(tuple(ref.shape), ref.stride(), dtype=ref.dtype)
            out[target] = t.copy_(torch.from_numpy(np.array(conv, order="C")))
            origin[target] = key
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    for k in own:
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = torch.zeros((), dtype=own[k].dtype)
    if missing or unknown or misshaped or duplicate:
        parts = []
        for title, items in (("missing (model keys without an official source)", missing),
                             ("unknown official keys", unknown), ("mis-shaped", misshaped),
                             ("duplicates", duplicate)):
            if items:
                parts.append(f"{len(items)} {title}:\n  " + "\n  ".join(sorted(items)))
        raise ValueError(f"{source} does not match the inferred model "
                         f"({model.cfg.video.backbone}, width {model.cfg.video.width_mult}):\n" + "\n".join(parts))
    return out


def load_official(path_or_mapping: str | Path | Mapping[str, Any], dtype: torch.dtype = torch.float32) -> MMV:
    """An :class:`MMV` in eval mode holding the weights of an official MMV checkpoint.

    ``path_or_mapping`` is a released pickle (read with the restricted unpickler) or an already
    loaded ``{'params': ..., 'state': ...}`` mapping (two-level haiku or flat ``"module/leaf"`` keys,
    numpy/JAX/torch leaves). The architecture is inferred from keys and shapes.
    """
    params, state, source = official_leaves(path_or_mapping)
    return _build_loaded(infer_model_config(params, source), params, state, source, dtype).eval()


def _build_loaded(cfg: ModelConfig, params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray],
                  source: str, dtype: torch.dtype = torch.float32) -> MMV:
    """``MMV(cfg)`` holding the official weights. The model is built on the meta device (no random
    initialisation of ~60-140M parameters) and the converted tensors are assigned to it."""
    with torch.device("meta"):
        model = MMV(cfg).to(dtype)
    sd = official_state_dict(params, state, model, source)
    model.load_state_dict(sd, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left uninitialised after loading {source}: {left}")
    return model


# =============================================================================================
# 3. Conversion to a checkpoint folder


OFFICIAL_INPUTS = {
    "data.sample_rate": 48000, "data.audio_frontend": "dmvr", "data.audio_seconds": 3.2, "data.num_mel_bins": 80,
    "data.num_frames": 32, "data.fps": 12.5, "data.resize_short": 224, "data.eval_crop_size": 224,
    "data.crop_size": 224, "data.tokenizer": "dmvr", "data.max_words": 16,
}
"""The input contract of the released models, recorded in a converted checkpoint's ``config.json`` so
every command that loads it feeds them as they were fed: DMVR's log-mel front-end on 3.2 s of 48 kHz
audio, 32 frames at stride 2 from 25-fps video (12.5 fps) with a 224 short side and 224 crops (the
official UCF101 evaluation), and DMVR's tokenizer on up to 16 words (docs/official_inputs.md)."""


def convert_checkpoint(in_path: str | Path | Mapping[str, Any], out_dir: str | Path,
                       origin: Mapping[str, Any] | None = None, card: Callable[[Config], str] | None = None) -> Path:
    """Convert an official checkpoint into ``out_dir/model.safetensors`` + ``out_dir/config.json``.

    ``config.json`` is the resolved full :class:`Config` (preset of the inferred backbone with the
    inferred model and the released models' input contract, :data:`OFFICIAL_INPUTS`); the safetensors
    keys are :class:`MMV`'s own ``state_dict`` keys (float32).
    The folder is written whole (:func:`mmv_torch.weights.folder.write_weights_folder`): files of an
    earlier conversion (e.g. a ``vocab.txt`` for another table) do not survive; a folder holding other
    files is refused. ``origin`` (where the file came from, its licence and checksum) is recorded in
    ``config.json``, and ``card(cfg)`` written as the model card ``README.md`` (``mmv-torch fetch``).
    Returns ``out_dir``; load with ``create_model(checkpoint=out_dir)``.
    """
    check_replaceable(out_dir)
    params, state, source = official_leaves(in_path)
    cfg = apply_overrides(infer_config(params, source), OFFICIAL_INPUTS)
    model = _build_loaded(cfg.model, params, state, source)
    return write_weights_folder(out_dir, model.state_dict(), cfg,
                                metadata={"source": "official MMV checkpoint", "format": "pt"}, origin=origin,
                                card=None if card is None else card(cfg))
