"""The media file suffixes the package knows, and the modality each one holds.

One table for every place that picks media files by name: ``data check`` scanning a folder, class
folders (:func:`mmv_torch.data.manifests.read_class_folders`) and folder sources
(:mod:`mmv_torch.data.sources`).
"""

from __future__ import annotations

from pathlib import Path

_VIDEO = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp", ".ts")
_AUDIO = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")
_IMAGE = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

MEDIA_SUFFIXES: dict[str, str] = {**dict.fromkeys(_VIDEO, "video"), **dict.fromkeys(_AUDIO, "audio"),
                                  **dict.fromkeys(_IMAGE, "image")}
"""Lower-case file suffix (with its dot) -> ``'video'``, ``'audio'`` or ``'image'``."""


def modality_of(path: str | Path) -> str | None:
    """``'video'``, ``'audio'`` or ``'image'`` from a file's suffix (any case); None: not a media file."""
    return MEDIA_SUFFIXES.get(Path(path).suffix.lower())
