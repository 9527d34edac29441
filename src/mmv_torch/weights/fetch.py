"""``mmv-torch fetch NAME``: download a released checkpoint (with progress and resume), verify it, convert
it, and record its origin, licence and checksum in the folder (``config.json``'s ``origin`` and a model
card ``README.md``).

DeepMind released three checkpoints (:data:`RELEASED`) under CC BY-NC 4.0 (non-commercial use; the code
of this package is Apache-2.0). Downloads go to a cache folder (``MMV_TORCH_CACHE``, default
``~/.cache/mmv-torch``) as ``FILE.part`` until complete, so a killed download continues where it
stopped (an HTTP ``Range`` request) and a finished one is not downloaded again. The file's SHA-256 is
checked against ``--sha256`` (or the one recorded for the release, when known); a mismatch removes the
download and refuses to convert it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CC_BY_NC = "CC BY-NC 4.0"
CC_BY_NC_URL = "https://creativecommons.org/licenses/by-nc/4.0/legalcode"
OFFICIAL_PAGE = "https://github.com/google-deepmind/deepmind-research/tree/master/mmv"


@dataclass(frozen=True)
class Release:
    """A released checkpoint: its file, download URL, licence and (when published) SHA-256."""

    preset: str
    file: str
    url: str
    licence: str = CC_BY_NC
    licence_url: str = CC_BY_NC_URL
    sha256: str | None = None
    """None: not published; the first download's checksum is recorded (and printed) instead."""


RELEASED = {r.preset: r for r in (
    Release("mmv_s3d", "mmv_s3d.pkl", "https://storage.googleapis.com/deepmind-research-mmv/mmv_s3d.pkl"),
    Release("mmv_tsm_r50", "mmv_tsm_resnet_x1.pkl",
            "https://storage.googleapis.com/deepmind-research-mmv/mmv_tsm_resnet_x1.pkl"),
    Release("mmv_tsm_r50x2", "mmv_tsm_resnet_x2.pkl",
            "https://storage.googleapis.com/deepmind-research-mmv/mmv_tsm_resnet_x2.pkl"),
)}
"""Preset -> the DeepMind release of its weights (the official MMV page: :data:`OFFICIAL_PAGE`)."""

CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloads are kept: ``$MMV_TORCH_CACHE``, else ``~/.cache/mmv-torch``."""
    return Path(os.environ.get("MMV_TORCH_CACHE") or Path.home() / ".cache" / "mmv-torch")


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    s = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise ValueError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    return s


def _total(headers: Any, start: int, status: int) -> int | None:
    """The whole file's size from a response's headers (``Content-Range`` of a 206, else ``Content-Length``)."""
    rng = headers.get("Content-Range") or ""
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", rng)
    if m and m.group(3) != "*":
        return int(m.group(3))
    length = headers.get("Content-Length")
    return int(length) + (start if status == 206 else 0) if length is not None else None


def download(url: str, dest: str | Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, continuing a partial ``.part`` with a ``Range``
    request (a server that ignores it sends the whole file, which replaces the part). ``dest`` appears
    only when complete (renamed from the part). Network errors raise ``OSError`` naming the URL; the part
    is kept for the next try."""
    import urllib.error
    import urllib.request

    from mmv_torch.progress import bar

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the user's URL)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part is already whole
            total = _total(e.headers, 0, 416)
            if total is None or total == start:
                os.replace(part, dest)
                return dest
        raise OSError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError) as e:
        raise OSError(f"{url}: {getattr(e, 'reason', e)}") from e
    with response:
        status = getattr(response, "status", 200)
        if status != 206:
            start = 0  # the whole file: start the part again
        total = _total(response.headers, start, status)
        with open(part, "ab" if start else "wb") as f, bar(total=total, initial=start, unit="B", unit_scale=True,
                                                          unit_divisor=1024, desc=dest.name,
                                                          requested=progress) as shown:
            try:
                while block := response.read(CHUNK):
                    f.write(block)
                    shown.update(len(block))
            except (OSError, TimeoutError) as e:
                raise OSError(f"{url}: the download stopped after {f.tell()} bytes ({e}); run the same command "
                              "again to continue it") from e
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if total is not None and got != total:
        raise OSError(f"{url}: got {got} of {total} bytes; run the same command again to continue the download")
    os.replace(part, dest)
    return dest


def fetch_weights(name: str, out_dir: str | Path, url: str | None = None, sha256: str | None = None,
                  cache: str | Path | None = None, progress: bool = True, say: Any = print) -> dict[str, Any]:
    """Download the released checkpoint ``name`` (a preset of :data:`RELEASED`, or any name with ``url``),
    verify its SHA-256 (``sha256``, else the release's when published), convert it into ``out_dir``
    (:func:`mmv_torch.weights.convert.convert_checkpoint`) with its origin in ``config.json`` and a model
    card. Returns the origin record. Raises ``ValueError`` on a checksum mismatch (the download is
    removed), ``OSError`` on network errors (a partial download is kept and continued next time)."""
    from mmv_torch.weights.card import model_card
    from mmv_torch.weights.convert import convert_checkpoint
    from mmv_torch.weights.folder import check_replaceable

    release = RELEASED.get(name)
    if release is None and url is None:
        raise ValueError(f"no released weights named {name!r}: released are {sorted(RELEASED)} (or give --url URL)")
    check_replaceable(out_dir)  # before a long download
    want = _check_sha(sha256) or (release.sha256 if release and url is None else None)
    src = url or release.url  # type: ignore[union-attr]
    file = Path(src.split("?")[0]).name or f"{name}.pkl"
    dest = Path(cache or cache_dir()) / file
    if dest.is_file():
        say(f"using the downloaded {dest}")
    else:
        say(f"downloading {src} to {dest}")
        download(src, dest, progress=progress)
    digest = sha256_file(dest)
    if want is not None and digest != want:
        dest.unlink()
        raise ValueError(f"{src}: SHA-256 {digest} is not the expected {want}; the download was removed and "
                         "nothing was converted")
    licence = release.licence if release else "unknown (see where the file came from)"
    origin = {"name": name, "url": src, "file": file, "sha256": digest, "sha256_verified": want is not None,
              "licence": licence, "licence_url": release.licence_url if release else None,
              "official_page": OFFICIAL_PAGE if release else None, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime()),
              "converted_by": "mmv-torch fetch"}
    convert_checkpoint(dest, out_dir, origin=origin,
                       card=lambda cfg: model_card(cfg, name, licence, origin, has_vocab=False))
    return origin
