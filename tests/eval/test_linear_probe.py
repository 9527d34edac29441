"""Probes: ~100% on separable toy features, ~chance on shuffled labels; protocol details."""

import numpy as np
import pytest

from mmv_torch.eval.linear_probe import (
    cross_validate,
    logistic_probe,
    multilabel_probe,
    svm_probe,
)


def _toy(n_per_class=30, classes=6, dim=16, views=1, sep=4.0, seed=0):
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * sep  # shared by train and test
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y][:, None] + rng.normal(size=(y.size, views, dim))
    return (x[:, 0] if views == 1 else x).astype(np.float32), y


def test_svm_official_protocol_separable_and_shuffled():
    xtr, ytr = _toy(seed=0)
    xte, yte = _toy(views=10, seed=1)  # 10 windows per test video, decision averaged
    xte = xte + 0  # (M, 10, D)
    res = svm_probe(xtr, ytr, xte, yte)
    assert res["metrics"]["test_top1"] == 1.0 and res["metrics"]["test_top5"] == 1.0
    s = res["settings"]
    assert s["C"] == 0.001 and s["dual"] is True and s["max_iter"] == 1000 and s["test_windows"] == 10
    rng = np.random.default_rng(5)
    xr = rng.normal(size=(600, 16)).astype(np.float32)
    yr = rng.integers(0, 6, size=600)
    shuffled = svm_probe(xr[:400], yr[:400], xr[400:], yr[400:], cs=(1.0,))
    assert abs(shuffled["metrics"]["test_top1"] - 1 / 6) < 0.08


def test_svm_window_averaging_is_decision_function_mean():
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    xtr, ytr = _toy(n_per_class=10, classes=4, dim=5, sep=1.0, seed=2)
    xte, yte = _toy(n_per_class=3, classes=4, dim=5, views=3, sep=1.0, seed=3)
    res = svm_probe(xtr, ytr, xte, yte, cs=(0.01,))
    sc = StandardScaler().fit(xtr)
    clf = LinearSVC(C=0.01, dual=True, max_iter=1000, random_state=0).fit(sc.transform(xtr), ytr)
    ref = np.stack([clf.decision_function(sc.transform(xte[:, w])) for w in range(3)]).mean(0)
    np.testing.assert_allclose(res["test_scores"], ref, rtol=1e-6, atol=1e-8)


def test_svm_grid_selects_on_validation_groups():
    xtr, ytr = _toy(seed=4)
    xte, yte = _toy(seed=6)
    res = svm_probe(xtr, ytr, xte, yte, cs=(1e-6, 1.0), train_groups=np.arange(len(ytr)) // 2)
    assert set(res["settings"]["val_top1_per_C"]) == {"1e-06", "1.0"}
    assert res["settings"]["C"] in (1e-6, 1.0)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_logistic_probe_separable_and_shuffled(optimizer):
    kw = dict(optimizer=optimizer, max_iter=30 if optimizer == "lbfgs" else 15, lr=3e-2, batch_size=200)
    xtr, ytr = _toy(seed=7)
    xte, yte = _toy(views=4, seed=8)
    grid = (1e-4, 1e-2) if optimizer == "lbfgs" else (1e-3,)
    res = logistic_probe(xtr, ytr, xte, yte, weight_decays=grid, **kw)
    assert res["metrics"]["test_top1"] == 1.0
    assert res["settings"]["weight_decay_grid"] == list(grid) and res["settings"]["test_windows"] == 4
    rng = np.random.default_rng(9)
    xr = rng.normal(size=(600, 16)).astype(np.float32)
    yr = rng.integers(0, 6, size=600)
    shuffled = logistic_probe(xr[:400], yr[:400], xr[400:], yr[400:], weight_decays=(1e-2,), **kw)
    assert abs(shuffled["metrics"]["test_top1"] - 1 / 6) < 0.08


def test_cross_validation_five_folds():
    x, y = _toy(n_per_class=20, classes=5, views=2, seed=10)
    folds = np.tile(np.arange(5), len(y) // 5)
    res = cross_validate(x, y, folds, classifier="logistic", weight_decays=(1e-3,), max_iter=30)
    assert set(res["per_fold"]) == {"0", "1", "2", "3", "4"}
    assert res["metrics"]["test_top1_mean"] == 1.0
    with pytest.raises(ValueError, match="2 folds"):
        cross_validate(x, y, np.zeros(len(y)))


def test_multilabel_mlp_map():
    rng = np.random.default_rng(11)
    n, c, d = 400, 5, 12
    y = (rng.random((n, c)) < 0.3).astype(np.float32)
    w = rng.normal(size=(c, d)) * 3
    x = (y @ w + rng.normal(size=(n, d)) * 0.3).astype(np.float32)
    res = multilabel_probe(x[:300], y[:300], x[300:], y[300:], hidden=(32,), epochs=30, lr=1e-2, batch_size=100)
    assert res["metrics"]["test_mAP"] > 0.97
    yr = rng.permutation(y)
    chance = multilabel_probe(x[:300], yr[:300], x[300:], yr[300:], hidden=(), epochs=10, batch_size=100)
    assert chance["metrics"]["test_mAP"] < 0.5  # positives are ~30%: chance AP ~0.3


def test_bad_shapes():
    with pytest.raises(ValueError, match="train labels"):
        svm_probe(np.zeros((4, 3)), np.zeros(3, int), np.zeros((2, 3)), np.zeros(2, int))


def test_run_linear_gives_each_training_pass_fresh_augmentation():
    import torch

    from mmv_torch.eval.linear_probe import run_linear

    class Augmenting(torch.utils.data.Dataset):
        """Features depend on (epoch, index), as the labelled data sets' augmentation does."""

        def __init__(self):
            self.epoch, self.seen = 0, []

        def set_epoch(self, epoch):
            self.epoch = epoch
            self.seen.append(epoch)

        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(1000 * self.epoch + i)
            return {"video": torch.randn(3, 2, 2, 2, generator=g), "index": torch.tensor(i)}

    class Flat(torch.nn.Module):
        def forward(self, video):
            return {"video": {"repr": video.flatten(1)}}

    ds = Augmenting()
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    labels = np.arange(8) % 2
    run_linear(Flat(), loader, loader, labels, labels, train_epochs=3, classifier="logistic")
    assert ds.seen[:3] == [0, 1, 2]
