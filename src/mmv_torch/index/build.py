"""``index build`` and ``index add``: every video of a folder or manifest cut into sliding windows,
embedded in batches across files, stored in group commits (a killed build resumes where it stopped)
and made searchable; under ``torchrun`` the files are shared among the ranks (:mod:`.parts`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmv_torch import dist
from mmv_torch.data.datasets import clip_span
from mmv_torch.index.embedding import DecodedFile, decode_windows
from mmv_torch.index.nn import check_factory
from mmv_torch.index.parts import merge_parts, open_part
from mmv_torch.index.pipeline import BuildCounts, index_files
from mmv_torch.index.store import IndexStore, is_index


class _WindowFiles(torch.utils.data.Dataset):
    """Decoded windows of each file (decoding runs in the loader's worker processes); a file that cannot
    be read comes back with ``error`` set instead of failing the build."""

    def __init__(self, paths: list[str], cfg: Any, window_s: float, stride_s: float, windows: str = "fixed") -> None:
        self.paths, self.cfg, self.window_s, self.stride_s, self.windows = paths, cfg, window_s, stride_s, windows

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> DecodedFile:
        try:
            return decode_windows(self.paths[i], self.cfg, self.window_s, self.stride_s, windows=self.windows)
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


def _settings(resolved: Any, vocab: str | None, word_mask: bool | None, window_s: float, stride_s: float,
              windows: str = "fixed") -> dict[str, Any]:
    words = resolved.words is not None
    mask = words if word_mask is None else word_mask
    return {"checkpoint": str(Path(resolved.path).resolve()), "vocab": str(Path(vocab).resolve()) if vocab else None,
            "word_mask": mask, "window_s": window_s, "stride_s": stride_s, "window_kind": windows}


def _open_store(out: str | Path, settings: dict[str, Any], add: bool, wait: bool = True) -> IndexStore:
    if add and not is_index(out):
        raise ValueError(f"{out}: not an index (create it with `mmv-torch index build`)")
    store = IndexStore(out, create=True, writer=True, wait=wait)  # the writer lock, before anything is read
    info = store.info()
    if info:
        # an index from before window kinds existed has fixed windows
        changed = {k: (info.get(k, "fixed" if k == "window_kind" else None), v) for k, v in settings.items()
                   if k != "vocab" and info.get(k, "fixed" if k == "window_kind" else None) != v}
        if changed:
            raise ValueError(f"{out} was built with other settings {changed} (old, new); build a new index in another "
                             "folder")
    else:
        store.set_info(**settings)
    return store


def load_model(resolved: Any, device: str, onnx: str | Path | None = None) -> Any:
    """The checkpoint's model on ``device``, in eval mode, or with ``onnx`` (an ``export --onnx`` folder of
    this checkpoint) its towers through onnxruntime: the one place a build loads it."""
    if onnx is not None:
        from mmv_torch.weights.onnx_runtime import load_onnx_towers

        return load_onnx_towers(onnx, resolved, device)
    return resolved.load_model(device)


@dataclass
class _Job:
    """What every process of a build embeds with."""

    resolved: Any
    root: Path
    window_s: float
    stride_s: float
    workers: int
    device: str
    batch_size: int
    group_files: int
    progress: bool
    windows: str = "fixed"
    onnx: str | Path | None = None
    memory_gb: float | None = None
    nn_index: str | None = None


def _embed(job: _Job, store: IndexStore, todo: list[Path], model: Any) -> BuildCounts:
    """Decode ``todo`` in ``job.workers`` loader processes, embed and store it in ``store``."""
    roots = {r: store.add_root(r) for r in {_root_of(p, job.root) for p in todo}}
    file_roots = {str(p): roots[_root_of(p, job.root)] for p in todo}
    files = _WindowFiles([str(p) for p in todo], job.resolved.config, job.window_s, job.stride_s, job.windows)
    loader = torch.utils.data.DataLoader(files, batch_size=None, num_workers=job.workers)
    return index_files(store, loader, file_roots, model, device=job.device, batch_size=job.batch_size,
                       group_files=job.group_files, total_files=len(todo), progress=job.progress)


def _calibrate(store: IndexStore, resolved: Any, model: Any, vocab: str | None, word_mask: bool, text_search: bool,
               device: str, onnx: str | Path | None = None) -> None:
    """Record the calibrated-score distributions of the changed index (:mod:`mmv_torch.index.calibrate`)."""
    from mmv_torch.index.calibrate import record_calibration
    from mmv_torch.weights.resolve import checkpoint_tokenizer

    if store.counts()["windows"] == 0:
        return
    model = model if model is not None else load_model(resolved, device, onnx)
    tokenizer = checkpoint_tokenizer(resolved, resolved.config, vocab)[0] if text_search else None
    record_calibration(store, model, tokenizer, word_mask, device)


BARRIER_TIMEOUT_S = 7 * 24 * 3600.0
"""How long the ranks of a multi-process build wait for each other (the slowest rank's share of the
files): a rank that dies ends the launch anyway (torchrun stops the others)."""


def build_index(checkpoint: str | Path, videos: str | Path, out: str | Path, *, window_s: float | None = None,
                stride_s: float | None = None, workers: int = 0, vocab: str | None = None,
                word_mask: bool | None = None, windows: str = "fixed", device: str = "cpu", progress: bool = True,
                add: bool = False, prune: bool = False, wait: bool = True, batch_size: int = 16, group_files: int = 32,
                onnx: str | Path | None = None, memory_gb: float | None = None, nn_index: str | None = None
                ) -> dict[str, Any]:
    """Index every video of ``videos`` (folder or manifest) into the index folder ``out``.

    Files already indexed with the same path, size and mtime are skipped, so running it again after a
    kill resumes, and ``add=True`` (an existing index only) adds a collection's new or changed files.
    Window length defaults to the checkpoint's clip span (``num_frames / fps``), the stride to the
    window. ``windows`` is ``fixed`` (sliding windows) or ``shots`` (windows within shots,
    :func:`~mmv_torch.index.embedding.shot_windows`); an index keeps the kind it was built with. Windows are
    embedded ``batch_size`` at a time, across files, and files committed ``group_files`` per transaction.
    ``word_mask`` (None: when the checkpoint has its own word list) max-pools text over real words only.
    Files that cannot be decoded are reported on stderr and recorded, not indexed; a file whose audio (or
    video) alone cannot be decoded keeps its video (or audio-only) windows. ``onnx`` (an ``export --onnx``
    folder of this checkpoint) embeds the windows through onnxruntime instead of PyTorch; the index records
    the runtime, and either may extend it (their vectors agree within 1e-4). The index's writer lock is
    held throughout: another
    writer is waited for (``wait``) or refused. Indexed files that no longer exist are counted
    (``missing_files``) and, with ``prune``, removed. Launched by ``torchrun`` / ``srun`` with several
    processes, each rank embeds its share into its part and rank 0 merges (:mod:`.parts`); the other
    ranks return their part's counts. ``memory_gb`` (a budget of resident memory for serving) or
    ``nn_index`` (a faiss factory string) chooses the nearest-neighbour indexes (:mod:`.nn`); an ``add``
    keeps the recorded ones when not given. Returns a summary: counts, the nearest-neighbour kind per
    space, the files skipped."""
    from mmv_torch.data.text.tokenizer import MissingVocabularyError
    from mmv_torch.weights.resolve import checkpoint_tokenizer, resolve_checkpoint

    if batch_size < 1 or group_files < 1:
        raise ValueError(f"batch size and files per commit must be >= 1, got {batch_size}, {group_files}")
    resolved = resolve_checkpoint(checkpoint)
    if nn_index is not None:
        for dim in {int(sp.dim) for sp in resolved.config.model.spaces.values()}:
            check_factory(nn_index, dim)
    window_s = float(window_s or clip_span(resolved.config.data))
    stride_s = float(stride_s or window_s)
    settings = _settings(resolved, vocab, word_mask, window_s, stride_s, windows)
    try:
        checkpoint_tokenizer(resolved, resolved.config, vocab)
        text_search = True
    except MissingVocabularyError:
        text_search = False
        warnings.warn(f"{checkpoint} has no word list: text search will be unavailable (pass --vocab FILE)",
                      stacklevel=2)
    root, files = list_videos(videos)
    started = dist.init_distributed("gloo", timeout_s=BARRIER_TIMEOUT_S)
    try:
        rank, world = dist.rank(), dist.world_size()
        if device == "cuda" and world > 1:
            device = f"cuda:{dist.local_rank()}"
        job = _Job(resolved, root, window_s, stride_s, workers, device, batch_size, group_files, progress and rank == 0,
                   windows, onnx, memory_gb, nn_index)
        store = None
        if rank == 0:
            store = _open_store(out, settings, add, wait)
            store.set_info(text_search=text_search, runtime="onnx" if onnx else "torch",
                           onnx=str(Path(onnx).resolve()) if onnx else None)
            merged = merge_parts(store)  # the parts a killed multi-process build left
        # rank 0 alone reads the index (other nodes may not share SQLite's memory-mapped WAL index)
        names = [str(p) for p in _todo(store, files)] if store is not None else None
        todo = [Path(p) for p in dist.broadcast_object(names)]
        model = None
        if world > 1:
            part = open_part(out, rank, settings)
            mine = [p for p in todo[rank::world] if not part.unchanged(p)]
            model = load_model(resolved, device, onnx) if mine else None
            counts = _embed(job, part, mine, model)
            part.set_info(audio_missing=int(part.info().get("audio_missing", 0)) + counts.audio_missing,
                          video_missing=int(part.info().get("video_missing", 0)) + counts.video_missing)
            part.close()
            dist.barrier()
            if store is None:
                return {"index": str(out), "rank": rank, "new_files": counts.files, "new_bad_files": counts.bad,
                        "windows": counts.windows}
            merged = merge_parts(store, group_files)
            counts = BuildCounts(merged["files"], merged["bad_files"], merged["files_without_decodable_audio"],
                                 video_missing=merged["files_without_decodable_video"])
        else:
            assert store is not None
            model = load_model(resolved, device, onnx) if todo else None
            counts = _embed(job, store, todo, model)
            counts.files += merged["files"]
            counts.bad += merged["bad_files"]
            counts.audio_missing += merged["files_without_decodable_audio"]
            counts.video_missing += merged["files_without_decodable_video"]
        return _finish(job, store, model, settings, text_search, prune, len(files) - len(todo), counts, todo)
    finally:
        if started:
            dist.destroy_distributed()


def _todo(store: IndexStore, files: list[Path]) -> list[Path]:
    """The files of ``files`` that ``store`` does not hold unchanged, in a fixed order (sorted paths), so
    every rank divides the same list."""
    return sorted((p for p in files if not store.unchanged(p)), key=str)


def _finish(job: _Job, store: IndexStore, model: Any, settings: dict[str, Any], text_search: bool, prune: bool,
            skipped: int, counts: BuildCounts, todo: list[Path]) -> dict[str, Any]:
    """Prune, rebuild the nearest-neighbour indexes and the calibration; close ``store``; the summary."""
    missing = store.missing_files()
    pruned = store.remove_files(fid for fid, _ in missing) if prune else 0
    kinds = (store.rebuild() if job.memory_gb is None and job.nn_index is None  # the recorded settings
             else store.rebuild(memory_gb=job.memory_gb, nn_index=job.nn_index))
    calibration = store.info().get("calibration")
    if todo or counts.files or counts.bad or pruned or not calibration or \
            calibration.get("windows") != store.counts()["windows"]:
        _calibrate(store, job.resolved, model, settings["vocab"], settings["word_mask"], text_search, job.device,
                   job.onnx)
    summary = {"index": str(store.folder), **store.counts(), "new_files": counts.files, "new_bad_files": counts.bad,
               "new_files_without_decodable_audio": counts.audio_missing,
               "new_files_without_decodable_video": counts.video_missing, "unchanged_files": skipped,
               "missing_files": len(missing) - pruned, "pruned_files": pruned, "nn_index": kinds,
               "window_s": job.window_s, "stride_s": job.stride_s, "window_kind": job.windows,
               "text_search": text_search}
    store.close()
    return summary
