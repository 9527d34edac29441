"""Zero-shot retrieval metrics: R@1/5/10, median and mean rank, chunked so large galleries fit.

Every query has a set of positives in the gallery, given by keys: gallery item ``g`` is a positive of
query ``q`` when ``gallery_keys[g] == query_keys[q]``. This covers

- text→video: a query per caption, key = its video id; one positive (the video);
- video→text with several captions per video: a query per video, positives = all its captions; the
  rank is that of the best-ranked caption (as YouCook2/MSRVTT evaluations count it);
- audio→video and video→audio: one positive each.

Rank definition: ``rank(q) = 1 + #{negatives g : s(q, g) >= s_best(q)}`` where ``s_best`` is the
highest score among q's positives. Ties with negatives count against the query (the pessimistic
convention), so a collapsed embedding that gives every item the same score ranks last rather than
first. Non-finite embeddings raise ``ValueError``. Multi-window averaging
of the embeddings is done upstream (:func:`mmv_torch.eval.features.extract_features`).

Memory: the similarity matrix is never materialised. Queries are processed in blocks of
``query_chunk`` rows against gallery blocks of ``gallery_chunk`` rows, so the peak extra memory is
one ``query_chunk × gallery_chunk`` score block (64 MiB at 1024 × 16384 in float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RECALL_KS = (1, 5, 10)


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    return t.to(device) if device is not None else t


def _positive_pairs(query_keys: np.ndarray, gallery_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (query, gallery) index pairs whose keys match; ``ValueError`` if a query has no positive."""
    qk = np.asarray(query_keys)
    gk = np.asarray(gallery_keys)
    order = np.argsort(gk, kind="stable")
    sorted_keys = gk[order]
    lo = np.searchsorted(sorted_keys, qk, side="left")
    hi = np.searchsorted(sorted_keys, qk, side="right")
    counts = hi - lo
    if (counts == 0).any():
        bad = qk[counts == 0][:5].tolist()
        raise ValueError(f"retrieval: {int((counts == 0).sum())} queries have no positive in the gallery, "
                         f"e.g. keys {bad}")
    pair_q = np.repeat(np.arange(qk.size), counts)
    starts = np.repeat(lo, counts)
    offsets = np.arange(pair_q.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_g = order[starts + offsets]
    return pair_q, pair_g


@torch.no_grad()
def positive_ranks(queries: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor,
                   query_keys: np.ndarray, gallery_keys: np.ndarray, normalize: bool = True,
                   query_chunk: int = 1024, gallery_chunk: int = 16384,
                   device: torch.device | str | None = None) -> np.ndarray:
    """1-based rank of the best positive of every query (see the module doc), shape (Q,) int64.

    ``queries`` (Q, D) and ``gallery`` (G, D) are embeddings (numpy or torch); ``query_keys`` (Q,) and
    ``gallery_keys`` (G,) any comparable ids. Scores are dot products, of L2-normalised vectors when
    ``normalize`` (cosine similarity). ``device`` runs the matmuls there (e.g. "cuda").
    """
    dev = torch.device(device) if device is not None else None
    q = _as_tensor(queries, dev)
    g = _as_tensor(gallery, dev)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"retrieval needs queries (Q, D) and gallery (G, D); got {tuple(q.shape)}, {tuple(g.shape)}")
    if len(query_keys) != q.shape[0] or len(gallery_keys) != g.shape[0]:
        raise ValueError(f"retrieval: {len(query_keys)} query keys for {q.shape[0]} queries, "
                         f"{len(gallery_keys)} gallery keys for {g.shape[0]} gallery items")
    if not (bool(torch.isfinite(q).all()) and bool(torch.isfinite(g).all())):
        raise ValueError("retrieval: the embeddings contain NaN or Inf")
    dtype = torch.promote_types(q.dtype, g.dtype)
    q, g = q.to(dtype), g.to(dtype)
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    pair_q, pair_g = _positive_pairs(np.asarray(query_keys), np.asarray(gallery_keys))
    pq = torch.as_tensor(pair_q, device=q.device)
    pg = torch.as_tensor(pair_g, device=q.device)
    # Best positive score per query. Positives are masked to -inf in the counting pass, so rounding
    # differences between this dot product and the matmul can never make a positive count against itself.
    pos_scores = (q[pq] * g[pg]).sum(dim=1)
    best = torch.full((q.shape[0],), -torch.inf, dtype=q.dtype, device=q.device)
    best.scatter_reduce_(0, pq, pos_scores, reduce="amax")

    # Positive pairs sorted by gallery index, to mask them chunk by chunk.
    order = torch.argsort(pg, stable=True)
    pq_s, pg_s = pq[order], pg[order]
    counts = torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
    for g0 in range(0, g.shape[0], gallery_chunk):
        g1 = min(g0 + gallery_chunk, g.shape[0])
        gblock = g[g0:g1]
        lo = int(torch.searchsorted(pg_s, torch.tensor(g0, device=q.device)))
        hi = int(torch.searchsorted(pg_s, torch.tensor(g1, device=q.device)))
        mq, mg = pq_s[lo:hi], pg_s[lo:hi] - g0
        for q0 in range(0, q.shape[0], query_chunk):
            q1 = min(q0 + query_chunk, q.shape[0])
            scores = q[q0:q1] @ gblock.T
            sel = (mq >= q0) & (mq < q1)
            if bool(sel.any()):
                scores[mq[sel] - q0, mg[sel]] = -torch.inf
            counts[q0:q1] += (scores >= best[q0:q1, None]).sum(dim=1)
    return (counts + 1).cpu().numpy()


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """R@k (fraction of queries with rank <= k), median rank and mean rank of 1-based ``ranks`` (Q,)."""
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0 or r.min() < 1:
        raise ValueError(f"rank_metrics needs a non-empty 1-D array of 1-based ranks; got shape {r.shape}")
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(r.mean())
    out["queries"] = int(r.size)
    return out


