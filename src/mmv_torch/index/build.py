"""``index build`` and ``index add``: every video of a folder or manifest cut into sliding windows,
embedded, stored file by file (a killed build resumes where it stopped) and made searchable."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from mmv_torch.data.datasets import clip_span
from mmv_torch.index.embedding import DecodedFile, decode_windows, embed_windows
from mmv_torch.index.nn import check_factory
from mmv_torch.index.store import IndexStore, is_index


class _WindowFiles(torch.utils.data.Dataset):
    """Decoded windows of each file (decoding runs in the loader's worker processes); a file that cannot
    be read comes back with ``error`` set instead of failing the build."""

    def __init__(self, paths: list[str], cfg: Any, window_s: float, stride_s: float) -> None:
        self.paths, self.cfg, self.window_s, self.stride_s = paths, cfg, window_s, stride_s

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> DecodedFile:
        try:
            return decode_windows(self.paths[i], self.cfg, self.window_s, self.stride_s)
        except Exception as e:  # a corrupt file is logged and skipped, whatever its decoder raised
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            return DecodedFile(self.paths[i], error=" ".join(str(reason).split()))


def _root_of(path: Path, root: Path) -> Path:
    """``root`` when ``path`` lies under it, else the file's own folder (a manifest may point elsewhere)."""
    try:
        path.resolve().relative_to(root.resolve())
        return root
    except ValueError:
        return path.resolve().parent


def list_videos(videos: str | Path) -> tuple[Path, list[Path]]:
    """(root folder, video files) of a folder (searched recursively) or a labelled JSONL manifest."""
    from mmv_torch.data.sources import open_source

    if not Path(videos).exists():
        raise ValueError(f"--videos {videos}: no such folder or manifest")
    src = open_source("video", data=str(videos))
    root = Path(videos) if Path(videos).is_dir() else Path(videos).parent
    files = [Path(e.path) for e in src.entries if e.modality == "video"]
    if not files:
        raise ValueError(f"{videos}: no video files")
    return root, files


def _settings(resolved: Any, vocab: str | None, word_mask: bool | None, window_s: float, stride_s: float
              ) -> dict[str, Any]:
    words = resolved.words is not None
    mask = words if word_mask is None else word_mask
    return {"checkpoint": str(Path(resolved.path).resolve()), "vocab": str(Path(vocab).resolve()) if vocab else None,
            "word_mask": mask, "window_s": window_s, "stride_s": stride_s}


def _open_store(out: str | Path, settings: dict[str, Any], add: bool, wait: bool = True) -> IndexStore:
    if add and not is_index(out):
        raise ValueError(f"{out}: not an index (create it with `mmv-torch index build`)")
    store = IndexStore(out, create=True, writer=True, wait=wait)  # the writer lock, before anything is read
    info = store.info()
    if info:
        changed = {k: (info.get(k), v) for k, v in settings.items() if k != "vocab" and info.get(k) != v}
        if changed:
            raise ValueError(f"{out} was built with other settings {changed} (old, new); build a new index in another "
                             "folder")
    else:
        store.set_info(**settings)
    return store


def _calibrate(store: IndexStore, resolved: Any, model: Any, vocab: str | None, word_mask: bool, text_search: bool,
               device: str) -> None:
    """Record the calibrated-score distributions of the changed index (:mod:`mmv_torch.index.calibrate`)."""
    from mmv_torch.index.calibrate import record_calibration
    from mmv_torch.weights.resolve import checkpoint_tokenizer

    if store.counts()["windows"] == 0:
        return
    model = model if model is not None else resolved.load_model(device)
    tokenizer = checkpoint_tokenizer(resolved, resolved.config, vocab)[0] if text_search else None
    record_calibration(store, model, tokenizer, word_mask, device)


def build_index(checkpoint: str | Path, videos: str | Path, out: str | Path, *, window_s: float | None = None,
                stride_s: float | None = None, workers: int = 0, vocab: str | None = None,
                word_mask: bool | None = None,
                device: str = "cpu", progress: bool = True, add: bool = False, prune: bool = False,
                wait: bool = True, memory_gb: float | None = None, nn_index: str | None = None) -> dict[str, Any]:
    """Index every video of ``videos`` (folder or manifest) into the index folder ``out``.

    Files already indexed with the same path, size and mtime are skipped, so running it again after a
    kill resumes, and ``add=True`` (an existing index only) adds a collection's new or changed files.
    Window length defaults to the checkpoint's clip span (``num_frames / fps``), the stride to the
    window. ``word_mask`` (None: when the checkpoint has its own word list) max-pools text over real
    words only. Files that cannot be decoded are reported on stderr and recorded, not indexed. The index's
    writer lock is held throughout: another writer is waited for (``wait``) or refused. Indexed files
    that no longer exist are counted (``missing_files``) and, with ``prune``, removed. Returns a
    summary: counts, the nearest-neighbour kind per space, the files skipped. ``memory_gb`` (a budget
    of resident memory for serving) or ``nn_index`` (a faiss factory string) chooses the
    nearest-neighbour indexes (:mod:`.nn`); an ``add`` keeps the recorded ones when not given."""
    from mmv_torch.data.text.tokenizer import MissingVocabularyError
    from mmv_torch.weights.resolve import checkpoint_tokenizer, resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint)
    cfg = resolved.config
    if nn_index is not None:
        for dim in {int(sp.dim) for sp in cfg.model.spaces.values()}:
            check_factory(nn_index, dim)
    window_s = float(window_s or clip_span(cfg.data))
    stride_s = float(stride_s or window_s)
    settings = _settings(resolved, vocab, word_mask, window_s, stride_s)
    try:
        checkpoint_tokenizer(resolved, cfg, vocab)
        text_search = True
    except MissingVocabularyError:
        text_search = False
        warnings.warn(f"{checkpoint} has no word list: text search will be unavailable (pass --vocab FILE)",
                      stacklevel=2)
    root, files = list_videos(videos)
    store = _open_store(out, settings, add, wait)
    store.set_info(text_search=text_search)
    todo = [p for p in files if not store.unchanged(p)]
    skipped = len(files) - len(todo)
    model = resolved.load_model(device) if todo else None
    roots = {r: store.add_root(r) for r in {_root_of(p, root) for p in todo}}
    loader = torch.utils.data.DataLoader(_WindowFiles([str(p) for p in todo], cfg, window_s, stride_s),
                                         batch_size=None, num_workers=workers)
    from mmv_torch.progress import bar

    bad = audio_missing = 0
    dims: dict[str, int] = store.info().get("dims", {})
    for item in bar(loader, total=len(todo), desc="index", unit="file", requested=progress):
        p = Path(item.path)
        root_id = roots[_root_of(p, root)]
        if item.error is not None:
            print(f"skipped {p}: {item.error}", file=sys.stderr)
            store.add_bad(p, root_id, item.error)
            bad += 1
            continue
        if item.audio_error is not None:
            print(f"audio of {p} not decoded ({item.audio_error}): its video is indexed without sound", file=sys.stderr)
            audio_missing += 1
        vectors = embed_windows(model, item, device)
        if not dims:
            dims = {k: int(v.shape[1]) for k, v in vectors.items()}
            store.set_info(dims=dims)
        wins = [(s, s + window_s, item.has_audio, t) for s, t in zip(item.starts or [], item.thumbs or [])]
        store.add_file(p, root_id, item.duration, item.has_audio, wins, vectors)
    missing = store.missing_files()
    pruned = store.remove_files(fid for fid, _ in missing) if prune else 0
    kinds = (store.rebuild() if memory_gb is None and nn_index is None  # the recorded settings
             else store.rebuild(memory_gb=memory_gb, nn_index=nn_index))
    calibration = store.info().get("calibration")
    if todo or pruned or not calibration or calibration.get("windows") != store.counts()["windows"]:
        _calibrate(store, resolved, model, vocab, settings["word_mask"], text_search, device)
    summary = {"index": str(out), **store.counts(), "new_files": len(todo) - bad, "new_bad_files": bad,
               "new_files_without_decodable_audio": audio_missing, "unchanged_files": skipped,
               "missing_files": len(missing) - pruned, "pruned_files": pruned, "nn_index": kinds,
               "window_s": window_s, "stride_s": stride_s, "text_search": text_search}
    store.close()
    return summary
