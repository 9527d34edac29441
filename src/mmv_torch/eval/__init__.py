"""Evaluation: window-averaged features, linear / MLP probes, retrieval, fine-tuning, metrics and reports;
the pipelines that run them on a labelled source (:mod:`.pipelines`), the paper's named benchmarks
(:mod:`.benchmarks`, :mod:`.paper_protocols`) and the image probes of the deflated network (:mod:`.image`).

The names below are imported on first use, so ``import mmv_torch.eval`` stays light (no scikit-learn)."""

from __future__ import annotations

from mmv_torch.extras import lazy_exports

_EXPORTS = {
    "LoaderOptions": "pipelines", "embed": "pipelines", "eval_linear": "pipelines", "eval_retrieval": "pipelines",
    "eval_finetune": "pipelines", "eval_image": "pipelines", "linear_benchmark": "benchmarks",
    "retrieval_benchmark": "benchmarks", "linear_probe": "linear_probe", "retrieval_metrics": "retrieval",
    "text_video_retrieval": "retrieval", "topk_accuracy": "metrics", "mean_average_precision": "metrics",
    "extract_features": "features", "probe_image_encoder": "image",
    "eval_zeroshot": "zeroshot", "zero_shot_classifier": "zeroshot", "TEMPLATES": "zeroshot",
}
"""Public name -> the module of ``mmv_torch.eval`` that defines it."""

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
