"""Retrieval metrics against brute-force loops."""

import numpy as np
import pytest
import torch

from mmv_torch.eval.retrieval import (
    paired_retrieval,
    positive_ranks,
    rank_metrics,
    retrieval_metrics,
    text_video_retrieval,
)


def _brute_ranks(q, g, qk, gk):
    """Loop reference: rank = 1 + #negatives scoring at or above the best positive (ties count against)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    ranks = []
    for i in range(len(q)):
        scores = [float(np.dot(q[i], g[j])) for j in range(len(g))]
        best = max(scores[j] for j in range(len(g)) if gk[j] == qk[i])
        ranks.append(1 + sum(1 for j in range(len(g)) if gk[j] != qk[i] and scores[j] >= best))
    return np.array(ranks)


def _brute_metrics(ranks):
    return {"R@1": np.mean(ranks <= 1), "R@5": np.mean(ranks <= 5), "R@10": np.mean(ranks <= 10),
            "median_rank": float(np.median(ranks)), "mean_rank": float(np.mean(ranks))}


@pytest.mark.parametrize("chunks", [(1024, 16384), (3, 7), (1, 1)])
def test_text_to_video_equals_brute_force(chunks):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 8)).astype(np.float32)
    cap_video = np.repeat(np.arange(30), 2)[:50]
    t = (v[cap_video] + rng.normal(scale=1.5, size=(50, 8))).astype(np.float32)
    got = positive_ranks(t, v, cap_video, np.arange(30), query_chunk=chunks[0], gallery_chunk=chunks[1])
    ref = _brute_ranks(t.astype(np.float64), v.astype(np.float64), cap_video, np.arange(30))
    np.testing.assert_array_equal(got, ref)
    assert 1 < ref.max() and ref.min() == 1  # neither trivial nor hopeless


@pytest.mark.parametrize("chunks", [(1024, 16384), (4, 5)])
def test_video_to_text_best_caption_equals_brute_force(chunks):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20, 6)).astype(np.float32)
    cap_video = rng.integers(0, 20, size=70)
    cap_video[:20] = np.arange(20)  # every video has a caption; some have many
    t = (v[cap_video] + rng.normal(scale=1.5, size=(70, 6))).astype(np.float32)
    got = positive_ranks(v, t, np.arange(20), cap_video, query_chunk=chunks[0], gallery_chunk=chunks[1])
    ref = _brute_ranks(v.astype(np.float64), t.astype(np.float64), np.arange(20), cap_video)
    np.testing.assert_array_equal(got, ref)


def test_text_video_retrieval_metrics_equal_brute_force():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(25, 5)).astype(np.float32)
    cap_video = np.concatenate([np.arange(25), rng.integers(0, 25, size=25)])
    t = (v[cap_video] + rng.normal(scale=1.2, size=(50, 5))).astype(np.float32)
    res = text_video_retrieval(v, t, cap_video)
    ref_t2v = _brute_metrics(_brute_ranks(t, v, cap_video, np.arange(25)))
    ref_v2t = _brute_metrics(_brute_ranks(v, t, np.arange(25), cap_video))
    for k, val in ref_t2v.items():
        assert res["t2v"][k] == pytest.approx(val)
    for k, val in ref_v2t.items():
        assert res["v2t"][k] == pytest.approx(val)
    assert res["t2v"]["queries"] == 50 and res["v2t"]["queries"] == 25


def test_paired_identity_is_perfect_and_random_is_not():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 16))
    res = paired_retrieval(a, a, names=("audio", "video"))
    assert res["audio2video"]["R@1"] == 1.0 and res["video2audio"]["median_rank"] == 1.0
    b = rng.normal(size=(40, 16))
    rnd = paired_retrieval(a, b)
    assert rnd["a2b"]["R@1"] < 0.3
    assert rnd["a2b"]["mean_rank"] == pytest.approx(_brute_ranks(a, b, np.arange(40), np.arange(40)).mean())


def test_unnormalized_dot_product_and_torch_input():
    rng = np.random.default_rng(4)
    q = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    g = rng.normal(size=(11, 4)) * rng.uniform(0.1, 5, size=(11, 1))
    keys = np.arange(9)
    got = positive_ranks(q, g, keys, np.arange(11), normalize=False)
    s = q.double().numpy() @ g.T
    ref = np.array([1 + np.sum(np.delete(s[i], i) >= s[i, i]) for i in range(9)])
    np.testing.assert_array_equal(got, ref)


def test_errors_and_rank_metrics():
    with pytest.raises(ValueError, match="no positive"):
        positive_ranks(np.ones((2, 3)), np.ones((2, 3)), np.array([0, 5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="queries"):
        retrieval_metrics(np.ones((2, 3)), np.ones((2, 4)), np.arange(2), np.arange(2))
    m = rank_metrics(np.array([1, 2, 6, 11]))
    assert m == {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75, "median_rank": 4.0, "mean_rank": 5.0, "queries": 4}


def test_collapsed_embeddings_rank_last_and_nan_is_an_error():
    same = np.ones((6, 4))
    ranks = positive_ranks(same, same, np.arange(6), np.arange(6))
    np.testing.assert_array_equal(ranks, np.full(6, 6))  # every negative ties with the positive
    bad = same.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        positive_ranks(bad, same, np.arange(6), np.arange(6))
