"""``mmv-torch data prepare``: manifests of the paper's data sets from their official annotation files.

One module per data set reads its files as distributed (``docs`` of each module: layout and quirks);
:mod:`.core` finds the media and writes the manifest and the report. :data:`DATASETS` names them all;
:func:`run_prepare` is the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmv_torch.data.prepare import (
    audioset,
    howto100m,
    imagenet,
    kinetics,
    msrvtt,
    official,
    vggsound,
    voc2007,
    youcook2,
)
from mmv_torch.data.prepare.core import DatasetSpec, MediaIndex, Options, PrepareReport, Row, prepare

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    howto100m.SPEC, audioset.SPEC, msrvtt.SPEC, youcook2.SPEC, kinetics.SPEC, vggsound.SPEC, official.UCF101,
    official.HMDB51, official.ESC50, voc2007.SPEC, imagenet.SPEC)}
"""Data set name -> its reader and media names."""

__all__ = ["DATASETS", "DatasetSpec", "MediaIndex", "Options", "PrepareReport", "Row", "prepare", "run_prepare"]


def run_prepare(dataset: str, annotations: str, media_root: str, out: str, split: str | None = None,
                pattern: str | None = None, labels: str | None = None, json_out: str | None = None
                ) -> dict[str, Any]:
    """``mmv-torch data prepare DATASET ...``: write the manifest and the report, print a summary, return
    the report (see :func:`.core.prepare`)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; one of {sorted(DATASETS)}")
    options = Options(split=split, labels=Path(labels) if labels else None, media_root=Path(media_root))
    report = prepare(DATASETS[dataset], annotations, media_root, out, options, pattern, json_out)
    nar = report["narrations"]
    print(f"{report['written']} of {report['rows']} rows written to {out}; {report['num_missing']} without media, "
          f"{report['num_malformed']} malformed, {report['num_ambiguous']} names matching several files"
          + (f"; narrations: {nar['dropped']} dropped, {nar['clamped']} clamped" if nar["dropped"] or nar["clamped"]
             else "") + (f" (details: {json_out})" if json_out else ""))
    return report
