"""The nearest-neighbour index choice, re-ranking, memory-mapped opening and retraining (index/nn.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from mmv_torch.index import nn  # noqa: E402
from mmv_torch.index.check import check_index  # noqa: E402
from mmv_torch.index.store import SPACES, IndexStore  # noqa: E402

D = 16


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, D))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("nn")
    x = _clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 3 + 11
    nn.write_vectors(folder, "video_vt", [(x[:1200], ids[:1200]), (x[1200:], ids[1200:])], 3000, D)
    queries = _clustered(200, seed=1)
    return folder, x, ids, queries


def test_a_small_budget_chooses_ivf_pq_and_reranking_raises_recall(vectors) -> None:
    folder, x, ids, queries = vectors
    assert nn.choose_factory(3000, D, None) == "IDMap2,Flat"
    assert nn.choose_factory(200_000, D, None).endswith(",Flat")
    factory = nn.choose_factory(3000, D, budget_bytes=60_000)  # the float vectors need 216 kB
    assert ",PQ" in factory and factory.startswith("IVF")
    vecs, stored = nn.read_vectors(folder, "video_vt")
    assert np.array_equal(np.asarray(stored), ids) and np.array_equal(np.asarray(vecs), x)
    index, kind = nn.build(vecs, stored, factory, vectors=nn.VectorFile(folder / "video_vt.vectors.npy", stored))
    assert kind["type"] == "ivf_pq" and kind["rerank"] == nn.RERANK and kind["recall_at_10"] >= 0.9
    truth = ids[nn.exact_search(x, queries, 10)]
    plain = nn.NNIndex(index.index, {**kind, "rerank": 0})
    reranked = nn.recall_at(index.search(queries, 10)[1], truth)
    assert reranked >= nn.recall_at(plain.search(queries, 10)[1], truth) + 0.08
    allowed = ids[::7]
    _, got = index.search(queries[:20], 10, params=index.search_params(allowed))
    assert np.isin(got[got >= 0], allowed).all() and (got >= 0).sum() > 100


def test_the_mmap_opened_index_answers_like_the_in_memory_one(vectors, tmp_path) -> None:
    folder, x, ids, queries = vectors
    for factory in ("IDMap2,Flat", "IVF16,Flat", "IVF16,PQ4"):
        vf = nn.VectorFile(folder / "video_vt.vectors.npy", ids)
        built, kind = nn.build(x, ids, factory, vectors=vf)
        path = tmp_path / "space.faiss"
        faiss.write_index(built.index, str(path))
        mapped = nn.open_index(path, kind, folder / "video_vt.vectors.npy")
        loaded = nn.open_index(path, kind, folder / "video_vt.vectors.npy", mmap=False)
        ivf = faiss.try_extract_index_ivf(mapped.index)
        if ivf is not None:
            assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
        s1, i1 = mapped.search(queries, 10)
        s2, i2 = loaded.search(queries, 10)
        assert np.array_equal(i1, i2) and np.allclose(s1, s2), factory
        assert mapped.rerank == (nn.RERANK if "PQ" in factory else 0)


def test_a_bad_factory_string_is_one_line(tmp_path) -> None:
    with pytest.raises(ValueError) as e:
        nn.check_factory("IVF16,Bogus", D)
    assert "\n" not in str(e.value) and "IVF16,Bogus" in str(e.value)
    store = _store(tmp_path, [300])
    with pytest.raises(ValueError, match="not a faiss index factory") as e:
        store.rebuild(nn_index="NotAnIndex")
    assert "\n" not in str(e.value)


def _store(folder: Path, sizes: list[int], seed: int = 0) -> IndexStore:
    store = IndexStore(folder / "idx", create=True, writer=True)
    store.set_info(window_s=1.0, stride_s=1.0, dims={s: D for s in SPACES}, checkpoint="none")
    root = store.add_root(folder)
    for n in sizes:
        _add(store, folder, root, n, seed + n)
    return store


def _add(store: IndexStore, folder: Path, root: int, n: int, seed: int) -> None:
    video = folder / f"v{seed}.mp4"
    video.write_bytes(b"x")
    x = _clustered(n, seed)
    store.add_file(video, root, float(n), True, [(float(i), i + 1.0, True, None) for i in range(n)],
                   {s: x for s in SPACES})


def _centroids(store: IndexStore) -> np.ndarray:
    ivf = faiss.extract_index_ivf(store.faiss_index("video_vt").index)
    return faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * D).copy()


def test_index_add_keeps_the_training_below_the_threshold_and_retrains_above(tmp_path) -> None:
    store = _store(tmp_path, [2000])
    kinds = store.rebuild(nn_index="IVF16,PQ4")
    assert kinds["video_vt"]["factory"] == "IVF16,PQ4" and kinds["video_vt"]["rerank"] == nn.RERANK
    assert store.info()["nn_settings"] == {"memory_gb": None, "factory": "IVF16,PQ4"}
    first, trained_at = _centroids(store), kinds["video_vt"]["trained_max_id"]
    root = store.add_root(tmp_path)
    _add(store, tmp_path, root, 300, 1)  # 300 of 2300: 13% added since the training
    kinds = store.rebuild()
    assert kinds["video_vt"]["factory"] == "IVF16,PQ4" and kinds["video_vt"]["trained_max_id"] == trained_at
    assert np.array_equal(_centroids(store), first) and store.faiss_index("video_vt").ntotal == 2300
    _add(store, tmp_path, root, 800, 2)  # 1100 of 3100: 35% > RETRAIN_SHARE
    kinds = store.rebuild()
    assert kinds["video_vt"]["trained_max_id"] > trained_at and not np.array_equal(_centroids(store), first)
    assert store.faiss_index("video_vt").ntotal == 3100
    _, got = store.search("video_vt", _clustered(800, 2)[0], 1)  # a stored vector of the last file finds itself
    assert int(got[0]) > trained_at


def test_check_accepts_the_new_kinds_and_catches_a_wrong_id_set(tmp_path) -> None:
    store = _store(tmp_path, [1500])
    kinds = store.rebuild(memory_gb=0.0001)  # 27 kB a space: its float vectors need 108 kB
    assert kinds["video_vt"]["type"] == "ivf_pq"
    store.close()
    assert check_index(tmp_path / "idx").ok
    ids = np.load(tmp_path / "idx" / "video_vt.ids.npy")
    np.save(tmp_path / "idx" / "video_vt.ids.npy", ids + 1)
    report = check_index(tmp_path / "idx")
    assert not report.ok and any("video_vt.vectors.npy" in p.what for p in report.problems)
    np.save(tmp_path / "idx" / "video_vt.ids.npy", ids)
    index = faiss.read_index(str(tmp_path / "idx" / "audio_va.faiss"))
    ivf = faiss.extract_index_ivf(index)
    ivf.remove_ids(faiss.IDSelectorRange(0, 5))
    ivf.add_with_ids(np.zeros((4, D), np.float32), np.arange(10**6, 10**6 + 4, dtype=np.int64))
    faiss.write_index(index, str(tmp_path / "idx" / "audio_va.faiss"))
    report = check_index(tmp_path / "idx")
    assert not report.ok and any("audio_va.faiss" in p.what for p in report.problems)
    assert check_index(tmp_path / "idx", repair=True).repaired and check_index(tmp_path / "idx").ok


def test_recorded_recall_counts_tied_vectors_as_hits() -> None:
    """Windows with equal vectors (one-frame clips, repeated frames) tie: an exact index returns one of them,
    exact search by rows another; the recall recorded for an exact index is 1 whatever order the windows were
    committed in, while the plain id overlap is not."""
    base = _clustered(300, seed=3)
    x = np.concatenate([base, base, base])  # every vector three times
    ids = np.random.default_rng(0).permutation(len(x)).astype(np.int64) + 5  # committed in another order
    index, kind = nn.build_faiss(x, ids)
    assert kind["type"] == "exact" and kind["recall_at_10"] == 1.0
    queries = x[:50]
    got = index.search(queries, 10)[1]
    truth = nn.exact_search(x, queries, 10)
    assert nn.recall_at(got, ids[truth]) < 1.0  # the ties make the plain overlap a miss
    assert nn.tie_recall(x, ids, queries, got, truth) == 1.0
    worse = got.copy()
    worse[:, 9] = ids[nn.exact_search(x, -queries, 1)[:, 0]]  # the farthest window instead of the 10th
    assert nn.tie_recall(x, ids, queries, worse, truth) == pytest.approx(0.9)
