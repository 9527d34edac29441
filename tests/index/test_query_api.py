"""The Python search API (``mmv_torch.index.open``): typed hits, calibrated scores and "no good match",
fused text + sound queries, filters, self-matches left out of video queries, ``index search --json``.

As in the browser test, the tiny random model is made certain by planting: the target clip's windows
get the very embedding of the query (its caption's text embedding in S_vt, its sound in S_va), then
the index is calibrated again as ``index build`` does after every change.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.index_utils import clip_caption, plant_vectors, recalibrate, synthetic_clips, tiny_checkpoint

pytest.importorskip("faiss")

import mmv_torch.index as mi  # noqa: E402
from mmv_torch.index.api import Filters, Hit, Index, SearchResult  # noqa: E402
from mmv_torch.index.build import build_index  # noqa: E402
from mmv_torch.index.calibrate import GOOD_MATCH, QUANTILES, cdf  # noqa: E402
from mmv_torch.index.store import IndexStore  # noqa: E402


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api")
    clips = synthetic_clips(root / "clips", n=4, seed=3)
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    summary = build_index(ckpt, clips, root / "idx", progress=False)
    target = sorted(clips.glob("clip_*.mp4"))[2]
    index = mi.open(root / "idx")
    plant_vectors(root / "idx", target, "video_vt", index.searcher.embed("text", text=clip_caption(target)))
    plant_vectors(root / "idx", target, "video_va", index.searcher.embed("audio", path=target))
    recalibrate(root / "idx")
    return root, clips, target, summary, mi.open(root / "idx")


def test_build_records_a_calibration_per_query_kind(planted) -> None:
    root, _, _, summary, _ = planted
    fresh = mi.open(root / "idx")
    cal = IndexStore(root / "idx").info()["calibration"]
    assert set(cal["modes"]) == {"text", "audio", "video", "video-audio", "audio-audio"}
    for mode in cal["modes"].values():
        q = mode["quantiles"]
        assert len(q) == QUANTILES and q == sorted(q) and mode["queries"] > 0
    assert cal["windows"] == summary["windows"] and fresh.calibration == cal


def test_cdf_is_the_empirical_distribution() -> None:
    q = list(np.linspace(0.2, 0.6, QUANTILES))
    assert cdf(0.1, q) == 0.0 and cdf(0.7, q) == 1.0 and cdf(0.4, q) == pytest.approx(0.5)
    assert cdf(np.array([0.3, 0.5]), q).tolist() == pytest.approx([0.25, 0.75])


def test_open_returns_typed_hits_with_calibrated_scores(planted) -> None:
    _, _, target, _, index = planted
    assert isinstance(index, Index)
    result = index.search(text=clip_caption(target), k=3)
    assert isinstance(result, SearchResult) and len(result) == 3 and all(isinstance(h, Hit) for h in result)
    best = result[0]
    assert Path(best.path) == target.resolve() and best.cosine == pytest.approx(1.0, abs=1e-4)
    assert best.spaces == ("video_vt",) and set(best.parts) == {"text"}
    quantiles = index.calibration["modes"]["text"]["quantiles"]
    for h in result:
        assert 0.0 <= h.score <= 1.0 and h.score == pytest.approx(float(cdf(h.cosine, quantiles)), abs=1e-6)
        assert h.parts["text"].cosine == h.cosine and h.start < h.end and h.duration > 0
    assert result.good_match is True and result.message is None and best.score >= GOOD_MATCH
    assert [h.score for h in result] == sorted((h.score for h in result), reverse=True)
    json.dumps(result.to_dict())  # strict JSON


def test_a_nonsense_query_is_no_good_match(planted) -> None:
    _, _, _, _, index = planted
    result = index.search(text="filler3", k=3)
    assert len(result) == 3 and result.good_match is False and result[0].score < GOOD_MATCH
    assert result.message.startswith("no good match")


def test_text_and_sound_are_fused_with_per_part_scores(planted) -> None:
    _, _, target, _, index = planted
    result = index.search(text=clip_caption(target), audio=target, k=3)
    best = result[0]
    assert Path(best.path) == target.resolve() and set(best.parts) == {"text", "audio"}
    assert best.parts["text"].space == "video_vt" and best.parts["audio"].space == "video_va"
    assert best.spaces == ("video_vt", "video_va") and result.kinds == ("text", "audio")
    for h in result:  # the documented rule: the mean of the parts' calibrated scores
        assert h.score == pytest.approx(np.mean([p.score for p in h.parts.values()]), abs=1e-5)
        assert h.cosine == pytest.approx(np.mean([p.cosine for p in h.parts.values()]), abs=1e-5)
    assert best.parts["audio"].cosine == pytest.approx(1.0, abs=1e-4)


def test_filters(planted) -> None:
    _, clips, target, _, index = planted
    q = clip_caption(target)
    only = index.search(text=q, k=5, filters=Filters(path="*clip_000001*"))
    assert {Path(h.path).name for h in only} == {"clip_000001.mp4"}
    rel = index.search(text=q, k=5, filters=Filters(path="clip_00000[01].mp4"))  # relative to the root
    assert {Path(h.path).name for h in rel} == {"clip_000000.mp4", "clip_000001.mp4"}
    assert len(index.search(text=q, k=5, filters=Filters(has_audio=False))) == 0
    assert len(index.search(text=q, k=5, filters=Filters(has_audio=True))) == 4
    durations = {Path(h.path).name: h.duration for h in index.search(text=q, k=5)}
    cut = sorted(durations.values())[1]
    long = index.search(text=q, k=5, filters=Filters(min_duration=cut))
    assert {Path(h.path).name for h in long} == {n for n, d in durations.items() if d >= cut}
    assert len(index.search(text=q, k=5, filters=Filters(max_duration=0.5))) == 0
    assert len(index.search(text=q, k=5, filters=Filters(modified_after="2999-01-01"))) == 0
    old = clips / "clip_000000.mp4"
    os.utime(old, (old.stat().st_atime, 0))  # mtime is read from the index, not the disk: unchanged
    assert len(index.search(text=q, k=5, filters=Filters(modified_before=time.time() + 60))) == 4
    with pytest.raises(ValueError, match="modified_after"):
        index.search(text=q, filters=Filters(modified_after="yesterday"))


def test_video_queries_leave_out_the_query_window(planted) -> None:
    _, clips, _, _, index = planted
    target = sorted(clips.glob("clip_*.mp4"))[1]  # not planted: its windows keep their own video embeddings
    kept = index.search(video=target, start=1.0, k=4, exclude_self=False)
    assert Path(kept[0].path) == target.resolve() and kept[0].cosine == pytest.approx(1.0, abs=1e-4)
    result = index.search(video=target, start=1.0, k=4)
    assert result.excluded >= 1
    for h in result:  # the query window [1, 2] and the windows touching it are gone
        if Path(h.path) == target.resolve():
            assert h.end < 1.0 - 1e-6 or h.start > 2.0 + 1e-6, (h.start, h.end)
    other = index.search(video=target, start=1.0, k=4, exclude_source=True)
    assert target.resolve() not in {Path(h.path) for h in other} and len(other) == 3
    window = kept[0].window
    assert kept[0].moment == (1.0, 2.0)
    similar = index.similar(window, k=4)
    assert window not in {h.window for h in similar}
    assert target.resolve() not in {Path(h.path) for h in index.similar(window, k=4, exclude_source=True)}
    with pytest.raises(LookupError):
        index.similar(10 ** 9)


def test_video_start_outside_the_video_is_refused(planted) -> None:
    _, _, target, _, index = planted
    for start in (1e300, 1000.0, float("inf"), -1.0):
        with pytest.raises(ValueError, match="outside clip_000002.mp4"):
            index.search(video=target, start=start)


def test_command_line_json_and_combined_query(planted, tmp_path, capsys) -> None:
    from mmv_torch.cli.main import main

    root, _, target, _, _ = planted
    idx = shutil.copytree(root / "idx", tmp_path / "idx")
    assert main(["index", "search", str(idx), "--text", clip_caption(target), "--audio", str(target), "-k", "2",
                 "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["good_match"] is True and out["kinds"] == ["text", "audio"] and len(out["results"]) == 2
    assert set(out["results"][0]["parts"]) == {"text", "audio"} and Path(out["results"][0]["path"]) == target.resolve()
    assert main(["index", "search", str(idx), "--text", "filler3", "--device", "cpu"]) == 0
    assert "no good match" in capsys.readouterr().out
    # P13, P20: a --start past the end of the query video is one line, exit status 2
    for start in ("1e300", "1000"):
        assert main(["index", "search", str(idx), "--video", str(target), "--start", start, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "outside clip_000002.mp4" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["index", "search", str(idx), "--text", "ball", "--path", "*.avi", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == []


def test_repeated_searches_reuse_the_loaded_model(planted, monkeypatch) -> None:
    """The model and faiss indexes are loaded once: later searches load nothing."""
    _, _, target, _, index = planted
    index.search(text="ball")
    import mmv_torch.index.query as query
    import mmv_torch.weights.resolve as resolve

    def fail(*a, **k):
        raise AssertionError("reloaded")

    monkeypatch.setattr(resolve, "resolve_checkpoint", fail)
    monkeypatch.setattr(query, "open_searcher", fail)
    monkeypatch.setattr(IndexStore, "rebuild", fail)
    for _ in range(3):
        assert len(index.search(text=clip_caption(target), k=2)) == 2


def test_the_client_of_a_running_server_gives_the_same_hits(planted) -> None:
    pytest.importorskip("fastapi")
    from mmv_torch.index.client import Client, ServerError
    from mmv_torch.index.server import create_app
    from tests.helpers.index_utils import running_server

    _, _, target, _, index = planted
    q = clip_caption(target)
    with running_server(create_app(index)) as base:
        c = Client(base)
        assert c.info()["files"] == 4
        remote = c.search(text=q, k=3, filters=Filters(has_audio=True))
        local = index.search(text=q, k=3)
        assert [(h.path, h.score, h.parts) for h in remote] == [(h.path, h.score, h.parts) for h in local]
        assert remote.good_match is True and isinstance(remote[0], Hit)
        fused = c.search(text=q, audio=target, k=2)
        assert set(fused[0].parts) == {"text", "audio"} and Path(fused[0].path) == target.resolve()
        assert c.similar(local[0].window, k=2).hits
        with pytest.raises(ServerError) as e:
            c.search(text=q, k=1000)
        assert e.value.status == 422
