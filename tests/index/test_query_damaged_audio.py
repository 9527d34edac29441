"""A video whose audio track is damaged keeps its video windows: indexed without sound, searchable by
text and video, reported on stderr and in the build summary (before, the whole file was skipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.index_utils import synthetic_clips, tiny_checkpoint

pytest.importorskip("faiss")


def damage_audio(src: Path, dst: Path, first: int = 3, last: int = 30) -> Path:
    """``src`` remuxed with audio packets ``first`` to ``last`` replaced by random bytes (the video intact)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout, aout = out.add_stream_from_template(vin), out.add_stream_from_template(ain)
        n = 0
        for pkt in inp.demux():
            if pkt.dts is None:
                continue
            if pkt.stream is vin:
                pkt.stream = vout
                out.mux(pkt)
                continue
            n += 1
            if first <= n < last:
                bad = av.Packet(rng.integers(0, 256, pkt.size, dtype=np.uint8).tobytes())
                bad.pts, bad.dts, bad.time_base = pkt.pts, pkt.dts, pkt.time_base
                pkt = bad
            pkt.stream = aout
            out.mux(pkt)
    return dst


def test_a_file_with_damaged_audio_keeps_its_video_windows(tmp_path: Path, capsys) -> None:
    import mmv_torch.index as mi
    from mmv_torch.data.media.decode import DecodeError, load_clips
    from mmv_torch.index.build import build_index
    from mmv_torch.index.store import IndexStore

    clips = synthetic_clips(tmp_path / "clips", n=3)
    ckpt = tiny_checkpoint(tmp_path / "ckpt", clips)
    damaged = damage_audio(clips / "clip_000001.mp4", clips / "damaged_sound.mp4")
    with pytest.raises(DecodeError):  # the file really is damaged
        load_clips(damaged, [0.0, 1.0], 8, 8.0, 16000, 1.0)
    summary = build_index(ckpt, clips, tmp_path / "idx", progress=False)
    err = capsys.readouterr().err
    assert summary["files"] == 4 and summary["bad_files"] == 0, summary
    assert summary["new_files_without_decodable_audio"] == 1
    assert f"audio of {damaged}" in err and "without sound" in err
    store = IndexStore(tmp_path / "idx")
    rec = store.file(damaged)
    assert rec.status == "done" and rec.has_audio is False
    wins = store.db.execute("SELECT COUNT(*), SUM(has_audio) FROM windows WHERE file = ?", (rec.id,)).fetchone()
    assert wins[0] >= 3 and wins[1] == 0
    index = mi.open(tmp_path / "idx")
    hits = index.search(video=damaged, start=1.0, k=4, exclude_self=False)
    assert Path(hits[0].path) == damaged.resolve() and hits[0].cosine == pytest.approx(1.0, abs=1e-4)
    assert not hits[0].has_audio
    silent = index.search(text="a ball", k=4, filters=mi.api.Filters(has_audio=False))
    assert [Path(h.path).name for h in silent] == ["damaged_sound.mp4"]
