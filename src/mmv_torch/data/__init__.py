"""The input pipeline: media decoding and audio features (:mod:`.media`), tokenizers and word vectors
(:mod:`.text`), manifests, data sets and labelled sources, narrations, shards, the synthetic generator and
the probe sampling protocols; ``data prepare`` (:mod:`.prepare`) and the offline tools (:mod:`.tools`).

The names below are imported on first use, so ``import mmv_torch.data`` stays light (no PyAV)."""

from __future__ import annotations

from mmv_torch.extras import lazy_exports

_EXPORTS = {
    "VideoEntry": "manifests", "LabelledEntry": "manifests", "read_pretrain_manifest": "manifests",
    "read_labelled_manifest": "manifests", "read_class_folders": "manifests", "class_names": "manifests",
    "PretrainDataset": "datasets", "LabelledDataset": "datasets", "SkipRateExceeded": "datasets",
    "LabelledSource": "sources", "open_source": "sources", "manifest_source": "sources", "folder_source": "sources",
    "esc50_source": "sources", "official_split_source": "sources", "write_dataset": "synthetic",
}
"""Public name -> the module of ``mmv_torch.data`` that defines it."""

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
