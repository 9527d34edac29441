"""Writing WebDataset-style tar shards from a manifest (``mmv-torch data shard``); the format and the
streaming reader are in :mod:`mmv_torch.data.shards`.

:func:`write_shards` writes a fresh folder: it refuses a non-empty ``out_dir`` unless ``overwrite``,
and builds the shards in a hidden sibling folder that replaces ``out_dir`` only once every shard is
written, so a folder never mixes the shards of two runs (see :func:`write_shards`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from mmv_torch.data.manifests import MODALITIES, _parse_narrations, _resolve, read_jsonl, read_window
from mmv_torch.data.media.decode import DecodeError, probe
from mmv_torch.fileio import atomic_folder

logger = logging.getLogger("mmv_torch.data")

_MEDIA_KEYS = ("video",) + tuple(m for m in MODALITIES if m != "video")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def write_shards(manifest: str | Path, out_dir: str | Path, samples_per_shard: int = 1000,
                 max_shard_bytes: int = 1 << 30, prefix: str = "shard", verify: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Pack the files of a JSONL manifest into tar shards in the fresh folder ``out_dir``.

    A shard is closed after ``samples_per_shard`` samples or once it holds ``max_shard_bytes``.
    With ``verify``, each file is probed first and files that cannot be read or probed are left out
    (listed in the report). Returns ``{"shards": [paths], "samples": n, "skipped": [{"path", "reason"}]}``.

    ``out_dir`` must be absent or empty (a ``ValueError`` otherwise), unless ``overwrite``: then all
    of its content is replaced (a folder holding the manifest or the current folder is refused). The
    shards are written into ``.<name>.tmp.<pid>`` next to ``out_dir``, which takes its place only
    when complete (:func:`mmv_torch.fileio.atomic_folder`: the old folder is removed once the new one
    is in place). An error or interrupt leaves ``out_dir`` as it was and removes the temporary folder; one that a
    killed run left behind is removed by the next run.
    """
    if samples_per_shard <= 0 or max_shard_bytes <= 0:
        raise ValueError(f"samples_per_shard and max_shard_bytes must be > 0, got {samples_per_shard}, "
                         f"{max_shard_bytes}")
    mpath = Path(manifest)
    out = Path(os.path.abspath(out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"shard output {out_dir} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"shard output folder {out_dir} is not empty; choose a new folder or pass --overwrite "
                         "to replace its contents")
    if overwrite:
        real = Path(os.path.realpath(out))
        keep = ((Path(os.path.realpath(mpath)), "the manifest"), (Path.cwd().resolve(), "the current folder"))
        for inside, what in keep:
            if inside == real or real in inside.parents:
                raise ValueError(f"shard output folder {out_dir} holds {what}; --overwrite would delete it")
    with atomic_folder(out) as tmp:
        report = _write_into(mpath, tmp, samples_per_shard, max_shard_bytes, prefix, verify)
    report["shards"] = [str(Path(out_dir) / name) for name in report["shards"]]
    return report


def _close(tar: tarfile.TarFile) -> None:
    """Close a finished shard and flush it to disk."""
    tar.close()
    with open(tar.name, "rb+") as f:
        os.fsync(f.fileno())


def _write_into(mpath: Path, out: Path, samples_per_shard: int, max_shard_bytes: int, prefix: str, verify: bool
                ) -> dict[str, Any]:
    """Write the shards into the folder ``out``; the report lists the shards by file name."""
    shards: list[str] = []
    skipped: list[dict[str, str]] = []
    tar: tarfile.TarFile | None = None
    count_in_shard = bytes_in_shard = written = 0
    try:
        for n, obj in read_jsonl(mpath):
            key_name = next((k for k in _MEDIA_KEYS if isinstance(obj.get(k), str)), None)
            if key_name is None:
                raise ValueError(f"{mpath}:{n}: needs a string key 'video', 'audio' or 'image'")
            if "narration" in obj:
                _parse_narrations(obj["narration"], f"{mpath}:{n}")  # fail early on bad narration
            read_window(obj, f"{mpath}:{n}")  # and on a bad start/end window
            path = _resolve(mpath.parent, obj[key_name])
            try:
                data = Path(path).read_bytes()
                meta = dict(obj)
                meta["path"] = obj[key_name]
                if verify:
                    info = probe(data, name=path)
                    meta.setdefault("duration", info.duration)
            except OSError as e:
                skipped.append({"path": path, "reason": f"cannot read: {e}"})
                logger.warning("not sharding %s: cannot read: %s", path, e)
                continue
            except DecodeError as e:
                skipped.append({"path": path, "reason": e.reason})
                logger.warning("not sharding %s: %s", path, e.reason)
                continue
            if tar is None or count_in_shard >= samples_per_shard or bytes_in_shard >= max_shard_bytes:
                if tar is not None:
                    _close(tar)
                    tar = None
                shards.append(f"{prefix}-{len(shards):06d}.tar")
                tar = tarfile.open(out / shards[-1], "w", format=tarfile.USTAR_FORMAT)
                count_in_shard = bytes_in_shard = 0
            key = f"{written:09d}"
            ext = Path(path).suffix.lower().lstrip(".") or "bin"
            if not re.fullmatch(r"[a-z0-9]+", ext):
                ext = "bin"
            meta["media_key"] = ext
            meta["modality"] = key_name
            _add_bytes(tar, f"{key}.{ext}", data)
            _add_bytes(tar, f"{key}.json", json.dumps(meta).encode())
            count_in_shard += 1
            bytes_in_shard += len(data)
            written += 1
    except BaseException:
        if tar is not None:
            tar.close()
        raise
    if tar is not None:
        _close(tar)
    return {"shards": shards, "samples": written, "skipped": skipped}


def run_shard(manifest: str, out_dir: str, samples_per_shard: int = 1000, verify: bool = True,
              overwrite: bool = False) -> dict[str, Any]:
    """``mmv-torch data shard MANIFEST OUT_DIR [--overwrite]``: write the shards into a fresh folder
    (``overwrite`` replaces a non-empty one; see :func:`write_shards`) and print a one-line summary."""
    report = write_shards(manifest, out_dir, samples_per_shard=samples_per_shard, verify=verify,
                          overwrite=overwrite)
    print(f"wrote {report['samples']} samples in {len(report['shards'])} shards to {out_dir}; "
          f"{len(report['skipped'])} files left out")
    for s in report["skipped"]:
        print(f"  left out {s['path']}: {s['reason']}")
    return report
