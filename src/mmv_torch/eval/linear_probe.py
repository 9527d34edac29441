"""Linear (and small-MLP) probes on frozen features.

- :func:`svm_probe`: the official MMV UCF101 protocol (``eval_ucf101.py``): ``StandardScaler`` fit on
  the training features (collected over several augmented epochs), ``LinearSVC(C=0.001, dual=True,
  max_iter=1000)`` one-vs-rest, and test scores = ``decision_function`` averaged over the windows of
  each video (10 linearly spaced windows officially). Top-1/top-5 on train clips and test videos.
- :func:`logistic_probe`: multinomial logistic regression in torch (full-batch L-BFGS or mini-batch
  Adam), for sets too large for liblinear; the weight-decay grid is chosen on a held-out part of
  the training set.
- :func:`cross_validate`: k-fold cross-validation with given fold ids (ESC-50's 5 folds).
- :func:`multilabel_probe`: AudioSet/PASCAL-style multi-label probe, a linear layer or small MLP with
  a sigmoid cross-entropy, scored by mAP.

Every probe returns ``{"metrics": {...}, "settings": {...}}``; the settings state the classifier,
the regularisation grid and what was selected, and the number of test windows, so reports are
comparable. Features are numpy arrays: train ``(N, D)``, test ``(M, D)`` or ``(M, V, D)`` with V
windows/crops per video. scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmv_torch.eval.metrics import mean_average_precision, topk_accuracy

OFFICIAL_SVM_C = 0.001
"""LinearSVC regularisation of the official UCF101 evaluation."""


def _check_xy(x: np.ndarray, y: np.ndarray, name: str, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} features must be (N, D) or (N, V, D); got shape {x.shape}")
    want = 2 if multilabel else 1
    if y.ndim != want or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} labels must be {'(N, C)' if multilabel else '(N,)'} with N={x.shape[0]}; "
                         f"got shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or inf")
    return x, y


def _windows(x: np.ndarray) -> np.ndarray:
    """(M, D) -> (M, 1, D); (M, V, D) unchanged."""
    return x[:, None] if x.ndim == 2 else x


def _group_split(n: int, groups: np.ndarray | None, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, val) masks over n rows; whole groups (e.g. all augmented clips of a video) go to
    one side so validation never sees a training video."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must be (N,) with N={n}; got shape {g.shape}")
    uniq = np.unique(g)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(val_fraction * uniq.size)))
    if n_val >= uniq.size:
        raise ValueError(f"cannot hold out {val_fraction:.0%} of {uniq.size} groups for validation")
    val_groups = rng.choice(uniq, size=n_val, replace=False)
    val = np.isin(g, val_groups)
    return ~val, val


# ---------------------------------------------------------------------------------------------
# Official protocol: StandardScaler + LinearSVC


def _fit_svm(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, dual: bool, tol: float,
             standardize: bool, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Fit scaler + LinearSVC; return ``decision(X (M, D)) -> (M, C)`` over ALL label values 0..C-1."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scaler = StandardScaler().fit(x) if standardize else None
    xs = scaler.transform(x) if scaler is not None else x
    clf = LinearSVC(C=c, dual=dual, max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the official run hits max_iter as well
        clf.fit(xs, y)
    classes = clf.classes_

    def decision(z: np.ndarray) -> np.ndarray:
        zs = scaler.transform(z) if scaler is not None else z
        d = clf.decision_function(zs)
        if d.ndim == 1:  # binary: sklearn returns the positive-class margin only
            d = np.stack([-d, d], axis=1)
        out = np.full((z.shape[0], int(y.max()) + 1), -np.inf, dtype=np.float64)
        out[:, classes] = d
        return out

    return decision


def _window_scores(decision: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Scores (M, C) averaged over the V windows of ``x`` (M, V, D)."""
    m, v, d = x.shape
    return decision(x.reshape(m * v, d)).reshape(m, v, -1).mean(axis=1)


