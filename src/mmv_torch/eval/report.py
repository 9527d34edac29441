"""Evaluation reports: every evaluation writes a JSON of its metrics and settings and a markdown table.

A result is a mapping ``{"task": str, "metrics": {...}, "settings": {...}, ...}``; nested metric
dicts (e.g. ``{"t2v": {"R@1": ...}}``) are flattened to dotted names in the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.fileio import atomic_write_text


def _plain(x: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, arrays dropped when large."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def markdown_table(result: Mapping[str, Any]) -> str:
    """A markdown report: a metrics table and a settings table."""
    title = result.get("task", "evaluation")
    lines = [f"### {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in flatten(result.get("metrics", {})).items()]
    settings = flatten(result.get("settings", {}))
    if settings:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def write_report(result: Mapping[str, Any], json_out: str | Path | None = None,
                 md_out: str | Path | None = None) -> dict[str, Any]:
    """Write ``result`` (arrays under keys ending in ``_scores`` are left out) as JSON and markdown.

    ``md_out`` defaults to ``json_out`` with a ``.md`` suffix. Files are written atomically. Returns
    the JSON-safe result.
    """
    clean = _plain({k: v for k, v in result.items() if not str(k).endswith("_scores")})
    if json_out is not None:
        jp = Path(json_out)
        jp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(jp, json.dumps(clean, indent=2))
        if md_out is None:
            md_out = jp.with_suffix(".md")
    if md_out is not None:
        mp = Path(md_out)
        mp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mp, markdown_table(clean))
    return clean
