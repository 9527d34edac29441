"""Classification metrics: top-k accuracy, average precision, mean average precision and ROC AUC / d-prime.

Pure numpy. ``average_precision`` follows scikit-learn's definition (step-wise area under the
precision-recall curve, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, tied scores
forming one threshold), so the two agree to floating-point precision (checked in the tests).
"""

from __future__ import annotations

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of ``scores`` (N, C) against integer ``labels`` (N,), as fractions in [0, 1].

    A sample counts as correct at k when its label is among the k highest scores; equal scores are
    ordered by class index (stable sort). ``k`` larger than C is clipped to C. Returns
    ``{"top1": ..., "top5": ...}`` for ``ks=(1, 5)``.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"topk_accuracy needs scores (N, C) and labels (N,); got {scores.shape}, {labels.shape}")
    if scores.shape[0] == 0:
        raise ValueError("topk_accuracy got no samples")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}); got range [{labels.min()}, {labels.max()}]")
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (order[:, :kk] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = float(hit.mean())
    return out


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class: ``scores`` (N,) real, ``targets`` (N,) in {0, 1}.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds in decreasing order (the
    scikit-learn ``average_precision_score`` definition). Raises ``ValueError`` when there is no
    positive, where AP is undefined.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"average_precision: scores {scores.shape} and targets {targets.shape} differ")
    pos = targets > 0
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise ValueError("average_precision is undefined without positives")
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], pos[order]
    tp = np.cumsum(p)
    # Keep the last index of every run of equal scores: one precision/recall point per threshold.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp_at, n_at = tp[last], last + 1
    precision = tp_at / n_at
    recall = tp_at / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> dict[str, float | int]:
    """Mean over classes of :func:`average_precision`: ``scores`` (N, C), multi-hot ``targets`` (N, C).

    Classes without a positive in ``targets`` are skipped (AP is undefined for them); the count of
    classes used is returned as ``classes``. Returns ``{"mAP": ..., "classes": ...}``.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"mean_average_precision needs scores and targets (N, C); got {scores.shape}, "
                         f"{targets.shape}")
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1]) if targets[:, c].any()]
    if not aps:
        raise ValueError("mean_average_precision: no class has a positive")
    return {"mAP": float(np.mean(aps)), "classes": len(aps)}


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of one class: the probability that a positive scores above a negative, ties
    counting one half (the Mann-Whitney statistic, equal to scikit-learn's ``roc_auc_score``). Raises
    ``ValueError`` without both a positive and a negative."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(targets).ravel() > 0
    if scores.shape != pos.shape:
        raise ValueError(f"roc_auc: scores {scores.shape} and targets {pos.shape} differ")
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc is undefined without both positives and negatives")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):  # tied scores share their average rank (1-based)
        ranks[a:b] = (a + b + 1) / 2.0
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def d_prime(auc: float) -> float | None:
    """AudioSet's d-prime of an AUC: ``sqrt(2) * Phi^-1(auc)`` (None for an AUC of 0 or 1, where it is infinite)."""
    from statistics import NormalDist

    if not 0.0 < auc < 1.0:
        return None
    return float(np.sqrt(2.0) * NormalDist().inv_cdf(auc))


def mean_auc(scores: np.ndarray, targets: np.ndarray) -> dict[str, float | int | None]:
    """Mean over classes of :func:`roc_auc` (classes with both positives and negatives) and the d-prime of that
    mean: ``{"AUC", "d_prime", "classes"}``; ``scores`` (N, C), multi-hot ``targets`` (N, C)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets) > 0
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"mean_auc needs scores and targets (N, C); got {scores.shape}, {targets.shape}")
    keep = [c for c in range(scores.shape[1]) if targets[:, c].any() and not targets[:, c].all()]
    if not keep:
        raise ValueError("mean_auc: no class has both a positive and a negative")
    auc = float(np.mean([roc_auc(scores[:, c], targets[:, c]) for c in keep]))
    return {"AUC": auc, "d_prime": d_prime(auc), "classes": len(keep)}
