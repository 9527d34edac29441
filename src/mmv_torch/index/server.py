"""``mmv-torch serve INDEX``: a FastAPI application with one static page and a JSON API over an index.

Only files recorded in the index, under one of its roots, are ever served (``/media/ROOT/PATH``, with
HTTP range requests); every bad parameter or upload is answered with a 4xx and a ``detail`` message.
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from mmv_torch.data.media.decode import DecodeError
from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.index.query import Searcher

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_MB = 100.0


def media_url(hit: dict[str, Any], roots: dict[int, Path]) -> str:
    """The URL that plays a hit's segment: ``/media/ROOT/PATH#t=START,END`` (an HTML5 time fragment)."""
    rel = Path(hit["path"]).relative_to(roots[hit["root"]]).as_posix()
    return f"/media/{hit['root']}/{quote(rel)}#t={hit['start']:g},{hit['end']:g}"


def _results(searcher: Searcher, hits: list[dict[str, Any]]) -> dict[str, Any]:
    roots = searcher.store.roots()
    return {"results": [{"path": h["path"], "start": h["start"], "end": h["end"], "score": h["score"],
                         "media_url": media_url(h, roots), "thumb_url": f"/thumb/{h['window']}.jpg",
                         "window": h["window"]} for h in hits]}


def safe_media_path(searcher: Searcher, root_id: int, rel: str) -> Path | None:
    """The indexed file that ``/media/root_id/rel`` names, or ``None`` for anything else (an unknown root,
    a path leaving the root after resolving ``..`` and links, a file that is not in the index)."""
    root = searcher.store.roots().get(root_id)
    if root is None or "\x00" in rel:
        return None
    try:
        candidate = (root / rel).resolve()
        candidate.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    rec = searcher.store.file(candidate)
    if rec is None or rec.status != "done" or not candidate.is_file():
        return None
    return candidate


def create_app(searcher: Searcher, max_upload_mb: float = MAX_UPLOAD_MB) -> FastAPI:
    """The web application over an open :class:`~mmv_torch.index.query.Searcher`."""
    app = FastAPI(title="mmv-torch search", description="Search a video collection by text, audio or video "
                  "with MMV embeddings.", version="1")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    limit = int(max_upload_mb * 1024 * 1024)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """Counts and settings of the index."""
        i = searcher.store.info()
        return {**searcher.store.counts(), "window_s": i.get("window_s"), "stride_s": i.get("stride_s"),
                "text_search": searcher.tokenizer is not None, "nn_index": i.get("nn_index", {})}

    def run(mode: str, k: int, **query: Any) -> dict[str, Any]:
        try:
            return _results(searcher, searcher.search(mode, k=k, **query))
        except DecodeError as e:
            raise HTTPException(422, f"cannot decode the uploaded file: {e.reason}") from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/api/search")
    def search_text(text: str = Query(..., min_length=1, max_length=1000, description="what is said or seen"),
                    k: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        """Text -> video windows (S_vt)."""
        if not text.strip():
            raise HTTPException(400, "empty query")
        return run("text", k, text=text)

    @app.get("/api/similar")
    def similar(window: int = Query(..., ge=1), k: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        """More like this: the windows nearest to an indexed window (S_vt)."""
        vec = searcher.store.window_vector("video_vt", window)
        if vec is None:
            raise HTTPException(404, f"no window {window} in the index")
        return _results(searcher, searcher.search_vector("video_vt", vec, k))

    @app.post("/api/search")
    async def search_upload(request: Request, audio: Annotated[UploadFile | None, File()] = None,
                            video: Annotated[UploadFile | None, File()] = None,
                            k: Annotated[int, Form(ge=1, le=100)] = 10,
                            start: Annotated[float | None, Form(ge=0)] = None,
                            target: Annotated[str, Form()] = "video") -> dict[str, Any]:
        """An uploaded ``audio`` file (audio -> video, S_va) or ``video`` file (``target=video``: video ->
        video in S_vt; ``target=audio``: video -> audio in S_va)."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + 65536:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
        if (audio is None) == (video is None):
            raise HTTPException(400, "send exactly one file, as 'audio' or 'video'")
        if target not in ("video", "audio"):
            raise HTTPException(400, f"target must be 'video' or 'audio', got {target!r}")
        upload = audio or video
        suffix = Path(upload.filename or "").suffix.lower()
        kinds = ("audio", "video") if audio is not None else ("video",)
        if MEDIA_SUFFIXES.get(suffix) not in kinds:
            allowed = sorted(s for s, m in MEDIA_SUFFIXES.items() if m in kinds)
            raise HTTPException(415, f"unsupported file type {suffix or '(none)'!r}; expected one of {allowed}")
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="mmv-query-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as f:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(422, "empty upload")
            if audio is not None:
                return run("audio", k, path=tmp)
            return run("video" if target == "video" else "video-audio", k, path=tmp, start_s=start)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    @app.get("/media/{root_id}/{rel:path}", include_in_schema=False)
    def media(root_id: int, rel: str) -> FileResponse:
        path = safe_media_path(searcher, root_id, rel)
        if path is None:
            raise HTTPException(404, "not found")
        return FileResponse(path)

    @app.get("/thumb/{window}.jpg", include_in_schema=False)
    def thumb(window: int) -> Response:
        data = searcher.store.thumbnail(window)
        if not data:
            raise HTTPException(404, "no thumbnail")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def serve(index: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          max_upload_mb: float = MAX_UPLOAD_MB) -> None:
    """Open ``index`` and serve it until interrupted."""
    import uvicorn

    from mmv_torch.index.query import open_searcher

    app = create_app(open_searcher(index, device=device), max_upload_mb)
    print(f"serving {index} on http://{host}:{port}/ (API docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
