"""Classification metrics against brute-force references and scikit-learn."""

import numpy as np
import pytest

from mmv_torch.eval.metrics import average_precision, mean_average_precision, topk_accuracy


def test_topk_matches_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 7))
    labels = rng.integers(0, 7, size=50)
    got = topk_accuracy(scores, labels, (1, 3, 5))
    for k in (1, 3, 5):
        ref = np.mean([labels[i] in np.argsort(-scores[i])[:k] for i in range(50)])
        assert got[f"top{k}"] == pytest.approx(ref)


def test_topk_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(np.zeros((2, 3)), np.array([0, 3]))


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_equals_sklearn(ties):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for trial in range(20):
        n = 40
        y = rng.integers(0, 2, size=n)
        y[trial % n] = 1
        s = rng.normal(size=n) + y * 0.5
        if ties:
            s = np.round(s, 1)  # many equal scores
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_map_equals_sklearn_macro_and_skips_empty_classes():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    y = (rng.random((60, 6)) < 0.3).astype(int)
    y[:, 4] = 0  # a class without positives is skipped
    s = rng.normal(size=(60, 6)) + y
    got = mean_average_precision(s, y)
    keep = [c for c in range(6) if y[:, c].any()]
    ref = average_precision_score(y[:, keep], s[:, keep], average="macro")
    assert got["mAP"] == pytest.approx(ref, abs=1e-12)
    assert got["classes"] == 5


def test_perfect_and_undefined_ap():
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
    with pytest.raises(ValueError, match="without positives"):
        average_precision(np.array([1.0, 2.0]), np.array([0, 0]))