def retrieval_metrics(queries: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor,
                      query_keys: np.ndarray, gallery_keys: np.ndarray, normalize: bool = True,
                      query_chunk: int = 1024, gallery_chunk: int = 16384,
                      device: torch.device | str | None = None) -> dict[str, float]:
    """:func:`positive_ranks` followed by :func:`rank_metrics` (R@1/5/10, median/mean rank, queries)."""
    ranks = positive_ranks(queries, gallery, query_keys, gallery_keys, normalize, query_chunk, gallery_chunk,
                           device)
    return rank_metrics(ranks)


def text_video_retrieval(video_emb: np.ndarray | torch.Tensor, text_emb: np.ndarray | torch.Tensor,
                         caption_video: np.ndarray, normalize: bool = True,
                         device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Zero-shot text→video and video→text retrieval.

    ``video_emb`` (V, D) (windows already averaged), ``text_emb`` (C, D) one row per caption and
    ``caption_video`` (C,) the row of each caption's video in ``video_emb``. Every caption is a
    text→video query; every video with at least one caption is a video→text query whose rank is its
    best-ranked caption's. Returns ``{"t2v": metrics, "v2t": metrics}``.
    """
    cv = np.asarray(caption_video, dtype=np.int64)
    n_video = int(torch.as_tensor(video_emb).shape[0])
    if cv.ndim != 1 or cv.size != int(torch.as_tensor(text_emb).shape[0]):
        raise ValueError(f"caption_video must be (C,) with one entry per caption row; got shape {cv.shape}")
    if cv.size and (cv.min() < 0 or cv.max() >= n_video):
        raise ValueError(f"caption_video entries must lie in [0, {n_video}); got [{cv.min()}, {cv.max()}]")
    video_ids = np.arange(n_video)
    t2v = retrieval_metrics(text_emb, video_emb, cv, video_ids, normalize, device=device)
    with_caption = np.unique(cv)
    v = torch.as_tensor(video_emb)[torch.as_tensor(with_caption)]
    v2t = retrieval_metrics(v, text_emb, with_caption, cv, normalize, device=device)
    return {"t2v": t2v, "v2t": v2t}


def embed_text_video(model: Any, video_loader: Any, text_loader: Any, space: str = "vt",
                     device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed every video (views averaged) and every caption into ``space``: ``(V, D)``, ``(C, D)``.

    Retrieval needs every gallery item, so a video that failed to decode raises ``ValueError``.
    """
    from mmv_torch.eval.features import extract_features

    video_emb, order = extract_features(model, video_loader, "video", space, "mean", device)
    n_videos = len(video_loader.dataset) if hasattr(video_loader, "dataset") else order.size
    if not np.array_equal(order, np.arange(n_videos)):
        lost = sorted(set(range(n_videos)) - set(order.tolist()))
        raise ValueError(f"{len(lost)} videos failed to decode (see the log), e.g. row {lost[0]}; retrieval needs "
                         f"every video (run `mmv-torch data check`)")
    text_emb, _ = extract_features(model, text_loader, "text", space, "mean", device)
    return video_emb, text_emb


def paired_retrieval(a_emb: np.ndarray | torch.Tensor, b_emb: np.ndarray | torch.Tensor, normalize: bool = True,
                     names: tuple[str, str] = ("a", "b"),
                     device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Retrieval between two aligned sets (row i of ``a_emb`` (N, D) pairs with row i of ``b_emb`` (N, D)),
    e.g. audio↔video. Returns ``{"a2b": metrics, "b2a": metrics}`` with the given ``names``."""
    n = int(torch.as_tensor(a_emb).shape[0])
    if int(torch.as_tensor(b_emb).shape[0]) != n:
        raise ValueError(f"paired_retrieval needs aligned rows; got {n} and {int(torch.as_tensor(b_emb).shape[0])}")
    ids = np.arange(n)
    a, b = names
    return {f"{a}2{b}": retrieval_metrics(a_emb, b_emb, ids, ids, normalize, device=device),
            f"{b}2{a}": retrieval_metrics(b_emb, a_emb, ids, ids, normalize, device=device)}


def run_retrieval(model: Any, query_loader: Any, gallery_loader: Any, query_modality: str, gallery_modality: str,
                  space: str, query_keys: np.ndarray | None = None, gallery_keys: np.ndarray | None = None,
                  normalize: bool = True, device: torch.device | str | None = None,
                  json_out: str | None = None) -> dict[str, Any]:
    """What ``mmv-torch eval retrieval`` calls: embed both sides, rank both directions, write the report.

    ``query_keys``/``gallery_keys`` map dataset rows to ids (e.g. each caption row to its video id;
    default: the row itself, i.e. aligned pairs). Views (windows) are averaged by the extraction.
    Returns ``{"task", "metrics": {"text2video": ..., "video2text": ...}, "settings"}`` (modality names).
    """
    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.report import write_report

    qf, qi = extract_features(model, query_loader, query_modality, space, "mean", device)
    gf, gi = extract_features(model, gallery_loader, gallery_modality, space, "mean", device)
    qk = qi if query_keys is None else np.asarray(query_keys)[qi]
    gk = gi if gallery_keys is None else np.asarray(gallery_keys)[gi]
    q, g = query_modality, gallery_modality
    metrics = {f"{q}2{g}": retrieval_metrics(qf, gf, qk, gk, normalize, device=device),
               f"{g}2{q}": retrieval_metrics(gf, qf, gk, qk, normalize, device=device)}
    result = {"task": f"zero-shot retrieval {query_modality}<->{gallery_modality} ({space})", "metrics": metrics,
              "settings": {"space": space, "normalize": normalize, "queries": int(qf.shape[0]),
                           "gallery": int(gf.shape[0]), "rank": "1 + #negatives scoring at or above the best positive",
                           "windows": "embeddings averaged over the loader's views"}}
    write_report(result, json_out)
    return result
