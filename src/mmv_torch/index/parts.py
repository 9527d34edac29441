"""The parts of a multi-process build: ``INDEX/parts/rank-R``, one per rank, merged into the index.

Under ``torchrun`` (or ``srun``) each rank of ``index build`` / ``index add`` embeds its share of the
files into its own part, an index folder of the same format (its own ``meta.sqlite``, ``vectors/`` and
writer lock, without a nearest-neighbour index), so the ranks never wait for each other's locks. Rank 0
alone takes the index's writer lock and merges the parts in group commits: a file is copied when the
index does not hold it already with the same size and mtime, so a merge killed half-way, run again,
copies each file exactly once. A merged part is renamed ``rank-R.merged`` (atomically) and deleted.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mmv_torch.index.store import SPACES, VECTORS, BrokenVectors, IndexStore, is_index, vectors_readable
from mmv_torch.index.store_write import FileWrite, add_files

PARTS = "parts"


def part_folder(index: str | Path, rank: int) -> Path:
    """The part of rank ``rank`` of ``index``."""
    return Path(index) / PARTS / f"rank-{int(rank)}"


def open_part(index: str | Path, rank: int, settings: dict) -> IndexStore:
    """Rank ``rank``'s part (created if new), with its writer lock held and ``settings`` recorded."""
    store = IndexStore(part_folder(index, rank), create=True, writer=True)
    store.set_info(**settings)
    return store


def _merged(main: IndexStore, path: str, size: int, mtime: float, status: str) -> bool:
    rec = main.file(path)
    if rec is None or (rec.size, rec.mtime, rec.status) != (size, mtime, status):
        return False
    return status != "done" or vectors_readable(main.folder / VECTORS / f"{rec.id}.npz")


def _merge_part(main: IndexStore, part: IndexStore, group_files: int) -> tuple[int, int, int, int]:
    """Copy the files of ``part`` that ``main`` lacks; returns (files done, files bad, without sound, without
    video)."""
    roots = {rid: main.add_root(p) for rid, p in part.roots().items()}
    info = part.info()
    if info.get("dims") and not main.info().get("dims"):
        main.set_info(dims=info["dims"])
    rows = part.db.execute("SELECT id, path, root, size, mtime, duration, has_audio, status, error FROM files "
                           "ORDER BY id").fetchall()
    group: list[FileWrite] = []
    done = bad = 0
    for fid, path, root, size, mtime, duration, has_audio, status, error in rows:
        if _merged(main, path, size, mtime, status):
            continue
        if status == "bad":
            group.append(FileWrite(path, roots[root], error=error, size_mtime=(size, mtime)))
            bad += 1
        else:
            try:
                vectors = {s: part.file_vectors(fid, s)[0] for s in SPACES}
            except BrokenVectors as e:  # not copied: the next build of its folder embeds it again
                print(f"warning: {e}; not merged", file=sys.stderr)
                continue
            wins = [(s, e, bool(a), t, bool(v)) for s, e, a, t, v in part.db.execute(
                "SELECT start, end, has_audio, thumb, has_video FROM windows WHERE file = ? ORDER BY id", (fid,))]
            group.append(FileWrite(path, roots[root], duration, bool(has_audio), wins, vectors,
                                   size_mtime=(size, mtime)))
            done += 1
        if len(group) >= group_files:
            add_files(main, group)
            group.clear()
    add_files(main, group)
    return done, bad, int(info.get("audio_missing", 0)), int(info.get("video_missing", 0))


def merge_parts(main: IndexStore, group_files: int = 32) -> dict[str, int]:
    """Merge every part of ``main``'s folder into it (``main`` writes: its writer lock is taken) and
    delete the merged parts. Returns the files copied (done, bad, without decodable sound or video)."""
    main.lock_writer()
    total = {"files": 0, "bad_files": 0, "files_without_decodable_audio": 0, "files_without_decodable_video": 0}
    folder = main.folder / PARTS
    if not folder.is_dir():
        return total
    for merged in sorted(folder.glob("rank-*.merged")):  # a deletion a kill cut short
        shutil.rmtree(merged, ignore_errors=True)
    for part_dir in sorted(p for p in folder.glob("rank-*") if p.is_dir() and p.suffix != ".merged"):
        if is_index(part_dir):
            part = IndexStore(part_dir, writer=True)
            try:
                done, bad, silent, blind = _merge_part(main, part, group_files)
            finally:
                part.close()
            total["files"] += done
            total["bad_files"] += bad
            total["files_without_decodable_audio"] += silent
            total["files_without_decodable_video"] += blind
        gone = part_dir.with_name(part_dir.name + ".merged")
        part_dir.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()
    return total
