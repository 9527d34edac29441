"""Image probes of the deflated networks (:mod:`mmv_torch.models.deflate`): :func:`probe_image_encoder`
and :func:`run_image_eval` (what ``mmv-torch eval image`` runs), and the image benchmarks PASCAL VOC 2007
classification and ImageNet linear.

**voc2007** (:func:`voc2007_probe`): one binary linear classifier per class (``StandardScaler`` fit on
the trainval features, then ``LinearSVC``, or ``LogisticRegression`` with ``classifier='logistic'``),
its C chosen per class from a grid by stratified k-fold cross-validation on trainval (area AP of the
held-out folds), refit on all of trainval; test AP per class by the VOC devkit rule (``VOCevalcls.m``):
images marked difficult for a class (``target == 0``) are neither positives nor negatives of that
class, both for the AP and, by default, for training. Two APs are reported per class and averaged
over the classes with a test positive:

- ``AP_11pt``: the VOC2007 11-point interpolated AP, ``mean_t max{precision at recall >= t}`` over
  the devkit's thresholds ``0:0.1:1`` (MATLAB colon values, :data:`ELEVEN_POINTS`), images ranked by
  decreasing score with ties in input order as the devkit's sort;
- ``AP``: the area under the precision-recall curve (:func:`mmv_torch.eval.metrics.average_precision`,
  scikit-learn's ``average_precision_score``), the VOC2010+ style.

**imagenet-linear** (:func:`imagenet_linear_probe`): multinomial logistic regression (mini-batch Adam,
so it scales to 1.28M training images) on one centre crop per image, the weight decay chosen from a
grid on a held-out fifth of the training images, top-1 / top-5 on the validation set.

The paper (arXiv 2006.16228) does not give these probes' classifier, C grid or image size in any text
we could read; the values here are our choices and the settings say so (``source``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch.eval.linear_probe import logistic_probe
from mmv_torch.eval.metrics import average_precision
from mmv_torch.models.deflate import image_encoder

IMAGE_PROTOCOLS = ("custom", "voc2007", "imagenet-linear")
"""``eval image --protocol``: ``custom`` follows ``--classifier`` / ``--multilabel`` as given."""

VOC_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""C values tried per class (our choice)."""

ELEVEN_POINTS = np.array([k * 0.1 if k <= 5 else 1.0 - (10 - k) * 0.1 for k in range(11)])
"""The recall thresholds of the devkit's ``0:0.1:1``: MATLAB's colon counts the first half up from 0 and
the second half down from 1 (``3*0.1 = 0.30000000000000004``, ``1-0.3 = 0.7``)."""

OUR_CHOICE = "our choice (the paper's text gives no values)"


def _ranked(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """Positives (bool) in decreasing score order, difficult images (target 0) dropped; the positive count."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"VOC AP: scores {scores.shape} and targets {targets.shape} differ")
    if not np.isin(targets, (-1, 0, 1)).all():
        raise ValueError("VOC AP targets are 1 (positive), -1 (negative) or 0 (difficult, ignored)")
    keep = targets != 0
    s, pos = scores[keep], targets[keep] > 0
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise ValueError("VOC AP is undefined without a (non-difficult) positive")
    return pos[np.argsort(-s, kind="stable")], n_pos


def voc07_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP of one class; ``targets`` in {1, -1, 0 = difficult (ignored)}."""
    pos, n_pos = _ranked(scores, targets)
    tp = np.cumsum(pos)
    recall = tp / n_pos
    precision = tp / np.arange(1, pos.size + 1)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in ELEVEN_POINTS]))


def voc_area_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area AP (scikit-learn's definition) of one class over its non-difficult images."""
    _ranked(scores, targets)  # checks
    keep = np.asarray(targets).ravel() != 0
    return average_precision(np.asarray(scores).ravel()[keep], (np.asarray(targets).ravel()[keep] > 0))


def voc_map(scores: np.ndarray, targets: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Both APs per class and their means over the classes with a test positive: ``scores`` (N, C),
    ``targets`` (N, C) in {1, -1, 0}. Returns ``{"mAP", "mAP_11pt", "classes", "AP", "AP_11pt"}``."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape or scores.shape[1] != len(classes):
        raise ValueError(f"voc_map needs scores and targets (N, {len(classes)}); got {scores.shape}, {targets.shape}")
    ap, ap11 = {}, {}
    for c, name in enumerate(classes):
        if (targets[:, c] > 0).any() and np.isfinite(scores[:, c]).all():
            ap[name], ap11[name] = voc_area_ap(scores[:, c], targets[:, c]), voc07_ap(scores[:, c], targets[:, c])
    if not ap:
        raise ValueError("VOC mAP: no class has a test positive with scores")
    return {"mAP": float(np.mean(list(ap.values()))), "mAP_11pt": float(np.mean(list(ap11.values()))),
            "classes": len(ap), "AP": ap, "AP_11pt": ap11}


def _classifier(kind: str, c: float, max_iter: int, seed: int) -> Any:
    if kind == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=c, dual=True, max_iter=max_iter, random_state=seed)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=max_iter)
    raise ValueError(f"the voc2007 protocol's classifier is 'svm' or 'logistic', got {kind!r}")