def svm_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              cs: tuple[float, ...] = (OFFICIAL_SVM_C,), max_iter: int = 1000, dual: bool = True,
              tol: float = 1e-4, standardize: bool = True, train_groups: np.ndarray | None = None,
              val_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """The official linear-SVM protocol (module doc).

    ``train_x`` (N, D) with integer ``train_y`` (N,) (N = videos × augmented epochs), ``test_x``
    (M, V, D) or (M, D) with ``test_y`` (M,). With more than one value in ``cs`` the C is chosen by
    top-1 on a held-out ``val_fraction`` of the training groups (``train_groups`` (N,) = video ids, so
    the augmented clips of one video stay together), then refit on the whole training set. ``seed``
    fixes liblinear's coordinate order (``random_state``) and the validation split.
    """
    train_x, train_y = _check_xy(train_x, train_y, "train")
    test_x, test_y = _check_xy(test_x, test_y, "test")
    if train_x.ndim != 2:
        raise ValueError(f"train features must be (N, D) (one row per augmented clip); got {train_x.shape}")
    test_w = _windows(test_x)
    grid: dict[str, float] = {}
    if len(cs) == 0:
        raise ValueError("svm_probe: cs must hold at least one C")
    if len(cs) > 1:
        tr, va = _group_split(len(train_y), train_groups, val_fraction, seed)
        for c in cs:
            dec = _fit_svm(train_x[tr], train_y[tr], c, max_iter, dual, tol, standardize, seed)
            grid[str(c)] = topk_accuracy(dec(train_x[va]), train_y[va], (1,))["top1"]
        best_c = float(max(cs, key=lambda c: grid[str(c)]))
    else:
        best_c = float(cs[0])
    decision = _fit_svm(train_x, train_y, best_c, max_iter, dual, tol, standardize, seed)
    train_scores = decision(train_x)
    test_scores = _window_scores(decision, test_w)
    n_classes = max(int(train_y.max()), int(test_y.max())) + 1
    test_scores = _pad_classes(test_scores, n_classes)
    train_acc = topk_accuracy(_pad_classes(train_scores, n_classes), train_y)
    test_acc = topk_accuracy(test_scores, test_y)
    return {
        "metrics": {"train_top1": train_acc["top1"], "train_top5": train_acc["top5"],
                    "test_top1": test_acc["top1"], "test_top5": test_acc["top5"]},
        "settings": {"classifier": "StandardScaler+LinearSVC" if standardize else "LinearSVC",
                     "C_grid": [float(c) for c in cs], "C": best_c, "val_top1_per_C": grid,
                     "dual": dual, "max_iter": max_iter, "tol": tol, "train_rows": int(train_x.shape[0]),
                     "test_videos": int(test_w.shape[0]), "test_windows": int(test_w.shape[1]),
                     "score_averaging": "decision_function mean over windows"},
        "test_scores": test_scores,
    }


