"""Feature extraction: embeddings of a labelled set, averaged over windows and crops, saved as npy + index.

Batch contract (what the data loader yields; the data package builds such loaders):

- ``batch[modality]``: ``(B, V, *item)`` with V views per item (temporal windows × spatial crops,
  e.g. 10 linearly spaced windows of a test video), or ``(B, *item)`` for a single view. Items are
  video ``(3, T, H, W)``, audio ``(1, T, F)``, text ids ``(N,)``, image ``(3, H, W)``.
- ``batch["index"]``: ``(B,)`` integer row of every item in the dataset (used to order the output
  and to drop the duplicates a distributed sampler pads with).
- optional ``batch["word_mask"]`` for text, shaped like the ids.

The model is any callable: for ``video|audio|text`` an MMV-like module called as
``model(**{modality: x})`` returning ``emb[modality][space]`` (space ``va|vt|at|repr``); for
``image`` a module mapping ``(B, 3, H, W)`` to ``(B, D)`` (a deflated or input-inflated video network
from :mod:`mmv_torch.models.deflate`), or an MMV-like module returning a dict under ``"image"``.

Across ranks every process embeds its shard and the shards are gathered (padded to a common length
with :func:`mmv_torch.dist.all_gather`), de-duplicated by ``index`` and sorted, so every rank returns
the full ``(N, D)`` array.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch import dist
from mmv_torch.fileio import atomic_write, atomic_write_text

ITEM_DIMS = {"video": 4, "audio": 3, "text": 1, "image": 3}
"""Dimensions of one item of each modality (without batch and view axes)."""
SPACES = ("va", "vt", "at", "repr")


def make_encoder(model: Callable[..., Any], modality: str, space: str = "repr"
                 ) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A function ``(x (B', *item), word_mask | None) -> (B', D)`` embedding one modality into ``space``."""
    if modality not in ITEM_DIMS:
        raise ValueError(f"modality must be one of {list(ITEM_DIMS)}, got {modality!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {list(SPACES)}, got {space!r}")

    def encode(x: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
        if modality == "image":
            out = model(x)
            if isinstance(out, Mapping):
                out = out["image"][space]
        else:
            kwargs: dict[str, torch.Tensor] = {modality: x}
            if modality == "text" and word_mask is not None:
                kwargs["word_mask"] = word_mask
            emb = model(**kwargs)
            if space not in emb[modality]:
                raise ValueError(f"the model gives {modality} embeddings in {sorted(emb[modality])}, not {space!r}")
            out = emb[modality][space]
        if out.dim() != 2:
            raise ValueError(f"{modality} encoder returned shape {tuple(out.shape)}; expected (B, D)")
        return out

    return encode


def _gather_rows(feats: torch.Tensor, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (n_r, ...) features and (n_r,) indices of every rank (n_r may differ) -> concatenated."""
    if dist.world_size() == 1:
        return feats, index
    n = torch.tensor([feats.shape[0]], device=device)
    counts = dist.all_gather(n).cpu().tolist()
    m = max(counts)
    pad_f = torch.zeros((m - feats.shape[0], *feats.shape[1:]), dtype=feats.dtype)
    pad_i = torch.full((m - index.shape[0],), -1, dtype=index.dtype)
    all_f = dist.all_gather(torch.cat([feats, pad_f]).to(device)).cpu()
    all_i = dist.all_gather(torch.cat([index, pad_i]).to(device)).cpu()
    keep = torch.cat([torch.arange(r * m, r * m + c) for r, c in enumerate(counts)])
    return all_f[keep], all_i[keep]


@torch.no_grad()
def extract_features(model: Callable[..., Any], loader: Iterable[Mapping[str, Any]], modality: str,
                     space: str = "repr", reduce: str = "mean", device: torch.device | str | None = None,
                     views_per_forward: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed every item of ``loader`` (see the module doc for the batch contract).

    Returns ``(features, index)``: ``features`` float32 ``(N, D)`` averaged over the V views of each
    item (``reduce='mean'``) or ``(N, V, D)`` per view (``reduce='none'``, for the official protocol
    that averages classifier scores over windows), rows sorted by dataset ``index`` (N,) int64. The
    views of a batch go through the model together as ``B*V`` rows, in slices of at most
    ``views_per_forward`` rows when given. A module ``model`` is put in eval mode (and restored).
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    encode = make_encoder(model, modality, space)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    item_dims = ITEM_DIMS[modality]
    feats: list[torch.Tensor] = []
    indices: list[torch.Tensor] = []
    try:
        from mmv_torch.progress import bar

        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        for batch in bar(loader, total=total, desc=f"{modality} features", unit="batch", leave=False):
            if modality not in batch or "index" not in batch:
                raise ValueError(f"feature extraction needs batches with keys {modality!r} and 'index'; "
                                 f"got {sorted(batch)}")
            x = torch.as_tensor(batch[modality])
            mask = batch.get("word_mask")
            if x.dim() == item_dims + 1:
                x = x[:, None]
                mask = None if mask is None else torch.as_tensor(mask)[:, None]
            elif x.dim() != item_dims + 2:
                raise ValueError(f"{modality} batch must be (B, *item) or (B, V, *item) with {item_dims}-D "
                                 f"items; got shape {tuple(x.shape)}")
            b, v = x.shape[:2]
            flat = x.reshape(b * v, *x.shape[2:])
            flat_mask = None if mask is None else torch.as_tensor(mask).reshape(b * v, -1)
            step = views_per_forward or flat.shape[0]
            outs = []
            for i in range(0, flat.shape[0], step):
                xm = flat[i:i + step].to(dev, non_blocking=True)
                mm = None if flat_mask is None else flat_mask[i:i + step].to(dev)
                outs.append(encode(xm, mm).float().cpu())
            e = torch.cat(outs).reshape(b, v, -1)
            feats.append(e.mean(dim=1) if reduce == "mean" else e)
            indices.append(torch.as_tensor(batch["index"]).reshape(-1).long())
    finally:
        if was_training:
            model.train()  # type: ignore[union-attr]
    if not feats:
        raise ValueError("feature extraction: the loader yielded no batches")
    all_f, all_i = _gather_rows(torch.cat(feats), torch.cat(indices), dev)
    idx = all_i.numpy()
    uniq, first = np.unique(idx, return_index=True)  # sorted, first occurrence of each index
    return all_f.numpy()[first], uniq.astype(np.int64)


def extract_epochs(model: Callable[..., Any], loader: Iterable[Mapping[str, Any]], modality: str, epochs: int,
                   space: str = "repr", device: torch.device | str | None = None,
                   set_epoch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training features over ``epochs`` passes of an augmenting loader (the official protocol uses 10).

    Returns ``(features (epochs*N, D), index (epochs*N,))``; the augmentations must differ per pass
    (the loader's random state advances, or ``set_epoch(e)`` reseeds it, e.g. a sampler's set_epoch).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    fs, ix = [], []
    for e in range(epochs):
        if set_epoch is not None:
            set_epoch(e)
        f, i = extract_features(model, loader, modality, space, "mean", device)
        fs.append(f)
        ix.append(i)
    return np.concatenate(fs), np.concatenate(ix)


def index_path(out: str | Path) -> Path:
    """Where :func:`save_features` puts the index of ``out``: ``<out without .npy>.index.json``."""
    p = Path(out)
    return p.with_name((p.name[:-4] if p.name.endswith(".npy") else p.name) + ".index.json")


def save_features(out: str | Path, features: np.ndarray, index: np.ndarray,
                  records: list[Mapping[str, Any]] | None = None, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``features`` to ``out`` (.npy appended if missing) and the index JSON beside it.

    The index JSON holds ``info`` (modality, space, windows, checkpoint, ...), the shape and one entry
    per row: ``{"row", "index"}`` plus the dataset record of that index when ``records`` (the manifest
    lines, indexed by dataset row) is given. Both files are written atomically. Returns the npy path.
    """
    p = Path(out)
    if p.suffix != ".npy":
        p = p.with_name(p.name + ".npy")
    if features.shape[0] != index.shape[0]:
        raise ValueError(f"save_features: {features.shape[0]} rows but {index.shape[0]} indices")
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for r, i in enumerate(index.tolist()):
        entry: dict[str, Any] = {"row": r, "index": int(i)}
        if records is not None:
            if not 0 <= i < len(records):
                raise ValueError(f"save_features: index {i} outside the {len(records)} records")
            entry.update({k: v for k, v in records[i].items() if k not in entry})
        rows.append(entry)
    meta = {**(info or {}), "shape": list(features.shape), "dtype": str(features.dtype), "items": rows}

    def write_npy(t: Path) -> None:
        with open(t, "wb") as f:
            np.save(f, features)

    atomic_write(p, write_npy)
    atomic_write_text(index_path(p), json.dumps(meta, indent=1))
    return p


def load_features(out: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read what :func:`save_features` wrote: ``(features, index_json)``."""
    p = Path(out)
    if p.suffix != ".npy":
        p = p.with_name(p.name + ".npy")
    if not p.is_file() or not index_path(p).is_file():
        raise ValueError(f"features {p} or its index {index_path(p)} is missing")
    return np.load(p), json.loads(index_path(p).read_text())


def run_embed(model: Callable[..., Any], loader: Iterable[Mapping[str, Any]], modality: str, space: str,
              out: str | Path, records: list[Mapping[str, Any]] | None = None,
              device: torch.device | str | None = None, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``mmv-torch embed`` calls: extract (views averaged), write npy + index on the main rank.

    Returns ``{"path", "index_path", "shape", "modality", "space"}``.
    """
    feats, index = extract_features(model, loader, modality, space, "mean", device)
    settings = {"modality": modality, "space": space, **(info or {})}
    path = Path(out) if str(out).endswith(".npy") else Path(str(out) + ".npy")
    if dist.is_main():
        path = save_features(out, feats, index, records, settings)
    dist.barrier()
    return {"path": str(path), "index_path": str(index_path(path)), "shape": list(feats.shape),
            "modality": modality, "space": space}
