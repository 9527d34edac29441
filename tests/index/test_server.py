"""The search server's API: text and upload searches, media with range requests, path traversal, bad
parameters and uploads (4xx, never 500), an empty index, 50 concurrent requests to a live server."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.index_utils import clip_caption, running_server, synthetic_clips, tiny_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmv_torch.index.build import build_index  # noqa: E402
from mmv_torch.index.query import open_searcher  # noqa: E402
from mmv_torch.index.server import create_app  # noqa: E402


def local(app) -> TestClient:
    """A test client that sends ``Host: localhost`` (the server answers loopback names only)."""
    return TestClient(app, base_url="http://localhost")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    clips = synthetic_clips(root / "clips")
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    build_index(ckpt, clips, root / "idx", progress=False)
    (root / "secret.mp4").write_bytes(b"outside the root")
    empty = root / "empty_clips"
    empty.mkdir()
    (empty / "broken.mp4").write_bytes(b"not a video")
    build_index(ckpt, empty, root / "empty_idx", progress=False)
    searcher = open_searcher(root / "idx")
    return root, clips, searcher, local(create_app(searcher, max_upload_mb=0.05, preview_dir=root / "previews"))


def test_page_static_files_and_openapi(setup) -> None:
    _, _, _, client = setup
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/similar", "/api/info"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "://" not in docs.text
    assert "://" not in client.get("/static/docs.js").text
    assert client.get("/api/info").json()["files"] == 3


def test_text_search_and_media_with_ranges(setup) -> None:
    _, clips, _, client = setup
    target = sorted(clips.glob("clip_*.mp4"))[0]
    body = client.get("/api/search", params={"text": clip_caption(target), "k": 2}).json()
    assert len(body["results"]) == 2
    hit = body["results"][0]
    assert set(hit) >= {"path", "start", "end", "score", "media_url"} and hit["end"] > hit["start"]
    url, fragment = hit["media_url"].split("#")
    assert fragment == f"t={hit['start']:g},{hit['end']:g}"
    data = Path(hit["path"]).read_bytes()
    full = client.get(url)
    assert full.status_code == 200 and full.content == data
    part = client.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    thumb = client.get(hit["thumb_url"])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    more = client.get("/api/similar", params={"window": hit["window"], "k": 3}).json()["results"]
    assert more and hit["window"] not in [m["window"] for m in more]


@pytest.mark.parametrize("path", [
    "/media/1/../secret.mp4", "/media/1/%2e%2e/secret.mp4", "/media/1/..%2fsecret.mp4", "/media/1/%2E%2E%2Fsecret.mp4",
    "/media/1/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/media/1//etc/passwd", "/media/1/%2fetc%2fpasswd",
    "/media/1/..%5csecret.mp4", "/media/2/clip_000000.mp4", "/media/1/clip_000000.json", "/media/1/nothing.mp4",
    "/media/x/clip_000000.mp4", "/media/1/%00clip_000000.mp4"])
def test_only_indexed_files_under_a_root_are_served(setup, path) -> None:
    _, _, _, client = setup
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert b"outside the root" not in response.content and b"root:" not in response.content


def test_raw_dot_segments_over_a_socket_are_refused(setup) -> None:
    import http.client

    _, _, searcher, _ = setup
    with running_server(create_app(searcher)) as base:
        host, port = base.removeprefix("http://").split(":")
        for raw in ("/media/1/../secret.mp4", "/media/1/../../../../etc/passwd", "/media/1/%2e%2e/secret.mp4"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", raw)  # sent as is: no client-side normalisation
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status in (404, 422) and b"outside the root" not in body, raw


@pytest.mark.parametrize("params,status", [
    ({"text": "ball", "k": 0}, 422), ({"text": "ball", "k": "many"}, 422), ({"text": "ball", "k": 101}, 422),
    ({}, 422), ({"text": ""}, 422), ({"text": "   "}, 400), ({"text": "zzzz qqqq"}, 400)])
def test_bad_text_parameters_are_4xx(setup, params, status) -> None:
    _, _, _, client = setup
    response = client.get("/api/search", params=params)
    assert response.status_code == status and "detail" in response.json()


def test_bad_similar_window_is_404(setup) -> None:
    _, _, _, client = setup
    assert client.get("/api/similar", params={"window": 10**9}).status_code == 404
    assert client.get("/api/similar", params={"window": -3}).status_code == 422


def test_uploads(setup) -> None:
    _, clips, _, client = setup
    wav = sorted(clips.glob("clip_*.mp4"))[0].read_bytes()[:40000]  # under the 0.05 MB limit
    assert client.post("/api/search", files={"audio": ("notes.txt", b"hello")}).status_code == 415
    assert client.post("/api/search", files={"video": ("song.wav", b"RIFF")}).status_code == 415
    assert client.post("/api/search", files={"audio": ("noname", b"RIFF")}).status_code == 415
    assert client.post("/api/search", files={"audio": ("big.wav", b"\0" * 60_000)}).status_code == 413
    assert client.post("/api/search", files={"audio": ("bad.wav", b"RIFF garbage")}).status_code == 422
    assert client.post("/api/search", files={"audio": ("empty.wav", b"")}).status_code == 422
    assert client.post("/api/search", files={"audio": ("cut.mp4", wav)}).status_code in (200, 422)
    assert client.post("/api/search").status_code == 400
    both = {"audio": ("a.wav", b"x"), "video": ("b.mp4", b"y")}
    assert client.post("/api/search", files=both).status_code == 422  # both are searched (fused): undecodable
    assert client.post("/api/search", files={"video": ("b.mp4", b"y")}, data={"target": "text"}).status_code == 400
    assert client.post("/api/search", files={"video": ("b.mp4", b"y")}, data={"k": "0"}).status_code == 422


def test_audio_and_video_uploads_search(setup) -> None:
    _, clips, searcher, _ = setup
    client = local(create_app(searcher))
    clip = sorted(clips.glob("clip_*.mp4"))[2]
    with clip.open("rb") as f:
        hits = client.post("/api/search", files={"audio": (clip.name, f)}, data={"k": "3"}).json()["results"]
    assert len(hits) == 3
    with clip.open("rb") as f:
        hits = client.post("/api/search", files={"video": (clip.name, f)}, data={"start": "1", "exclude_self": "false"}
                           ).json()["results"]
    assert Path(hits[0]["path"]).name == clip.name and hits[0]["cosine"] == pytest.approx(1.0, abs=1e-4)
    with clip.open("rb") as f:  # a copy of an indexed file: its own window and the touching ones are left out
        body = client.post("/api/search", files={"video": (clip.name, f)}, data={"start": "1"}).json()
    own = [(h["start"], h["end"]) for h in body["results"] if Path(h["path"]).name == clip.name]
    assert body["excluded"] >= 1 and all(e < 1 - 1e-6 or s > 2 + 1e-6 for s, e in own), own


def test_an_empty_index_answers_with_no_results(setup) -> None:
    root, _, _, _ = setup
    client = local(create_app(open_searcher(root / "empty_idx")))
    assert client.get("/api/info").json()["windows"] == 0
    body = client.get("/api/search", params={"text": "ball bounces"}).json()
    assert body["results"] == [] and body["message"] == "no hits"


def test_fifty_concurrent_requests_are_all_answered(setup) -> None:
    _, clips, searcher, _ = setup
    text = clip_caption(sorted(clips.glob("clip_*.mp4"))[0]).replace(" ", "+")
    with running_server(create_app(searcher)) as base:
        def get(i: int) -> tuple[int, int]:
            url = f"{base}/api/search?text={text}&k={1 + i % 3}"
            with urllib.request.urlopen(url, timeout=60) as r:
                return r.status, len(json.loads(r.read())["results"])

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(get, range(50)))
    assert answers == [(200, 1 + i % 3) for i in range(50)]