def _pad_classes(scores: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores (M, C') -> (M, n_classes): classes never seen in training score -inf."""
    if scores.shape[1] >= n_classes:
        return scores
    pad = np.full((scores.shape[0], n_classes - scores.shape[1]), -np.inf)
    return np.concatenate([scores, pad], axis=1)


# ---------------------------------------------------------------------------------------------
# Torch logistic regression


class _Standardizer:
    """Feature-wise standardisation fit on training rows (zero-variance features keep scale 1)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _train_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, optimizer: str,
                  max_iter: int, lr: float, batch_size: int, seed: int) -> nn.Linear:
    """Multinomial logistic regression: minimise mean CE + weight_decay/2 * ||W||^2 (bias unpenalised)."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_classes).to(x.device)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen).to(x.device) * 0.01)
        layer.bias.zero_()

    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(layer(xb), yb) + 0.5 * weight_decay * layer.weight.pow(2).sum()

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective(x, y)
            loss.backward()
            return loss

        opt.step(closure)
    elif optimizer == "adam":
        opt_a = torch.optim.Adam(layer.parameters(), lr=lr)
        for _ in range(max_iter):
            perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
            for i in range(0, x.shape[0], batch_size):
                idx = perm[i:i + batch_size]
                opt_a.zero_grad()
                objective(x[idx], y[idx]).backward()
                opt_a.step()
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    return layer


@torch.no_grad()
def _linear_scores(layer: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Logits averaged over windows: x (M, V, D) -> (M, C)."""
    m, v, d = x.shape
    return layer(x.reshape(m * v, d)).reshape(m, v, -1).mean(dim=1).double().cpu().numpy()


def logistic_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1), optimizer: str = "lbfgs",
                   max_iter: int = 200, lr: float = 1e-3, batch_size: int = 4096, standardize: bool = True,
                   train_groups: np.ndarray | None = None, val_fraction: float = 0.2, seed: int = 0,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Torch multinomial logistic-regression probe.

    Shapes as :func:`svm_probe`. The weight decay (L2 on the weights, ``wd/2 ||W||^2`` added to the
    mean cross-entropy) is chosen from ``weight_decays`` by top-1 on a held-out ``val_fraction`` of
    the training groups, then the probe is refit on all training rows. ``optimizer`` is 'lbfgs'
    (full batch, ``max_iter`` iterations) or 'adam' (``max_iter`` epochs of ``batch_size``). Test
    logits are averaged over windows.
    """
    train_x, train_y = _check_xy(train_x, train_y, "train")
    test_x, test_y = _check_xy(test_x, test_y, "test")
    if train_x.ndim != 2:
        raise ValueError(f"train features must be (N, D); got {train_x.shape}")
    if len(weight_decays) == 0:
        raise ValueError("logistic_probe: weight_decays must hold at least one value")
    dev = torch.device(device)
    n_classes = max(int(train_y.max()), int(test_y.max())) + 1
    xt = torch.as_tensor(train_x, device=dev)
    yt = torch.as_tensor(train_y, dtype=torch.int64, device=dev)
    grid: dict[str, float] = {}
    if len(weight_decays) > 1:
        tr, va = _group_split(len(train_y), train_groups, val_fraction, seed)
        tr_t, va_t = torch.as_tensor(tr, device=dev), torch.as_tensor(va, device=dev)
        norm = _Standardizer(xt[tr_t]) if standardize else (lambda z: z)
        for wd in weight_decays:
            layer = _train_linear(norm(xt[tr_t]), yt[tr_t], n_classes, wd, optimizer, max_iter, lr, batch_size,
                                  seed)
            scores = _linear_scores(layer, norm(xt[va_t])[:, None])
            grid[str(wd)] = topk_accuracy(scores, train_y[va], (1,))["top1"]
        best_wd = float(max(weight_decays, key=lambda w: grid[str(w)]))
    else:
        best_wd = float(weight_decays[0])
    norm = _Standardizer(xt) if standardize else (lambda z: z)
    layer = _train_linear(norm(xt), yt, n_classes, best_wd, optimizer, max_iter, lr, batch_size, seed)
    test_w = torch.as_tensor(_windows(test_x), device=dev)
    train_scores = _linear_scores(layer, norm(xt)[:, None])
    test_scores = _linear_scores(layer, norm(test_w))
    train_acc, test_acc = topk_accuracy(train_scores, train_y), topk_accuracy(test_scores, test_y)
    return {
        "metrics": {"train_top1": train_acc["top1"], "train_top5": train_acc["top5"],
                    "test_top1": test_acc["top1"], "test_top5": test_acc["top5"]},
        "settings": {"classifier": f"logistic regression ({optimizer})", "standardize": standardize,
                     "weight_decay_grid": [float(w) for w in weight_decays], "weight_decay": best_wd,
                     "val_top1_per_weight_decay": grid, "max_iter": max_iter,
                     "train_rows": int(train_x.shape[0]), "test_videos": int(test_w.shape[0]),
                     "test_windows": int(test_w.shape[1]), "score_averaging": "logits mean over windows"},
        "test_scores": test_scores,
    }


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 classifier: str = "svm", **kwargs: Any) -> dict[str, Any]:
    """Dispatch to :func:`svm_probe` (``classifier='svm'``) or :func:`logistic_probe` ('logistic')."""
    if classifier == "svm":
        return svm_probe(train_x, train_y, test_x, test_y, **kwargs)
    if classifier == "logistic":
        return logistic_probe(train_x, train_y, test_x, test_y, **kwargs)
    raise ValueError(f"classifier must be 'svm' or 'logistic', got {classifier!r}")


def cross_validate(x: np.ndarray, y: np.ndarray, folds: np.ndarray, classifier: str = "svm",
                   **kwargs: Any) -> dict[str, Any]:
    """k-fold cross-validation (ESC-50: the dataset's 5 folds).

    ``x`` (N, D) or (N, V, D), ``y`` (N,), ``folds`` (N,) fold id per sample. For each fold the probe
    is trained on the other folds (windows of training samples become separate training rows) and
    tested on it. Returns per-fold metrics plus their mean and standard deviation.
    """
    x, y = _check_xy(x, y, "cross-validation")
    folds = np.asarray(folds)
    if folds.shape != y.shape:
        raise ValueError(f"folds must be (N,) with N={y.shape[0]}; got {folds.shape}")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError(f"cross-validation needs at least 2 folds; got {fold_ids.tolist()}")
    per_fold: dict[str, dict[str, float]] = {}
    settings: dict[str, Any] = {}
    xw = _windows(x)
    for f in fold_ids:
        te = folds == f
        tr = ~te
        n_tr, v, d = xw[tr].shape
        groups = np.repeat(np.arange(n_tr), v)
        res = linear_probe(xw[tr].reshape(n_tr * v, d), np.repeat(y[tr], v), xw[te], y[te], classifier,
                           train_groups=groups, **kwargs)
        per_fold[str(f.item() if hasattr(f, "item") else f)] = res["metrics"]
        settings = res["settings"]
    keys = list(next(iter(per_fold.values())).keys())
    metrics: dict[str, Any] = {}
    for k in keys:
        vals = np.array([m[k] for m in per_fold.values()])
        metrics[f"{k}_mean"] = float(vals.mean())
        metrics[f"{k}_std"] = float(vals.std())
    settings = {**settings, "folds": [str(f) for f in fold_ids], "selection": "per fold, on its training folds"}
    settings.pop("train_rows", None)
    settings.pop("test_videos", None)
    return {"metrics": metrics, "per_fold": per_fold, "settings": settings}


# ---------------------------------------------------------------------------------------------
# Multi-label probe (AudioSet / PASCAL VOC)


def multilabel_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                     hidden: tuple[int, ...] = (512,), epochs: int = 100, lr: float = 1e-3,
                     weight_decay: float = 0.0, batch_size: int = 256, standardize: bool = True,
                     seed: int = 0, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Multi-label probe scored by mAP (AudioSet with ``hidden=(512,)``, PASCAL-style linear with ``()``).

    ``train_x`` (N, D), multi-hot ``train_y`` (N, C); ``test_x`` (M, D) or (M, V, D), ``test_y``
    (M, C). An MLP (Linear → BN → ReLU per hidden size, then Linear) is trained with sigmoid
    cross-entropy and Adam (``weight_decay`` as L2 in Adam); test probabilities are averaged over
    windows. Reports test mAP (classes without test positives skipped) and train mAP.
    """
    train_x, train_y = _check_xy(train_x, train_y, "train", multilabel=True)
    test_x, test_y = _check_xy(test_x, test_y, "test", multilabel=True)
    if train_x.ndim != 2 or train_y.shape[1] != test_y.shape[1]:
        raise ValueError(f"multilabel_probe: train (N, D) and matching class counts needed; got {train_x.shape}, "
                         f"{train_y.shape}, {test_y.shape}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(train_x, device=dev)
    yt = torch.as_tensor(train_y, dtype=torch.float32, device=dev)
    norm = _Standardizer(xt) if standardize else (lambda z: z)
    layers: list[nn.Module] = []
    d = xt.shape[1]
    for h in hidden:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, yt.shape[1]))
    net = nn.Sequential(*layers).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xn = norm(xt)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(xn.shape[0], generator=gen).to(dev)
        for i in range(0, xn.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            if idx.numel() < 2 and hidden:
                continue  # BatchNorm needs two rows
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(xn[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        tw = torch.as_tensor(_windows(test_x), device=dev)
        m, v, _ = tw.shape
        test_p = torch.sigmoid(net(norm(tw.reshape(m * v, -1)))).reshape(m, v, -1).mean(dim=1).cpu().numpy()
        train_p = torch.sigmoid(net(xn)).cpu().numpy()
    test_map = mean_average_precision(test_p, test_y)
    train_map = mean_average_precision(train_p, train_y)
    return {
        "metrics": {"test_mAP": test_map["mAP"], "train_mAP": train_map["mAP"], "test_classes": test_map["classes"]},
        "settings": {"classifier": "MLP" if hidden else "linear", "hidden": list(hidden), "epochs": epochs,
                     "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "standardize": standardize,
                     "test_windows": int(v), "score_averaging": "sigmoid mean over windows",
                     "mAP": "mean over classes with a test positive of sklearn-style AP"},
        "test_scores": test_p,
    }


# ---------------------------------------------------------------------------------------------
# Entry point for ``mmv-torch eval linear``


def run_linear(model: Callable[..., Any], train_loader: Any, test_loader: Any, train_labels: np.ndarray,
               test_labels: np.ndarray, modality: str = "video", space: str = "repr", train_epochs: int = 10,
               classifier: str = "svm", multilabel: bool = False, device: torch.device | str | None = None,
               json_out: str | None = None, **probe_kwargs: Any) -> dict[str, Any]:
    """Extract features and run a probe; write the JSON + markdown report when ``json_out`` is given.

    Train features: ``train_epochs`` passes of ``train_loader`` (augmenting; views averaged). Test
    features: per view (``(M, V, D)``: V windows × crops, scores averaged per video). Labels are
    indexed by dataset row: ``(N,)`` integers, or ``(N, C)`` multi-hot with ``multilabel``.
    """
    from mmv_torch.eval.features import extract_epochs, extract_features
    from mmv_torch.eval.report import write_report

    # Fresh augmentation per pass: data sets that seed from (seed, epoch, index) expose set_epoch.
    set_epoch = getattr(getattr(train_loader, "dataset", None), "set_epoch", None)
    xtr, itr = extract_epochs(model, train_loader, modality, train_epochs, space, device, set_epoch=set_epoch)
    xte, ite = extract_features(model, test_loader, modality, space, "none", device)
    ytr, yte = np.asarray(train_labels)[itr], np.asarray(test_labels)[ite]
    if multilabel:
        res = multilabel_probe(xtr, ytr, xte, yte, **probe_kwargs)
    else:
        res = linear_probe(xtr, ytr, xte, yte, classifier, train_groups=itr, **probe_kwargs)
    res["settings"].update(modality=modality, space=space, train_epochs=train_epochs)
    result = {"task": f"linear probe ({modality}, {space})", "metrics": res["metrics"], "settings": res["settings"]}
    write_report(result, json_out)
    return result