def _fit_scores(kind: str, c: float, x: np.ndarray, y: np.ndarray, z: np.ndarray, max_iter: int, seed: int
                ) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning

    clf = _classifier(kind, c, max_iter, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf.decision_function(z)


def _choose_c(kind: str, cs: tuple[float, ...], x: np.ndarray, y: np.ndarray, folds: int, max_iter: int,
              seed: int) -> tuple[float, dict[str, float] | str]:
    """The C of the best mean held-out area AP (the smaller C on ties), and the per-C scores."""
    if len(cs) == 1:
        return float(cs[0]), "one C given"
    k = min(folds, int(y.sum()), int((~y).sum()))
    if k < 2:
        return float(sorted(cs)[len(cs) // 2]), f"too few positives or negatives for {folds}-fold selection: middle C"
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    cv = {}
    for c in sorted(cs):
        aps = [average_precision(_fit_scores(kind, c, x[tr], y[tr], x[va], max_iter, seed), y[va]) for tr, va in splits]
        cv[str(c)] = float(np.mean(aps))
    best = max(sorted(cs), key=lambda c: cv[str(c)])  # max keeps the first (smallest) of equal scores
    return float(best), cv


def voc2007_probe(train_x: np.ndarray, train_t: np.ndarray, test_x: np.ndarray, test_t: np.ndarray,
                  classes: list[str] | tuple[str, ...], classifier: str = "svm", cs: tuple[float, ...] | None = None,
                  folds: int = 3, max_iter: int = 2000, difficult_in_training: str = "excluded", seed: int = 0
                  ) -> dict[str, Any]:
    """The voc2007 protocol (module doc) on features: ``train_x`` (N, D), ``test_x`` (M, D), targets
    (N, C) / (M, C) in {1, -1, 0 = difficult}. ``difficult_in_training``: ``excluded`` (a class's
    difficult images are left out of its training) or ``negative``. A class without a training positive
    or negative, or without a test positive, is left out of the mAP and named in ``skipped``."""
    from sklearn.preprocessing import StandardScaler

    if difficult_in_training not in ("excluded", "negative"):
        raise ValueError(f"difficult_in_training is 'excluded' or 'negative', got {difficult_in_training!r}")
    train_x, test_x = np.asarray(train_x, dtype=np.float64), np.asarray(test_x, dtype=np.float64)
    train_t, test_t = np.asarray(train_t), np.asarray(test_t)
    for name, x, t in (("train", train_x, train_t), ("test", test_x, test_t)):
        if x.ndim != 2 or t.shape != (x.shape[0], len(classes)):
            raise ValueError(f"voc2007 {name}: features (N, D) and targets (N, {len(classes)}) expected; got "
                             f"{x.shape}, {t.shape}")
    _classifier(classifier, 1.0, 1, seed)  # checks the name before any fit
    grid = tuple(cs) if cs else VOC_C_GRID
    scaler = StandardScaler().fit(train_x)
    xs, zs = scaler.transform(train_x), scaler.transform(test_x)
    scores = np.full(test_t.shape, np.nan)
    chosen: dict[str, float] = {}
    cv: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for c, name in enumerate(classes):
        rows = train_t[:, c] != 0 if difficult_in_training == "excluded" else np.ones(len(train_t), bool)
        y = train_t[rows, c] > 0
        if y.all() or not y.any():
            skipped[name] = "no training positive" if not y.any() else "no training negative"
            continue
        if not (test_t[:, c] > 0).any():
            skipped[name] = "no test positive"
            continue
        chosen[name], cv[name] = _choose_c(classifier, grid, xs[rows], y, folds, max_iter, seed)
        scores[:, c] = _fit_scores(classifier, chosen[name], xs[rows], y, zs, max_iter, seed)
    metrics = voc_map(scores, test_t, classes)
    settings = {"protocol": "voc2007", "source": OUR_CHOICE,
                "classifier": "StandardScaler+" + ("LinearSVC" if classifier == "svm" else "LogisticRegression")
                + " per class", "C_grid": [float(c) for c in grid], "C_selection":
                f"stratified {folds}-fold cross-validation on train, mean held-out area AP",
                "C": chosen, "cv_AP_per_C": cv, "max_iter": max_iter, "difficult_in_training": difficult_in_training,
                "difficult_in_test": "excluded from the class's AP (VOC devkit)",
                "AP_11pt": "VOC2007 11-point interpolated (VOCevalcls.m)", "AP": "area under the PR curve",
                "skipped": skipped, "train_images": int(train_x.shape[0]), "test_images": int(test_x.shape[0])}
    return {"metrics": metrics, "settings": settings, "test_scores": scores}


def imagenet_linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          weight_decays: tuple[float, ...] | None = None, epochs: int = 30, lr: float = 1e-3,
                          batch_size: int = 4096, seed: int = 0) -> dict[str, Any]:
    """The imagenet-linear protocol (module doc): :func:`~mmv_torch.eval.linear_probe.logistic_probe`
    with mini-batch Adam; top-1 / top-5 on the test (validation) images."""
    kwargs = {"weight_decays": tuple(weight_decays)} if weight_decays else {}
    res = logistic_probe(train_x, train_y, test_x, test_y, optimizer="adam", max_iter=epochs, lr=lr,
                         batch_size=batch_size, seed=seed, **kwargs)
    res["settings"].update(protocol="imagenet-linear", source=OUR_CHOICE, epochs=epochs, lr=lr, batch_size=batch_size,
                           train_augmentation="none (one centre crop per image)")
    for k in ("test_videos", "test_windows", "score_averaging", "max_iter"):
        res["settings"].pop(k, None)
    return res


def probe_image_encoder(encoder: nn.Module, train_loader: Iterable[Mapping[str, Any]], train_labels: Any,
                test_loader: Iterable[Mapping[str, Any]], test_labels: Any, multilabel: bool = False,
                classifier: str = "svm", device: torch.device | str | None = None,
                probe: Callable[..., dict[str, Any]] | None = None, **probe_kwargs: Any) -> dict[str, Any]:
    """Linear probe on image features of ``encoder`` (any strategy of :func:`image_encoder`).

    Loaders yield ``{"image": (B, 3, H, W) or (B, V, 3, H, W), "index": (B,)}``; labels are indexed
    by dataset row: integers (N,) for ImageNet-style top-1/top-5 (``classifier`` 'svm' or 'logistic'),
    multi-hot (N, C) for PASCAL-style mAP (``multilabel=True``: a linear one-vs-rest sigmoid probe).
    ``probe(train_x, train_labels, test_x, test_labels)``, when given, replaces these probes (a
    benchmark protocol of this module).
    """
    import numpy as np

    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.linear_probe import linear_probe, multilabel_probe

    xtr, itr = extract_features(encoder, train_loader, "image", device=device)
    xte, ite = extract_features(encoder, test_loader, "image", device=device)
    ytr, yte = np.asarray(train_labels)[itr], np.asarray(test_labels)[ite]
    if probe is not None:
        res = probe(xtr, ytr, xte, yte, **probe_kwargs)
    elif multilabel:
        kwargs = {"hidden": (), **probe_kwargs}
        res = multilabel_probe(xtr, ytr, xte, yte, **kwargs)
    else:
        res = linear_probe(xtr, ytr, xte, yte, classifier, **probe_kwargs)
    res["settings"]["feature_dim"] = int(xtr.shape[1])
    return res


def run_image_eval(video: nn.Module, strategies: Iterable[str], num_frames: int,
                   train_loader: Iterable[Mapping[str, Any]], train_labels: Any,
                   test_loader: Iterable[Mapping[str, Any]], test_labels: Any, multilabel: bool = False,
                   classifier: str = "svm", bn_images: Iterable[Any] | None = None, bn_steps: int = 200,
                   bn_lr: float = 1e-3, device: torch.device | str = "cpu", tsm_naive: str = "folded",
                   probe: Callable[..., dict[str, Any]] | None = None, **probe_kwargs: Any) -> dict[str, Any]:
    """What ``mmv-torch eval image`` calls: the image probe for each strategy on one video backbone
    (``probe``: see :func:`probe_image_encoder`).

    Returns ``{"task": "image", "metrics": {strategy: metrics}, "settings": {strategy: settings}}``.
    """
    metrics: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for s in strategies:
        enc, s_settings = image_encoder(video, s, num_frames, bn_images, bn_steps, bn_lr, device, tsm_naive)
        res = probe_image_encoder(enc, train_loader, train_labels, test_loader, test_labels, multilabel, classifier,
                          device, probe, **probe_kwargs)
        metrics[s] = res["metrics"]
        settings[s] = {**s_settings, **res["settings"]}
    return {"task": "image (multi-label mAP)" if multilabel else "image (top-1/top-5)", "metrics": metrics,
            "settings": settings}
