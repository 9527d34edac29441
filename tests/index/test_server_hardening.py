"""The server under hostile or careless input (issue findings P3, P13, P14, P16, P19, P20, P27, P30):
Host header check and the non-loopback warning, query video starts past the end, huge window ids,
the port range, uploads off the event loop, local API docs, the body limit enforced while it streams."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import pytest

from tests.helpers.index_utils import running_server, synthetic_clips, tiny_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmv_torch.index.build import build_index  # noqa: E402
from mmv_torch.index.query import open_searcher  # noqa: E402
from mmv_torch.index.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hardening")
    clips = synthetic_clips(root / "clips")
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    build_index(ckpt, clips, root / "idx", progress=False)
    return root, clips, open_searcher(root / "idx")


def client(app, host: str = "localhost") -> TestClient:
    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False)


# -- P3: DNS rebinding ------------------------------------------------------------------------------
@pytest.mark.parametrize("host,ok", [
    ("localhost", True), ("localhost:8000", True), ("127.0.0.1:18931", True), ("[::1]:8000", True),
    ("LOCALHOST", True), ("attacker.example:18931", False), ("attacker.example", False), ("testserver", False),
    ("127.0.0.1.attacker.example", False), ("", False)])
def test_only_loopback_host_names_are_answered(setup, host, ok) -> None:
    _, _, searcher = setup
    c = client(create_app(searcher))
    for path in ("/api/info", "/api/search?text=ball", "/media/1/clip_000000.mp4", "/"):
        r = c.get(path, headers={"host": host})
        assert (r.status_code != 400) == ok, (host, path, r.status_code)
        if not ok:
            assert "not allowed" in r.json()["detail"] and b"/clips/" not in r.content


def test_the_host_given_and_extra_names_are_answered(setup) -> None:
    _, _, searcher = setup
    lan = client(create_app(searcher, host="192.168.7.5", extra_hosts=["media.lan"]))
    assert lan.get("/api/info", headers={"host": "192.168.7.5:8000"}).status_code == 200
    assert lan.get("/api/info", headers={"host": "media.lan"}).status_code == 200
    assert lan.get("/api/info", headers={"host": "10.0.0.9"}).status_code == 400
    wild = client(create_app(searcher, host="0.0.0.0"))
    assert wild.get("/api/info", headers={"host": "10.0.0.9:8000"}).status_code == 200  # an address: no rebinding
    assert wild.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    from mmv_torch.index.server import allowed_hosts, host_name

    assert host_name("[::1]:80") == "[::1]" and host_name("Example.COM:1") == "example.com"
    assert allowed_hosts("::1")[0] >= {"[::1]", "localhost"}


def test_raw_socket_with_a_foreign_host_is_refused(setup) -> None:
    import http.client

    _, _, searcher = setup
    with running_server(create_app(searcher)) as base:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/search?text=ball", headers={"Host": f"attacker.example:{port}"})
        r = conn.getresponse()
        assert r.status == 400 and b"/clips/" not in r.read()
        conn.close()
        with urllib.request.urlopen(f"{base}/api/info", timeout=10) as ok:
            assert ok.status == 200


def test_serving_a_non_loopback_address_warns(setup, monkeypatch, capsys) -> None:
    import uvicorn

    import mmv_torch.index.api as api
    from mmv_torch.index.server import serve

    root, _, searcher = setup
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(api, "open_index", lambda *a, **k: api.Index(searcher))
    serve(root / "idx", host="0.0.0.0", port=0)  # port 0: any free port (serve binds before it runs)
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err
    serve(root / "idx", host="127.0.0.1", port=0)
    assert "warning" not in capsys.readouterr().err
    from mmv_torch.index.server import is_loopback

    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("192.168.1.2")


# -- P16: the port range ----------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["70000", "65536", "0", "-1", "http"])
def test_serve_port_out_of_range_is_one_line(setup, port, capsys) -> None:
    from mmv_torch.cli.main import main

    root, _, _ = setup
    with pytest.raises(SystemExit) as e:
        main(["serve", str(root / "idx"), "--port", port])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--port" in err and "Traceback" not in err


# -- P13, P20: a query video's start ----------------------------------------------------------------
@pytest.mark.parametrize("start", ["1e300", "1000", "3.5"])
def test_upload_start_past_the_end_is_400(setup, start) -> None:
    _, clips, searcher = setup
    clip = sorted(clips.glob("clip_*.mp4"))[0]
    r = client(create_app(searcher)).post("/api/search", files={"video": (clip.name, clip.read_bytes())},
                                          data={"start": start})
    assert r.status_code == 400 and f"outside {clip.name}" in r.json()["detail"], r.text


# -- P14: ids beyond SQLite's integers ----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/thumb/99999999999999999999999.jpg", "/thumb/9223372036854775808.jpg",
                                  "/api/similar?window=99999999999999999999999",
                                  "/api/similar?window=9223372036854775808", "/preview/99999999999999999999/0.mp4",
                                  "/media/99999999999999999999999/clip_000000.mp4"])
def test_huge_ids_are_4xx(setup, path) -> None:
    _, _, searcher = setup
    r = client(create_app(searcher)).get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert client(create_app(searcher)).get("/api/similar?window=9223372036854775807").status_code == 404


# -- P27: local API docs ------------------------------------------------------------------------------
def test_api_docs_need_no_cdn(setup) -> None:
    _, _, searcher = setup
    c = client(create_app(searcher))
    page = c.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.replace("no CDN", "") and "://" not in page.text
    for src in ("/static/docs.js", "/static/style.css"):
        body = c.get(src)
        assert body.status_code == 200 and "://" not in body.text
    assert c.get("/redoc").status_code == 404 and "/api/search" in c.get("/openapi.json").json()["paths"]


# -- P19: uploads off the event loop ------------------------------------------------------------------
def test_an_upload_does_not_stall_other_requests(setup, monkeypatch) -> None:
    _, clips, searcher = setup
    real = searcher.embed

    def slow(mode, **kw):
        if mode == "audio":
            time.sleep(3.0)
        return real(mode, **kw)

    monkeypatch.setattr(searcher, "embed", slow)
    clip = sorted(clips.glob("clip_*.mp4"))[0]
    with running_server(create_app(searcher)) as base:
        def upload() -> None:
            import http.client

            boundary = "b0undary"
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"{clip.name}\"\r\n"
                    "Content-Type: video/mp4\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            host, port = base.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("POST", "/api/search", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            done.append(conn.getresponse().status)

        done: list[int] = []
        t = threading.Thread(target=upload)
        t.start()
        time.sleep(0.5)  # the upload is being embedded now
        t0 = time.monotonic()
        with urllib.request.urlopen(f"{base}/api/info", timeout=30) as r:
            assert r.status == 200
        waited = time.monotonic() - t0
        t.join(30)
    assert done == [200]
    assert waited < 1.5, f"/api/info waited {waited:.2f} s behind an upload"


def test_the_upload_pool_is_bounded(setup) -> None:
    from fastapi import HTTPException

    from mmv_torch.index.server import _Pool

    pool = _Pool(1)
    gate = threading.Event()

    async def main() -> list:
        tasks = [asyncio.create_task(pool.run(gate.wait, 10)) for _ in range(7)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, HTTPException)]
    assert len(refused) == 2 and all(r.status_code == 503 for r in refused)
    assert results.count(True) == 5


# -- P30: the body limit while it streams -------------------------------------------------------------
def _asgi_post(app, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """POST ``chunks`` to ``app``; returns (status, bytes the app pulled)."""
    pulled = 0
    queue = list(chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if not queue:
            return {"type": "http.disconnect"}
        body = queue.pop(0)
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/search", "raw_path": b"/api/search", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost"), *headers], "client": ("127.0.0.1", 1), "server": ("localhost", 80)}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled


def test_a_large_body_is_refused_while_it_streams(setup) -> None:
    _, _, searcher = setup
    app = create_app(searcher, max_upload_mb=1)
    boundary = b"xyz"
    head = b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
    chunks = [head] + [b"\0" * (1 << 20)] * 20 + [b"\r\n--xyz--\r\n"]
    ctype = (b"content-type", b"multipart/form-data; boundary=" + boundary)
    status, pulled = _asgi_post(app, chunks, [ctype])  # chunked: no Content-Length
    assert status == 413 and pulled <= 3 * (1 << 20), pulled
    status, pulled = _asgi_post(app, chunks, [ctype, (b"content-length", str(21 << 20).encode())])
    assert status == 413 and pulled == 0


def test_body_limit_passes_small_bodies() -> None:
    from mmv_torch.index.server import BodyLimit

    seen = []

    async def inner(scope, receive, send):
        while True:
            m = await receive()
            seen.append(len(m.get("body", b"")))
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    status, pulled = _asgi_post(BodyLimit(inner, 1000, "too large"), [b"a" * 400, b"b" * 400], [])
    assert status == 200 and pulled == 800 and seen == [400, 400]
    status, _ = _asgi_post(BodyLimit(inner, 1000, "too large"), [b"a" * 600, b"b" * 600], [])
    assert status == 413
