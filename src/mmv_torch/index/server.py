"""``mmv-torch serve INDEX``: a FastAPI application with one static page and a JSON API over an index.

Only files recorded in the index, under one of its roots, are ever served (``/media/ROOT/PATH``, with
HTTP range requests; ``/preview/FILE/SEGMENT.mp4``: a transcoded segment of a file a browser cannot
play); every bad parameter or upload is answered with a 4xx and a ``detail`` message. The server
answers only requests whose ``Host`` is a loopback name, the ``--host`` it was started with or an
``--allowed-host`` (no DNS rebinding); a body over the upload limit is refused while it streams;
uploads are decoded and embedded in a bounded pool of worker threads, off the event loop.
"""

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from mmv_torch.data.media.decode import DecodeError
from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.index.api import Filters, Index, SearchResult, clean
from mmv_torch.index.preview import SEGMENT_S, PreviewCache, PreviewError, browser_playable
from mmv_torch.index.query import Searcher

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_MB = 100.0
MAX_ID = 2 ** 63 - 1
"""The largest SQLite integer: larger window or file ids are a 422, not a 500."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
UPLOAD_WORKERS = 2
"""Uploads decoded and embedded at once; up to 4 times as many wait, more are answered 503."""
_MULTIPART_SLACK = 65536


def media_url(hit: dict[str, Any], roots: dict[int, Path]) -> str:
    """The URL that plays a hit's segment: ``/media/ROOT/PATH#t=START,END`` (an HTML5 time fragment)."""
    rel = Path(hit["path"]).relative_to(roots[hit["root"]]).as_posix()
    return f"/media/{hit['root']}/{quote(rel)}#t={hit['start']:g},{hit['end']:g}"


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port: ``[::1]:80`` -> ``[::1]``."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[:h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(host: str) -> bool:
    """Whether a ``--host`` binds loopback only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[set[str], bool]:
    """The ``Host`` names a server bound to ``host`` answers, and whether any IP literal is also
    accepted (a wildcard bind: a rebinding attack always sends its own *name*, never an address)."""
    names = set(LOOPBACK_NAMES)
    h = host.strip().lower()
    wildcard = h in ("", "0.0.0.0", "::", "[::]")
    try:
        ipaddress.IPv6Address(h.strip("[]"))
        h = f"[{h.strip('[]')}]"
    except ValueError:
        pass
    if not wildcard:
        names.add(h)
    else:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    names |= {host_name(e) for e in extra}
    return names, wildcard


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: requests whose ``Host`` is not allowed get a 400 (DNS rebinding protection)."""

    def __init__(self, app: Any, names: set[str], any_ip: bool = False) -> None:
        self.app, self.names, self.any_ip = app, names, any_ip

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = host_name(raw)
            if name not in self.names and not (self.any_ip and _is_ip(name)):
                response = JSONResponse({"detail": f"host {raw!r} is not allowed (start the server with "
                                                   "--allowed-host NAME to answer it)"}, 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 as soon as it is known: at
    once from ``Content-Length``, or when the streamed bytes pass the limit (the rest is not read)."""

    def __init__(self, app: Any, limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def _reject(self, scope: dict, receive: Any, send: Any) -> None:
        await JSONResponse({"detail": self.message}, 413, headers={"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1").strip()
        if length.isdigit() and int(length) > self.limit:
            await self._reject(scope, receive, send)
            return
        received, over, started = 0, False, False

        async def counted() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if over:
                return  # the application's answer to a cut body is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._reject(scope, receive, send)


class _Pool:
    """A bounded pool of worker threads: ``workers`` run, ``4 * workers`` wait, more are refused."""

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmv-upload")
        self.limit = 5 * workers
        self.pending = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        if self.pending >= self.limit:
            raise HTTPException(503, "the server is busy with other uploads; try again in a moment")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.pending -= 1


def _filters(path: str | None, min_duration: float | None, max_duration: float | None, has_audio: bool | None,
             after: str | None, before: str | None) -> Filters:
    return Filters(path=path or None, min_duration=min_duration, max_duration=max_duration, has_audio=has_audio,
                   modified_after=after or None, modified_before=before or None)


def safe_media_path(searcher: Searcher | Index, root_id: int, rel: str) -> Path | None:
    """The indexed file that ``/media/root_id/rel`` names, or ``None`` for anything else (an unknown root,
    a path leaving the root after resolving ``..`` and links, a file that is not in the index)."""
    store = searcher.store
    root = store.roots().get(root_id)
    if root is None or "\x00" in rel:
        return None
    try:
        candidate = (root / rel).resolve()
        candidate.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    rec = store.file(candidate)
    if rec is None or rec.status != "done" or not candidate.is_file():
        return None
    return candidate


class _App:
    """The state behind the routes: the open index, the playability cache, the pools."""

    def __init__(self, index: Index, previews: PreviewCache, workers: int) -> None:
        self.index, self.previews = index, previews
        self.uploads, self.transcodes = _Pool(workers), _Pool(workers)
        self._playable: dict[tuple[int, float], bool] = {}

    def playable(self, file_id: int, path: str) -> bool:
        rec = self.index.store.file_by_id(file_id)
        key = (file_id, rec.mtime if rec else 0.0)
        if key not in self._playable:
            self._playable[key] = browser_playable(path)
        return self._playable[key]

    def results(self, result: SearchResult) -> dict[str, Any]:
        roots = self.index.store.roots()
        out = clean(result.to_dict())
        for h in out["results"]:
            rel = Path(h["path"]).relative_to(roots[h["root"]]).as_posix()
            h["name"] = Path(h["path"]).name
            h["rel"] = rel
            h["media_url"] = media_url(h, roots)
            h["file_url"] = f"/media/{h['root']}/{quote(rel)}"
            h["thumb_url"] = f"/thumb/{h['window']}.jpg" if h["has_video"] else None  # audio-only: no picture
            h["playable"] = self.playable(h["file"], h["path"])
            h["preview_url"] = None if h["playable"] else f"/preview/{h['file']}/{{segment}}.mp4"
        out["segment_s"] = SEGMENT_S
        return out

    def search(self, **query: Any) -> dict[str, Any]:
        try:
            return self.results(self.index.search(**query))
        except DecodeError as e:
            raise HTTPException(422, f"cannot decode the uploaded file: {e.reason}") from None
        except LookupError as e:
            raise HTTPException(404, str(e).strip("'\"")) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    def info(self) -> dict[str, Any]:
        store = self.index.store
        row = store.db.execute("SELECT COUNT(*), COALESCE(SUM(duration), 0), COALESCE(SUM(has_audio), 0) FROM files "
                               "WHERE status = 'done'").fetchone()
        sample = []
        roots = store.roots()
        for fid, path, root, duration in store.db.execute(
                "SELECT id, path, root, duration FROM files WHERE status = 'done' ORDER BY id LIMIT 12").fetchall():
            win = store.db.execute("SELECT id FROM windows WHERE file = ? AND thumb IS NOT NULL ORDER BY start LIMIT 1",
                                   (fid,)).fetchone()
            rel = Path(path).relative_to(roots[root]).as_posix() if root in roots else Path(path).name
            sample.append({"name": Path(path).name, "rel": rel, "duration": duration,
                           "thumb_url": f"/thumb/{win[0]}.jpg" if win else None,
                           "file_url": f"/media/{root}/{quote(rel)}"})
        kinds: dict[str, int] = {}
        for (path,) in store.db.execute("SELECT path FROM files WHERE status = 'done'"):
            ext = Path(path).suffix.lower() or "(none)"
            kinds[ext] = kinds.get(ext, 0) + 1
        return {**self.index.info(), "nn_index": store.info().get("nn_index", {}), "total_duration_s": row[1],
                "with_audio": int(row[2]), "suffixes": kinds, "sample": sample}


def _save_upload_sync(upload: UploadFile, suffix: str, limit: int, max_upload_mb: float) -> str:
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="mmv-query-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            upload.file.seek(0)
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
                f.write(chunk)
        if size == 0:
            raise HTTPException(422, "empty upload")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def create_app(searcher: Searcher | Index, max_upload_mb: float = MAX_UPLOAD_MB, host: str = "127.0.0.1",
               extra_hosts: list[str] | tuple[str, ...] = (), preview_dir: str | Path | None = None,
               preview_mb: float = 512.0, workers: int = UPLOAD_WORKERS) -> FastAPI:
    """The web application over an open index (an :class:`~mmv_torch.index.api.Index`, or a
    :class:`~mmv_torch.index.query.Searcher` it wraps). ``host``/``extra_hosts``: the ``Host`` names
    answered besides loopback ones; ``preview_dir``: the cache of transcoded previews (default: a
    folder under the user's cache); ``workers``: uploads processed at once."""
    index = searcher if isinstance(searcher, Index) else Index(searcher)
    cache = Path(preview_dir) if preview_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
        "mmv-torch" / "previews"
    state = _App(index, PreviewCache(cache, preview_mb), workers)
    app = FastAPI(title="mmv-torch search", description="Search a video collection by text, audio or video "
                  "with MMV embeddings.", version="2", docs_url=None, redoc_url=None)
    limit = int(max_upload_mb * 1024 * 1024)
    names, any_ip = allowed_hosts(host, extra_hosts)
    app.add_middleware(BodyLimit, limit=limit + _MULTIPART_SLACK, message=f"upload larger than {max_upload_mb:g} MB")
    app.add_middleware(HostCheck, names=names, any_ip=any_ip)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.index = index

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """Counts and settings of the index, and a sample of its videos."""
        return state.info()

    _search_routes(app, state, limit, max_upload_mb)
    _media_routes(app, state)
    return app


def _search_routes(app: FastAPI, state: _App, limit: int, max_upload_mb: float) -> None:
    """The search endpoints: text, more like this, uploads (with optional text)."""
    index = state.index
    filter_args = {
        "path": Query(None, max_length=1000, description="glob on the path (absolute or under its root)"),
        "min_duration": Query(None, ge=0, le=1e9), "max_duration": Query(None, ge=0, le=1e9),
        "has_audio": Query(None), "after": Query(None, max_length=40, description="modified after (ISO date)"),
        "before": Query(None, max_length=40, description="modified before (ISO date)")}

    @app.get("/api/search")
    def search_text(text: str = Query(..., min_length=1, max_length=1000, description="what is said or seen"),
                    k: int = Query(10, ge=1, le=100), path: str | None = filter_args["path"],
                    min_duration: float | None = filter_args["min_duration"],
                    max_duration: float | None = filter_args["max_duration"],
                    has_audio: bool | None = filter_args["has_audio"], after: str | None = filter_args["after"],
                    before: str | None = filter_args["before"]) -> dict[str, Any]:
        """Text -> video windows (S_vt); each hit has a calibrated ``score``, its raw ``cosine`` and
        ``parts``; ``good_match`` is false when the best hit is no better than a random query's."""
        if not text.strip():
            raise HTTPException(400, "empty query")
        return state.search(text=text, k=k,
                            filters=_filters(path, min_duration, max_duration, has_audio, after, before))

    @app.get("/api/similar")
    def similar(window: int = Query(..., ge=1, le=MAX_ID), k: int = Query(10, ge=1, le=100),
                exclude_source: bool = Query(False, description="leave out the whole source video"),
                path: str | None = filter_args["path"], min_duration: float | None = filter_args["min_duration"],
                max_duration: float | None = filter_args["max_duration"],
                has_audio: bool | None = filter_args["has_audio"], after: str | None = filter_args["after"],
                before: str | None = filter_args["before"]) -> dict[str, Any]:
        """More like this: the windows nearest to an indexed window (S_vt), without the window itself
        and the windows of its video touching it."""
        return state.search(window=window, k=k, exclude_source=exclude_source,
                            filters=_filters(path, min_duration, max_duration, has_audio, after, before))

    @app.post("/api/search")
    async def search_upload(request: Request, audio: Annotated[UploadFile | None, File()] = None,
                            video: Annotated[UploadFile | None, File()] = None,
                            text: Annotated[str | None, Form(max_length=1000)] = None,
                            k: Annotated[int, Form(ge=1, le=100)] = 10,
                            start: Annotated[float | None, Form(ge=0)] = None,
                            target: Annotated[str, Form()] = "video",
                            exclude_self: Annotated[bool, Form()] = True,
                            path: Annotated[str | None, Form(max_length=1000)] = None,
                            min_duration: Annotated[float | None, Form(ge=0)] = None,
                            max_duration: Annotated[float | None, Form(ge=0)] = None,
                            has_audio: Annotated[bool | None, Form()] = None,
                            after: Annotated[str | None, Form(max_length=40)] = None,
                            before: Annotated[str | None, Form(max_length=40)] = None) -> dict[str, Any]:
        """An uploaded ``audio`` file (audio -> video in S_va; ``target=audio``: audio -> audio, audio-only
        windows included) and/or ``video`` file (``target=video``: video -> video in S_vt;
        ``target=audio``: video -> audio in S_va), optionally with ``text``:
        the parts' calibrated scores are averaged. A video that is a copy of an indexed file (same
        name and size) does not return its own window (``exclude_self=false`` keeps it)."""
        if audio is None and video is None:
            raise HTTPException(400, "send a file, as 'audio' or 'video' (and optionally 'text')")
        if target not in ("video", "audio"):
            raise HTTPException(400, f"target must be 'video' or 'audio', got {target!r}")
        if text is not None and not text.strip():
            text = None
        files: dict[str, str] = {}
        try:
            for name, upload in (("audio", audio), ("video", video)):
                if upload is None:
                    continue
                suffix = Path(upload.filename or "").suffix.lower()
                kinds = ("audio", "video") if name == "audio" else ("video",)
                if MEDIA_SUFFIXES.get(suffix) not in kinds:
                    allowed = sorted(s for s, m in MEDIA_SUFFIXES.items() if m in kinds)
                    raise HTTPException(415, f"unsupported file type {suffix or '(none)'!r}; expected one of {allowed}")
                files[name] = await state.uploads.run(_save_upload_sync, upload, suffix, limit, max_upload_mb)
            source = None
            if video is not None and exclude_self:
                source = _indexed_copy(index, video.filename or "", os.path.getsize(files["video"]))
            try:
                return await state.uploads.run(lambda: state.search(
                    text=text, audio=files.get("audio"), video=files.get("video"), start=start, k=k, target=target,
                    exclude_self=exclude_self, source=source,
                    filters=_filters(path, min_duration, max_duration, has_audio, after, before)))
            except HTTPException as e:  # name the upload, not its temporary copy
                detail = str(e.detail)
                for name, tmp in files.items():
                    upload = audio if name == "audio" else video
                    detail = detail.replace(Path(tmp).name, Path(upload.filename or name).name)  # type: ignore[union-attr]
                raise HTTPException(e.status_code, detail) from None
        finally:
            for tmp in files.values():
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _media_routes(app: FastAPI, state: _App) -> None:
    """The files of the indexed roots, transcoded preview segments and window thumbnails."""
    index = state.index
    @app.get("/media/{root_id}/{rel:path}", include_in_schema=False)
    def media(root_id: int, rel: str) -> FileResponse:
        path = safe_media_path(index, root_id, rel) if 0 <= root_id <= MAX_ID else None
        if path is None:
            raise HTTPException(404, "not found")
        return FileResponse(path)

    @app.get("/preview/{file_id}/{segment}.mp4", include_in_schema=False)
    async def preview(file_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
                      segment: Annotated[int, PathParam(ge=0, le=10 ** 6)]) -> FileResponse:
        rec = index.store.file_by_id(file_id)
        path = None
        if rec is not None:
            root = index.store.roots().get(rec.root)
            with contextlib.suppress(ValueError):
                path = safe_media_path(index, rec.root, Path(rec.path).relative_to(root).as_posix()) if root else None
        if path is None:
            raise HTTPException(404, "not found")
        if rec.duration is not None and segment * SEGMENT_S > rec.duration + 1e-3:
            raise HTTPException(404, f"segment {segment} is past the end of the video")
        try:
            out = await state.transcodes.run(state.previews.segment, path, segment)
        except PreviewError as e:
            raise HTTPException(422, f"no preview: {e}") from None
        return FileResponse(out, media_type="video/mp4")

    @app.get("/thumb/{window}.jpg", include_in_schema=False)
    def thumb(window: Annotated[int, PathParam(ge=0, le=MAX_ID)]) -> Response:
        data = index.store.thumbnail(window)
        if not data:
            raise HTTPException(404, "no thumbnail")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def _indexed_copy(index: Index, filename: str, size: int) -> str | None:
    """The indexed file an upload is a copy of: the one done file with the same name and size."""
    name = Path(filename).name
    if not name:
        return None
    rows = index.store.db.execute("SELECT path FROM files WHERE status = 'done' AND size = ?", (size,)).fetchall()
    same = [p for (p,) in rows if Path(p).name == name]
    return same[0] if len(same) == 1 else None


def serve(index: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          max_upload_mb: float = MAX_UPLOAD_MB, allowed_hosts: list[str] | None = None) -> None:
    """Open ``index`` and serve it until interrupted (``port`` 0: any free port; the address is printed once bound;
    a warning when ``host`` is not loopback only)."""
    import uvicorn

    from mmv_torch.index.api import open_index

    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535 (0: any free port), got {port}")
    if not is_loopback(host):
        print(f"warning: serving on {host} makes the index (search results with absolute paths, every indexed "
              "video) readable by anyone who can reach this machine; there is no authentication", file=sys.stderr,
              flush=True)
    app = create_app(open_index(index, device=device), max_upload_mb, host=host, extra_hosts=allowed_hosts or ())
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:  # bind first: a busy port is one line, the real port shown
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise OSError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
        sock.listen(128)
        port = sock.getsockname()[1]
        print(f"serving {index} on http://{host}:{port}/ (API docs: /docs)", flush=True)
        uvicorn.run(app, fd=sock.fileno(), log_level="warning")
