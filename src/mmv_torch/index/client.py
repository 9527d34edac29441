"""A small client for a running ``mmv-torch serve`` (urllib: no HTTP package needed): the same
:class:`~mmv_torch.index.api.SearchResult` of typed hits as the in-process API.

    from mmv_torch.index.client import Client
    hits = Client("http://127.0.0.1:8000").search(text="a dog barks", k=5)
"""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from mmv_torch.index.api import Filters, Hit, Part, SearchResult


class ServerError(Exception):
    """The server answered with an error: ``status`` and its ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _filter_params(filters: Filters | None) -> dict[str, str]:
    if filters is None:
        return {}
    out = {"path": filters.path, "min_duration": filters.min_duration, "max_duration": filters.max_duration,
           "has_audio": None if filters.has_audio is None else str(bool(filters.has_audio)).lower(),
           "after": filters.modified_after, "before": filters.modified_before}
    return {k: str(v) for k, v in out.items() if v is not None}


def result_from_json(body: dict[str, Any]) -> SearchResult:
    """A :class:`SearchResult` from the server's JSON answer (extra keys such as ``media_url`` are
    dropped; they stay in ``body``)."""
    hits = []
    for h in body["results"]:
        parts = {k: Part(**p) for k, p in h["parts"].items()}
        hits.append(Hit(path=h["path"], start=h["start"], end=h["end"], score=h["score"], cosine=h["cosine"],
                        spaces=tuple(h["spaces"]), parts=parts, window=h["window"], windows=h["windows"],
                        file=h["file"], root=h["root"], duration=h.get("duration"), has_audio=h.get("has_audio", False),
                        moment=tuple(h.get("moment", (h["start"], h["end"])))))
    return SearchResult(hits, tuple(body.get("kinds", ())), body.get("threshold", 0.95), body.get("good_match"),
                        body.get("excluded", 0))


class Client:
    """Searches a running server at ``base_url`` (``timeout`` seconds per request)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 60.0) -> None:
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", e.reason)
            except ValueError:
                detail = e.reason
            raise ServerError(e.code, str(detail)) from None

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._call(urllib.request.Request(f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"))

    def info(self) -> dict[str, Any]:
        """The server's ``/api/info``: counts, settings, a sample of videos."""
        return self._get("/api/info", {})

    def search(self, text: str | None = None, audio: str | Path | None = None, video: str | Path | None = None, *,
               start: float | None = None, k: int = 10, filters: Filters | None = None, target: str = "video",
               exclude_self: bool = True) -> SearchResult:
        """As :meth:`mmv_torch.index.api.Index.search`: a text query is a GET, files are uploaded."""
        if audio is None and video is None:
            if text is None:
                raise ValueError("give text, audio or video")
            return result_from_json(self._get("/api/search", {"text": text, "k": k, **_filter_params(filters)}))
        fields = {"k": str(k), "target": target, "exclude_self": str(exclude_self).lower(), **_filter_params(filters)}
        if text is not None:
            fields["text"] = text
        if start is not None:
            fields["start"] = repr(float(start))
        files = {name: Path(p) for name, p in (("audio", audio), ("video", video)) if p is not None}
        boundary = uuid.uuid4().hex
        body = bytearray()
        for name, value in fields.items():
            body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
        for name, path in files.items():
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{path.name}\"\r\n"
                     f"Content-Type: {ctype}\r\n\r\n").encode() + path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{self.base_url}/api/search", data=bytes(body), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return result_from_json(self._call(request))

    def similar(self, window: int, k: int = 10, exclude_source: bool = False, filters: Filters | None = None
                ) -> SearchResult:
        """More like this: the server's ``/api/similar``."""
        return result_from_json(self._get("/api/similar", {"window": window, "k": k,
                                                           "exclude_source": str(exclude_source).lower(),
                                                           **_filter_params(filters)}))
