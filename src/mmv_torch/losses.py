"""Self-supervised losses: NCE (video-audio), MIL-NCE (video-text with K candidates) and their sum.

Notation: B clips on this rank, W ranks, N = W*B clips in the global batch, D embedding size, K text
candidates per clip, tau the temperature, ``s(a, b) = <a, b> / tau`` after optional L2 normalisation.
Masks mark what exists: a clip without audio (``mask``/``sample_mask``) or a padded narration
candidate (``text_mask``). An excluded clip is removed completely (from the rows AND the columns), so
masking is the same as dropping the samples; a loss is the mean over the clips that remain in the
whole global batch.

Distributed (see ``dist.py``): each rank scores its own B rows against the columns of all N clips,
gathered with :func:`dist.all_gather_with_grad` (whose backward sums the gradient over ranks). The
value returned on every rank is the loss of the whole global batch, identical on all ranks, and its
gradient is scaled so that DDP's average over ranks is exactly the gradient of that global loss:
the result equals one process on the concatenated batch, masks included (``_global_mean``).
Scores are computed in float32 (float64 inputs stay float64) with autocast disabled.

Two forms of the symmetric loss (``form``; ``LossConfig.form``):

- ``"joint"`` (the default, the paper's equations): ONE softmax per positive whose denominator holds
  the positive and the negative pairs of BOTH directions: for NCE(x, y) and positive pair i, the pairs
  (x_i, y_j) and (x_j, y_i), j != i. For MIL-NCE the numerator is the sum over the clip's valid
  narrations and the second direction pairs those narrations with the other clips.
- ``"mean"``: the average of two one-directional
  softmaxes, x->y and y->x, each with the positive once in its denominator (CLIP-style).
  ``symmetric=False`` keeps the x->y direction only and exists for this form only.

Both forms share the masks and the distributed gathering.

Groups (``groups``, (B,) integer, optional): clips with the same group id come from the same source video
(several clips decoded per opened video). A pair (i, j) with g_i == g_j and j != i is never a negative, in
any direction of any form; the positive (i, i) is unchanged. Ids are global (equal ids on different ranks
are the same video) and are gathered like the masks. ``groups=None`` adds no operation.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmv_torch import dist
from mmv_torch.config import LossConfig

_NEG_INF = float("-inf")
LOSS_FORMS = ("joint", "mean")


def _check_form(form: str, symmetric: bool, name: str) -> None:
    if form not in LOSS_FORMS:
        raise ValueError(f"{name} form must be one of {LOSS_FORMS}, got {form!r}")
    if form == "joint" and not symmetric:
        raise ValueError(f"{name}: symmetric=False (one direction only) needs form='mean'; the joint form "
                         "holds both directions in one softmax")


def _prep(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Upcast half precision to float32 and optionally L2-normalise the last dim."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=-1) if normalize else x


def _global_mean(row_loss: torch.Tensor, active: torch.Tensor, n_active: torch.Tensor) -> torch.Tensor:
    """Mean of ``row_loss`` (B,) over the active rows of the GLOBAL batch, as a DDP-exact scalar.

    ``n_active`` is the global number of active rows (from gathered masks, no gradient). Let S_r be the
    sum of rank r's active row losses and n the global count (n = 0 gives 0 with a zero gradient).
    The global loss is L = sum_r S_r / n. Under DDP each rank's backward (with the summing gathers)
    yields d(sum_r' loss_r')/dtheta restricted to its samples, and DDP divides by W, so the
    differentiable part on rank r must be W * S_r / n. Its value differs across ranks; the detached
    correction ``(L - W*S_r/n).detach()`` makes every rank return the global value L (one scalar
    all_reduce), without changing the gradient. Only linear combinations of such losses (the weighted
    sum in :func:`mmv_loss`) keep this property.
    """
    s_local = torch.where(active, row_loss, torch.zeros_like(row_loss)).sum()
    n = n_active.to(s_local.dtype).clamp_min(1.0)
    w = dist.world_size()
    if w == 1:
        return s_local / n
    scaled = s_local * (w / n)
    value = dist.all_reduce_sum(s_local.detach()).to(s_local.dtype) / n
    return scaled + (value - scaled).detach()


def _check_mask(mask: torch.Tensor | None, shape: tuple[int, ...], name: str, device: torch.device) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask.to(device)


def _check_groups(groups: torch.Tensor | None, b: int, name: str, device: torch.device) -> torch.Tensor | None:
    if groups is None:
        return None
    if groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {groups.dtype}")
    if tuple(groups.shape) != (b,):
        raise ValueError(f"{name} must have shape {(b,)}, got {tuple(groups.shape)}")
    return groups.to(device=device, dtype=torch.int64)


def _same_group(groups: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor | None:
    """(B, N) bool: global column j holds a clip of row i's group and j != i (never a negative); None without groups.

    Collective when distributed (gathers the groups of every rank)."""
    if groups is None:
        return None
    groups_all = dist.all_gather(groups)  # (N,)
    cols = torch.arange(groups_all.shape[0], device=groups.device)
    return (groups[:, None] == groups_all[None, :]) & (cols[None, :] != pos[:, None])


def nce_loss(x: torch.Tensor, y: torch.Tensor, temperature: float = 0.07, normalize: bool = True,
             symmetric: bool = True, mask: torch.Tensor | None = None, form: str = "joint",
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE between paired embeddings: row i of ``x`` (B, D) matches row i of ``y`` (B, D).

    With A the set of global clips whose ``mask`` (B,) bool is True (all when None), |A| its size,
    g_i the group of clip i (``groups`` (B,) integer; all distinct when None) and e_ij = exp(s(x_i, y_j)):

        form="joint" (default):
        l_i = -log( e_ii / (e_ii + sum_{j in A, g_j != g_i} e_ij + sum_{j in A, g_j != g_i} e_ji) )
        L = 1/|A| sum_{i in A} l_i

        form="mean":
        l_i^{x->y} = -log( e_ii / (e_ii + sum_{j in A, g_j != g_i} e_ij) )
        l_i^{y->x} = -log( e_ii / (e_ii + sum_{j in A, g_j != g_i} e_ji) )
        L = 1/|A| sum_{i in A} (l_i^{x->y} + l_i^{y->x}) / 2      (symmetric=True)
        L = 1/|A| sum_{i in A} l_i^{x->y}                         (symmetric=False)

    The joint form is the NCE of the MMV paper (a negative set holding both directions); ``symmetric``
    must stay True for it. j runs over all ranks' clips. Returns a scalar; 0 with a zero gradient when
    A is empty on every rank.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"nce_loss needs x and y of the same shape (B, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not temperature > 0:
        raise ValueError(f"nce_loss temperature must be > 0, got {temperature}")
    _check_form(form, symmetric, "nce_loss")
    b = x.shape[0]
    mask = _check_mask(mask, (b,), "nce_loss mask", x.device)
    groups = _check_groups(groups, b, "nce_loss groups", x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = _prep(x, normalize), _prep(y, normalize)
        y_all = dist.all_gather_with_grad(y)  # (N, D)
        mask_all = dist.all_gather(mask)  # (N,)
        ar = torch.arange(b, device=x.device)
        pos = dist.rank() * b + ar  # global column of each local row
        same = _same_group(groups, pos)  # (B, N) or None

        def scores(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            logits = rows @ cols.t() / temperature  # (B, N)
            logits = logits.masked_fill(~mask_all[None, :], _NEG_INF)
            if same is not None:  # same-video pairs are no negatives (either direction: rows are i in both)
                logits = logits.masked_fill(same, _NEG_INF)
            # Inactive rows are replaced by zeros so that no row is all -inf (no NaN in value or grad).
            return torch.where(mask[:, None], logits, torch.zeros_like(logits))

        fwd = scores(x, y_all)  # s(x_i, y_j)
        positive = fwd[ar, pos]
        if form == "joint":
            bwd = scores(y, dist.all_gather_with_grad(x))  # s(x_j, y_i)
            bwd = bwd.masked_fill(pos[:, None] == torch.arange(bwd.shape[1], device=x.device)[None], _NEG_INF)
            row = torch.logsumexp(torch.cat([fwd, bwd], dim=1), dim=1) - positive
        else:
            row = torch.logsumexp(fwd, dim=1) - positive
            if symmetric:
                bwd = scores(y, dist.all_gather_with_grad(x))
                row = 0.5 * (row + torch.logsumexp(bwd, dim=1) - bwd[ar, pos])
        return _global_mean(row, mask, mask_all.sum())


def milnce_loss(video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                sample_mask: torch.Tensor | None = None, temperature: float = 0.07, normalize: bool = True,
                symmetric: bool = True, form: str = "joint", groups: torch.Tensor | None = None) -> torch.Tensor:
    """MIL-NCE (Miech et al. 2020) between clips ``video`` (B, D) and their K candidates ``text`` (B, K, D).

    ``text_mask`` (B, K) bool marks real candidates (padding False); ``sample_mask`` (B,) bool drops
    whole clips. A = global clips with sample_mask True and at least one valid candidate (others,
    e.g. AudioSet clips without narration, are removed from rows and columns); P_i = valid candidates
    of clip i in A; g_i the group of clip i (``groups`` (B,) integer; all distinct when None). With
    e_{i,jk} = exp(s(video_i, text_jk)) and the bag score num_i = sum_{k in P_i} e_{i,ik}:

    form="joint" (default, the MIL-NCE equation): one softmax per clip whose negatives are both kinds,
    the clip against the candidates of the other clips and the clip's candidates against the other clips:

        l_i = -log( num_i / (num_i + sum_{j in A, g_j != g_i} sum_{k in P_j} e_{i,jk}
                                   + sum_{j in A, g_j != g_i} sum_{k in P_i} e_{j,ik}) )

    form="mean": the average of the two one-directional softmaxes (each holds the positives once):

        l_i^{v->t} = -log( num_i / (num_i + sum_{j in A, g_j != g_i} sum_{k in P_j} e_{i,jk}) )
        l_i^{t->v} = -log( num_i / (num_i + sum_{j in A, g_j != g_i} sum_{k in P_i} e_{j,ik}) )
        l_i = (l_i^{v->t} + l_i^{t->v}) / 2   (symmetric=True)   or   l_i^{v->t}   (symmetric=False)

    L = 1/|A| sum_{i in A} l_i. With K = 1 each form is exactly :func:`nce_loss` of the same form
    (x = video, y = text[:, 0]). Miech et al.'s released code builds the joint denominator by
    concatenating both directions' score blocks, so it counts the positives twice; here they are
    counted once, as in the paper's equation. Returns a scalar; 0 with a zero gradient when A is empty.
    """
    if video.dim() != 2 or text.dim() != 3 or text.shape[0] != video.shape[0] or text.shape[2] != video.shape[1]:
        raise ValueError(f"milnce_loss needs video (B, D) and text (B, K, D), got {tuple(video.shape)} "
                         f"and {tuple(text.shape)}")
    if not temperature > 0:
        raise ValueError(f"milnce_loss temperature must be > 0, got {temperature}")
    _check_form(form, symmetric, "milnce_loss")
    b, k, d = text.shape
    text_mask = _check_mask(text_mask, (b, k), "milnce_loss text_mask", video.device)
    sample_mask = _check_mask(sample_mask, (b,), "milnce_loss sample_mask", video.device)
    groups = _check_groups(groups, b, "milnce_loss groups", video.device)
    cand = text_mask & sample_mask[:, None]  # (B, K) candidates that take part
    active = cand.any(dim=1)  # (B,)
    with torch.autocast(device_type=video.device.type, enabled=False):
        v, t = _prep(video, normalize), _prep(text, normalize)
        t_all = dist.all_gather_with_grad(t)  # (N, K, D)
        cand_all = dist.all_gather(cand)  # (N, K)
        active_all = cand_all.any(dim=1)  # (N,)
        n = cand_all.shape[0]
        ar = torch.arange(b, device=v.device)
        pos = dist.rank() * b + ar
        same = _same_group(groups, pos)  # (B, N) or None

        # Video side: (B, N*K) scores against every candidate of the global batch.
        logits = (v @ t_all.reshape(n * k, d).t() / temperature)
        logits = logits.masked_fill(~cand_all.reshape(1, n * k), _NEG_INF)
        if same is not None:  # no candidate of a same-video clip is a negative
            logits = logits.masked_fill(same[:, :, None].expand(b, n, k).reshape(b, n * k), _NEG_INF)
        logits = torch.where(active[:, None], logits, torch.zeros_like(logits))
        num = torch.logsumexp(logits.reshape(b, n, k)[ar, pos], dim=1)  # (B,) over k in P_i
        if form == "mean" and not symmetric:
            return _global_mean(torch.logsumexp(logits, dim=1) - num, active, active_all.sum())

        # Text side: (B, K, N) the candidates of clip i against every video of the global batch.
        v_all = dist.all_gather_with_grad(v)  # (N, D)
        logits2 = torch.einsum("bkd,nd->bkn", t, v_all) / temperature
        valid2 = cand[:, :, None] & active_all[None, None, :]
        if form == "joint":  # the positives are already in the video side's block
            valid2 = valid2 & (pos[:, None, None] != torch.arange(n, device=v.device)[None, None, :])
        if same is not None:  # no same-video clip is a negative for clip i's candidates
            valid2 = valid2 & ~same[:, None, :]
        logits2 = logits2.masked_fill(~valid2, _NEG_INF)
        logits2 = torch.where(active[:, None, None], logits2, torch.zeros_like(logits2))
        if form == "joint":
            row = torch.logsumexp(torch.cat([logits, logits2.reshape(b, k * n)], dim=1), dim=1) - num
        else:
            num2 = torch.logsumexp(logits2[ar, :, pos], dim=1)  # (B,) over k in P_i, video i
            row = 0.5 * (torch.logsumexp(logits, dim=1) - num + torch.logsumexp(logits2.reshape(b, k * n), dim=1)
                         - num2)
        return _global_mean(row, active, active_all.sum())


def _get(emb: dict[str, dict[str, torch.Tensor]], modality: str, space: str) -> torch.Tensor | None:
    return emb.get(modality, {}).get(space)


def mmv_loss(emb: dict[str, dict[str, torch.Tensor]], cfg: LossConfig, audio_mask: torch.Tensor | None = None,
             text_mask: torch.Tensor | None = None,
             groups: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MMV objective: ``total = w_va NCE(V_va, A_va) + w_vt MIL-NCE(V_vt, T_vt) + w_at MIL-NCE(A_at, T_at)``.

    ``emb`` is the model output: ``emb["video"]["va"]``, ``emb["audio"]["va"]``, ``emb["video"]["vt"]``
    (B, D) and ``emb["text"]["vt"]`` (B, K, D); for the ``at`` term ``emb["audio"]["at"]`` (B, D) and
    ``emb["text"]["at"]`` (B, K, D). A term is computed when its weight is > 0 and both embeddings are
    present (a missing modality skips its term and its weight). ``audio_mask`` (B,) bool marks clips
    with audio (it masks the va and at terms); ``text_mask`` (B, K) bool marks real candidates (a clip
    with none, e.g. from AudioSet, contributes to the va term only). ``groups`` (B,) integer, the source
    video of each clip (global ids), is passed to every term: same-video pairs are no negatives.
    Temperature, normalisation, the form (``cfg.form``: "joint" by default, "mean") and ``cfg.symmetric``
    come from ``cfg``. Returns ``(total, parts)`` with ``parts`` the detached unweighted terms keyed
    "va", "vt", "at". A term with no valid pair on any rank is 0 with a zero
    gradient. Raises ``ValueError`` when no term can be computed.
    """
    common = {"temperature": cfg.temperature, "normalize": cfg.normalize, "symmetric": cfg.symmetric,
              "form": cfg.form, "groups": groups}
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    v_va, a_va = _get(emb, "video", "va"), _get(emb, "audio", "va")
    if cfg.weight_va > 0 and v_va is not None and a_va is not None:
        terms["va"] = (cfg.weight_va, nce_loss(v_va, a_va, mask=audio_mask, **common))
    v_vt, t_vt = _get(emb, "video", "vt"), _get(emb, "text", "vt")
    if cfg.weight_vt > 0 and v_vt is not None and t_vt is not None:
        terms["vt"] = (cfg.weight_vt, milnce_loss(v_vt, t_vt, text_mask=text_mask, **common))
    a_at, t_at = _get(emb, "audio", "at"), _get(emb, "text", "at")
    if cfg.weight_at > 0 and a_at is not None and t_at is not None:
        terms["at"] = (cfg.weight_at, milnce_loss(a_at, t_at, text_mask=text_mask, sample_mask=audio_mask, **common))
    if not terms:
        present = {m: sorted(v) for m, v in emb.items()}
        raise ValueError(f"mmv_loss: no term can be computed from embeddings {present} with weights "
                         f"va={cfg.weight_va}, vt={cfg.weight_vt}, at={cfg.weight_at}")
    weighted = [w * loss for w, loss in terms.values()]
    total = weighted[0]
    for t in weighted[1:]:
        total = total + t
    parts = {name: loss.detach().float() for name, (_, loss) in terms.items()}
    return total, parts


def silent_audio(audio: torch.Tensor, max_range: float) -> torch.Tensor:
    """(B,) bool: the clips whose log-mel window ``audio`` (B, ...) is flat, ``max - min <= max_range``.

    Digital silence gives exactly 0 (every bin is the log of the front-end's offset), and so does any
    constant waveform (no energy off the DC bin). ``max_range < 0`` marks no clip."""
    if max_range < 0:
        return torch.zeros(audio.shape[0], dtype=torch.bool, device=audio.device)
    flat = audio.detach().reshape(audio.shape[0], -1)
    return (flat.amax(dim=1) - flat.amin(dim=1)) <= max_range
