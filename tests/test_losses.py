"""Losses against brute-force loop references, masking, gradients and mmv_loss wiring, in both forms
(joint and mean); one 2-process check that gathered negatives give the one-process loss in both forms."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from mmv_torch.config import PRESETS, LossConfig
from mmv_torch.losses import milnce_loss, mmv_loss, nce_loss
from tests.helpers import dist_worker_parity as W

# ---------------------------------------------------------------------------------------------
# Brute-force references: plain Python loops over float lists.


def _vecs(t: torch.Tensor, normalize: bool) -> list:
    rows = t.detach().double().tolist()

    def norm(v: list[float]) -> list[float]:
        if not normalize:
            return v
        n = math.sqrt(sum(a * a for a in v))
        return [a / max(n, 1e-12) for a in v]

    if t.dim() == 2:
        return [norm(r) for r in rows]
    return [[norm(c) for c in r] for r in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(p * q for p, q in zip(a, b))


def _negative(groups, i: int, j: int) -> bool:
    """Clip j is a negative for clip i: another clip, of another group (another source video)."""
    return j != i and (groups is None or int(groups[i]) != int(groups[j]))


def ref_nce(x, y, tau=0.07, normalize=True, symmetric=True, mask=None, form="joint", groups=None) -> float:
    xs, ys = _vecs(x, normalize), _vecs(y, normalize)
    keep = [i for i in range(len(xs)) if mask is None or bool(mask[i])]
    if not keep:
        return 0.0

    def e(i: int, j: int) -> float:  # exp(s(x_i, y_j))
        return math.exp(_dot(xs[i], ys[j]) / tau)

    total = 0.0
    for i in keep:
        if form == "joint":
            den = e(i, i)
            for j in keep:
                if _negative(groups, i, j):
                    den += e(i, j) + e(j, i)  # the pairs (x_i, y_j) and (x_j, y_i)
            total += -math.log(e(i, i) / den)
            continue
        l1 = -math.log(e(i, i) / (e(i, i) + sum(e(i, j) for j in keep if _negative(groups, i, j))))
        if symmetric:
            l2 = -math.log(e(i, i) / (e(i, i) + sum(e(j, i) for j in keep if _negative(groups, i, j))))
            l1 = 0.5 * (l1 + l2)
        total += l1
    return total / len(keep)


def ref_milnce(v, t, text_mask=None, sample_mask=None, tau=0.07, normalize=True, symmetric=True,
               form="joint", groups=None) -> float:
    vs, ts = _vecs(v, normalize), _vecs(t, normalize)
    b, k = len(ts), len(ts[0])
    pos = {i: [c for c in range(k) if (text_mask is None or bool(text_mask[i][c]))] for i in range(b)}
    keep = [i for i in range(b) if pos[i] and (sample_mask is None or bool(sample_mask[i]))]
    if not keep:
        return 0.0

    def e(i: int, j: int, c: int) -> float:  # exp(s(video_i, text_jc))
        return math.exp(_dot(vs[i], ts[j][c]) / tau)

    total = 0.0
    for i in keep:
        num = sum(e(i, i, c) for c in pos[i])
        if form == "joint":
            den = num
            for j in keep:
                if not _negative(groups, i, j):
                    continue
                den += sum(e(i, j, c) for c in pos[j])  # clip i against clip j's narrations
                den += sum(e(j, i, c) for c in pos[i])  # clip i's narrations against clip j
            total += -math.log(num / den)
            continue
        den = num + sum(e(i, j, c) for j in keep if _negative(groups, i, j) for c in pos[j])
        loss = -math.log(num / den)
        if symmetric:
            den2 = num + sum(e(j, i, c) for j in keep if _negative(groups, i, j) for c in pos[i])
            loss = 0.5 * (loss - math.log(num / den2))
        total += loss
    return total / len(keep)


FORMS = [("joint", True), ("mean", True), ("mean", False)]
"""(form, symmetric) combinations: the joint form has both directions by construction."""


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# NCE


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("form", "symmetric"), FORMS)
@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
def test_nce_matches_reference(normalize: bool, form: str, symmetric: bool, tau: float) -> None:
    x, y = _rand(6, 5, seed=1), _rand(6, 5, seed=2)
    if not normalize:
        x, y = 0.3 * x, 0.3 * y  # keep exp() in range for the loop reference
    mask = torch.tensor([True, False, True, True, False, True])
    for m in (None, mask):
        got = nce_loss(x, y, temperature=tau, normalize=normalize, symmetric=symmetric, mask=m, form=form)
        want = ref_nce(x, y, tau, normalize, symmetric, m, form)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_nce_forms_differ_and_default_is_joint() -> None:
    x, y = _rand(5, 4, seed=14), _rand(5, 4, seed=15)
    joint, mean = nce_loss(x, y, form="joint"), nce_loss(x, y, form="mean")
    assert abs(joint.item() - mean.item()) > 1e-2  # different objectives
    torch.testing.assert_close(nce_loss(x, y), joint, rtol=0, atol=0)
    # The joint denominator holds 2B - 1 pairs, the positive once: at an infinite temperature the loss is
    # log(2B - 1) (log(B) for the mean form).
    assert nce_loss(x, y, temperature=1e6).item() == pytest.approx(math.log(9), rel=1e-5)
    assert nce_loss(x, y, temperature=1e6, form="mean").item() == pytest.approx(math.log(5), rel=1e-5)


def test_nce_joint_is_one_softmax_over_both_directions() -> None:
    # Written from the definition with a matrix, independently of the implementation's masking: for row i the
    # logits are row i of S (x_i against every y_j) and column i of S without S_ii (every x_j against y_i).
    x, y = _rand(4, 3, seed=16), _rand(4, 3, seed=17)
    s = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(y, dim=1).t() / 0.1
    rows = []
    for i in range(4):
        others = torch.cat([s[:i, i], s[i + 1:, i]])
        logits = torch.cat([s[i], others])
        rows.append(-torch.log_softmax(logits, dim=0)[i])
    torch.testing.assert_close(nce_loss(x, y, temperature=0.1), torch.stack(rows).mean(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_nce_masking_equals_dropping(form: str) -> None:
    x = _rand(7, 4, seed=3).requires_grad_()
    y = _rand(7, 4, seed=4).requires_grad_()
    mask = torch.tensor([True, True, False, True, False, False, True])
    masked = nce_loss(x, y, mask=mask, form=form)
    gx, gy = torch.autograd.grad(masked, (x, y))
    xd, yd = x.detach()[mask].clone().requires_grad_(), y.detach()[mask].clone().requires_grad_()
    dropped = nce_loss(xd, yd, form=form)
    gxd, gyd = torch.autograd.grad(dropped, (xd, yd))
    torch.testing.assert_close(masked, dropped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx[mask], gxd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gy[mask], gyd, rtol=1e-10, atol=1e-12)
    assert torch.all(gx[~mask] == 0) and torch.all(gy[~mask] == 0)


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_nce_temperature_scaling(form: str) -> None:
    x, y = _rand(5, 3, seed=5), _rand(5, 3, seed=6)
    # Without normalisation, scaling one side by c is the same as dividing tau by c.
    a = nce_loss(x, y, temperature=0.2, normalize=False, form=form)
    b = nce_loss(2.5 * x, y, temperature=0.5, normalize=False, form=form)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Aligned pairs: a lower temperature gives a sharper softmax and a lower loss.
    e = _rand(5, 3, seed=7)
    losses = [nce_loss(e, e, temperature=tau, form=form) for tau in (0.05, 0.5, 5.0)]
    assert losses[0] < losses[1] < losses[2]


def test_nce_gradcheck() -> None:
    x = _rand(4, 3, seed=8).requires_grad_()
    y = _rand(4, 3, seed=9).requires_grad_()
    mask = torch.tensor([True, False, True, True])
    for form, sym in FORMS:
        assert torch.autograd.gradcheck(
            lambda a, b, f=form, s=sym: nce_loss(a, b, temperature=0.3, symmetric=s, mask=mask, form=f), (x, y))
        assert torch.autograd.gradcheck(
            lambda a, b, f=form: nce_loss(a, b, temperature=0.5, normalize=False, form=f), (x, y))


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_nce_all_masked_is_zero_without_nan(form: str) -> None:
    x = _rand(4, 3, seed=10, dtype=torch.float32).requires_grad_()
    y = _rand(4, 3, seed=11, dtype=torch.float32).requires_grad_()
    loss = nce_loss(x, y, mask=torch.zeros(4, dtype=torch.bool), form=form)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(x.grad == 0) and torch.all(y.grad == 0)


def test_nce_bad_inputs() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        nce_loss(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="mask"):
        nce_loss(x, x, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        nce_loss(x, x, mask=torch.ones(4))
    with pytest.raises(ValueError, match="temperature"):
        nce_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="form must be one of"):
        nce_loss(x, x, form="sum")
    with pytest.raises(ValueError, match="needs form='mean'"):
        nce_loss(x, x, symmetric=False)


def test_nce_half_precision_and_autocast() -> None:
    x, y = _rand(6, 8, seed=12, dtype=torch.float32), _rand(6, 8, seed=13, dtype=torch.float32)
    ref = nce_loss(x, y)
    got = nce_loss(x.bfloat16(), y.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), abs=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got2 = nce_loss(x, y)
    assert got2.dtype == torch.float32
    torch.testing.assert_close(got2, ref)


# ---------------------------------------------------------------------------------------------
# MIL-NCE


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_milnce_matches_reference(form: str, symmetric: bool, normalize: bool) -> None:
    v, t = _rand(5, 4, seed=20), _rand(5, 3, 4, seed=21)
    if not normalize:
        v, t = 0.3 * v, 0.3 * t
    text_mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False],
                              [True, True, True], [False, True, True]])
    sample_mask = torch.tensor([True, True, True, False, True])
    for tm, sm in ((None, None), (text_mask, None), (text_mask, sample_mask), (None, sample_mask)):
        for tau in (0.07, 1.0):
            got = milnce_loss(v, t, text_mask=tm, sample_mask=sm, temperature=tau, normalize=normalize,
                              symmetric=symmetric, form=form)
            want = ref_milnce(v, t, tm, sm, tau, normalize, symmetric, form)
            assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
def test_milnce_k1_equals_nce(form: str, symmetric: bool) -> None:
    v, t = _rand(6, 4, seed=22).requires_grad_(), _rand(6, 1, 4, seed=23).requires_grad_()
    mask = torch.tensor([True, False, True, True, True, False])
    a = milnce_loss(v, t, text_mask=mask[:, None], symmetric=symmetric, temperature=0.1, form=form)
    ga = torch.autograd.grad(a, (v, t))
    b = nce_loss(v, t[:, 0], mask=mask, symmetric=symmetric, temperature=0.1, form=form)
    gb = torch.autograd.grad(b, (v, t))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    # sample_mask and text_mask express the same thing for K = 1.
    c = milnce_loss(v, t, sample_mask=mask, symmetric=symmetric, temperature=0.1, form=form)
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_milnce_masking_equals_dropping(form: str) -> None:
    v = _rand(6, 4, seed=24).requires_grad_()
    t = _rand(6, 3, 4, seed=25).requires_grad_()
    text_mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True],
                              [True, False, False], [False, True, False], [True, True, False]])
    sample_mask = torch.tensor([True, True, True, False, True, True])
    keep = text_mask.any(1) & sample_mask
    masked = milnce_loss(v, t, text_mask=text_mask, sample_mask=sample_mask, form=form)
    gv, gt = torch.autograd.grad(masked, (v, t))
    vd = v.detach()[keep].clone().requires_grad_()
    td = t.detach()[keep].clone().requires_grad_()
    dropped = milnce_loss(vd, td, text_mask=text_mask[keep], form=form)
    gvd, gtd = torch.autograd.grad(dropped, (vd, td))
    torch.testing.assert_close(masked, dropped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gv[keep], gvd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt[keep], gtd, rtol=1e-10, atol=1e-12)
    assert torch.all(gv[~keep] == 0) and torch.all(gt[~keep] == 0)
    assert torch.all(gt[~text_mask] == 0)  # invalid candidates get no gradient
    # The content of invalid candidates does not matter.
    t2 = t.detach().clone()
    t2[~text_mask] = 100.0 * torch.randn(int((~text_mask).sum()), 4, dtype=torch.float64)
    torch.testing.assert_close(milnce_loss(v, t2, text_mask=text_mask, sample_mask=sample_mask, form=form), masked)


def test_milnce_gradcheck() -> None:
    v = _rand(3, 4, seed=26).requires_grad_()
    t = _rand(3, 2, 4, seed=27).requires_grad_()
    tm = torch.tensor([[True, False], [True, True], [False, True]])
    for form, sym in FORMS:
        assert torch.autograd.gradcheck(
            lambda a, b, f=form, s=sym: milnce_loss(a, b, text_mask=tm, temperature=0.3, symmetric=s, form=f), (v, t))
        assert torch.autograd.gradcheck(
            lambda a, b, f=form: milnce_loss(a, b, temperature=0.7, normalize=False, form=f), (v, t))


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_milnce_all_masked_and_zero_padding_no_nan(form: str) -> None:
    v = _rand(4, 3, seed=28, dtype=torch.float32).requires_grad_()
    t = _rand(4, 2, 3, seed=29, dtype=torch.float32)
    t[:, 1] = 0.0  # zero padding vectors, normalised with normalize=True
    t.requires_grad_()
    loss = milnce_loss(v, t, text_mask=torch.zeros(4, 2, dtype=torch.bool), form=form)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(v.grad == 0) and torch.all(t.grad == 0)
    v.grad = t.grad = None
    tm = torch.tensor([[True, False]] * 4)
    loss = milnce_loss(v, t, text_mask=tm, form=form)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()


def test_milnce_bad_inputs() -> None:
    v, t = torch.randn(4, 3), torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"\(B, K, D\)"):
        milnce_loss(v, t[:, 0])
    with pytest.raises(ValueError, match="text_mask"):
        milnce_loss(v, t, text_mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sample_mask"):
        milnce_loss(v, t, sample_mask=torch.ones(5, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# mmv_loss


def _emb(b: int = 5, k: int = 3, seed: int = 30) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "video": {"va": _rand(b, 6, seed=seed), "vt": _rand(b, 4, seed=seed + 1)},
        "audio": {"va": _rand(b, 6, seed=seed + 2), "at": _rand(b, 5, seed=seed + 3)},
        "text": {"vt": _rand(b, k, 4, seed=seed + 4), "at": _rand(b, k, 5, seed=seed + 5)},
    }


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_mmv_loss_is_weighted_sum_of_terms(form: str) -> None:
    emb = _emb()
    am = torch.tensor([True, False, True, True, True])
    tm = torch.tensor([[True, True, False], [False, False, False], [True, False, False],
                       [True, True, True], [False, True, False]])
    cfg = LossConfig(temperature=0.1, weight_va=0.5, weight_vt=2.0, weight_at=0.25, form=form)
    total, parts = mmv_loss(emb, cfg, audio_mask=am, text_mask=tm)
    va = nce_loss(emb["video"]["va"], emb["audio"]["va"], temperature=0.1, mask=am, form=form)
    vt = milnce_loss(emb["video"]["vt"], emb["text"]["vt"], text_mask=tm, temperature=0.1, form=form)
    at = milnce_loss(emb["audio"]["at"], emb["text"]["at"], text_mask=tm, sample_mask=am, temperature=0.1,
                     form=form)
    assert set(parts) == {"va", "vt", "at"}
    torch.testing.assert_close(parts["va"], va.float())
    torch.testing.assert_close(parts["vt"], vt.float())
    torch.testing.assert_close(parts["at"], at.float())
    torch.testing.assert_close(total, 0.5 * va + 2.0 * vt + 0.25 * at)
    # The at term against the loop reference: clips without audio are dropped from it.
    assert parts["at"].item() == pytest.approx(
        ref_milnce(emb["audio"]["at"], emb["text"]["at"], tm, am, 0.1, True, True, form), rel=1e-6)
    assert parts["va"].item() == pytest.approx(
        ref_nce(emb["video"]["va"], emb["audio"]["va"], 0.1, True, True, am, form), rel=1e-6)


def test_loss_config_form_default_and_checks() -> None:
    assert LossConfig().form == "joint"
    assert {name: cfg.loss.form for name, cfg in PRESETS.items()} == dict.fromkeys(PRESETS, "joint")
    assert LossConfig(form="mean", symmetric=False).symmetric is False
    with pytest.raises(ValueError, match="loss.form must be"):
        LossConfig(form="sum")
    with pytest.raises(ValueError, match="needs loss.form='mean'"):
        LossConfig(symmetric=False)


def test_mmv_loss_skips_absent_terms_and_zero_weights() -> None:
    emb = _emb()
    total, parts = mmv_loss(emb, LossConfig())  # weight_at = 0 by default
    assert set(parts) == {"va", "vt"}
    torch.testing.assert_close(total, (parts["va"] + parts["vt"]).double())
    no_text = {"video": emb["video"], "audio": emb["audio"]}
    total, parts = mmv_loss(no_text, LossConfig(weight_at=1.0))
    assert set(parts) == {"va"}
    total, parts = mmv_loss({"video": emb["video"], "text": emb["text"]}, LossConfig(weight_at=1.0))
    assert set(parts) == {"vt"}
    with pytest.raises(ValueError, match="no term"):
        mmv_loss({"video": emb["video"]}, LossConfig())


def test_mmv_loss_everything_masked_gives_zero_grad() -> None:
    emb = _emb(b=4, k=2)
    leaves = [t.requires_grad_() for m in emb.values() for t in m.values()]
    cfg = LossConfig(weight_at=1.0)
    total, parts = mmv_loss(emb, cfg, audio_mask=torch.zeros(4, dtype=torch.bool),
                            text_mask=torch.zeros(4, 2, dtype=torch.bool))
    total.backward()
    assert total.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    for leaf in leaves:
        assert leaf.grad is not None and torch.all(leaf.grad == 0)


# ---------------------------------------------------------------------------------------------
# Groups: clips of the same source video are never negatives of each other

GROUPS = torch.tensor([5, 2, 5, 7, 2, 5])
"""Six clips from three videos (three clips of video 5, two of video 2, one of video 7); ids are arbitrary."""


def _grads(loss: torch.Tensor, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
def test_distinct_groups_equal_no_groups_exactly(form: str, symmetric: bool) -> None:
    x, y = _rand(6, 5, seed=40).requires_grad_(), _rand(6, 5, seed=41).requires_grad_()
    v, t = _rand(6, 4, seed=42).requires_grad_(), _rand(6, 3, 4, seed=43).requires_grad_()
    mask = torch.tensor([True, False, True, True, True, True])
    tm = torch.rand(6, 3, generator=torch.Generator().manual_seed(44)) > 0.3
    distinct = torch.tensor([9, 3, 100, 0, 4, 8])
    for groups in (distinct, distinct.int()):
        common = {"symmetric": symmetric, "form": form, "temperature": 0.2}
        a, b = nce_loss(x, y, mask=mask, **common), nce_loss(x, y, mask=mask, groups=groups, **common)
        assert torch.equal(a, b)
        for p, q in zip(_grads(a, x, y), _grads(b, x, y)):
            assert torch.equal(p, q)
        a = milnce_loss(v, t, text_mask=tm, sample_mask=mask, **common)
        b = milnce_loss(v, t, text_mask=tm, sample_mask=mask, groups=groups, **common)
        assert torch.equal(a, b)
        for p, q in zip(_grads(a, v, t), _grads(b, v, t)):
            assert torch.equal(p, q)


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_groups_match_reference(form: str, symmetric: bool, normalize: bool) -> None:
    x, y = _rand(6, 5, seed=45), _rand(6, 5, seed=46)
    v, t = _rand(6, 4, seed=47), _rand(6, 3, 4, seed=48)
    if not normalize:
        x, y, v, t = 0.3 * x, 0.3 * y, 0.3 * v, 0.3 * t
    mask = torch.tensor([True, True, False, True, True, True])  # one clip of video 5 has no audio
    tm = torch.tensor([[True, False, True], [True, True, True], [False, False, False],
                       [True, False, False], [False, True, True], [True, True, False]])
    for m in (None, mask):
        got = nce_loss(x, y, temperature=0.1, normalize=normalize, symmetric=symmetric, mask=m, form=form,
                       groups=GROUPS)
        want = ref_nce(x, y, 0.1, normalize, symmetric, m, form, groups=GROUPS)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
        assert abs(want - ref_nce(x, y, 0.1, normalize, symmetric, m, form)) > 1e-3  # the groups matter
        got = milnce_loss(v, t, text_mask=tm, sample_mask=m, temperature=0.1, normalize=normalize,
                          symmetric=symmetric, form=form, groups=GROUPS)
        want = ref_milnce(v, t, tm, m, 0.1, normalize, symmetric, form, groups=GROUPS)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
        assert abs(want - ref_milnce(v, t, tm, m, 0.1, normalize, symmetric, form)) > 1e-3


def _twin_clips(k: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips 0 and 1 (one video) are identical, clips 2 and 3 orthogonal to them and to each other: x = y.

    With the twins excluded from each other's negatives in BOTH directions every positive dominates its
    softmax (loss ~ 1e-8 at tau = 0.05); a twin left in either direction costs each twin row >= log 2."""
    e = torch.eye(4, dtype=torch.float64)
    x = torch.stack([e[0], e[0], e[1], e[2]])
    t = x[:, None, :].expand(4, k, 4).clone() if k else x.clone()
    return x, t, torch.tensor([3, 3, 1, 2])


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
def test_groups_excluded_in_both_directions(form: str, symmetric: bool) -> None:
    x, y, groups = _twin_clips()
    common = {"temperature": 0.05, "symmetric": symmetric, "form": form}
    assert nce_loss(x, y, **common).item() > 0.3
    assert nce_loss(x, y, groups=groups, **common).item() < 1e-6
    v, t, groups = _twin_clips(k=2)
    assert milnce_loss(v, t, **common).item() > 0.3
    assert milnce_loss(v, t, groups=groups, **common).item() < 1e-6
    # One whole batch from a single video: no negative at all, the loss is exactly 0 with a zero gradient.
    x, y = _rand(4, 3, seed=49).requires_grad_(), _rand(4, 3, seed=50).requires_grad_()
    one = torch.zeros(4, dtype=torch.int64)
    loss = nce_loss(x, y, groups=one, **common) + milnce_loss(x, y[:, None], groups=one, **common)
    gx, gy = _grads(loss, x, y)
    assert loss.item() == 0.0 and torch.all(gx == 0) and torch.all(gy == 0)


def _orthogonal_to(others: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A direction u with <u, o> = 0 for every row o of ``others`` and <u, target> != 0."""
    q, _ = torch.linalg.qr(others.t())  # orthonormal basis of the span of the others
    u = target - q @ (q.t() @ target)
    assert u.norm() > 1e-3
    return u


@pytest.mark.parametrize(("form", "symmetric"), FORMS)
def test_groups_excluded_logits_get_no_gradient(form: str, symmetric: bool) -> None:
    # Without normalisation, x_a moves along u orthogonal to every y_j but y_b: only the score s(x_a, y_b)
    # changes. For a same-video pair (a, b) that score is excluded, so the loss and the directional
    # derivative <dL/dx_a, u> (= dL/ds(x_a, y_b) <y_b, u> / tau) must be 0; without groups they are not.
    b_, d = 6, 8
    x, y = 0.5 * _rand(b_, d, seed=51), 0.5 * _rand(b_, d, seed=52)
    v, t = 0.5 * _rand(b_, d, seed=53), 0.5 * _rand(b_, 1, d, seed=54)
    common = {"temperature": 0.3, "normalize": False, "symmetric": symmetric, "form": form}
    for a, b in ((0, 2), (2, 0), (5, 0), (1, 4), (4, 1)):
        assert GROUPS[a] == GROUPS[b]
        for loss_fn, rows, cols in ((nce_loss, x, y), (milnce_loss, v, t)):
            flat = cols.reshape(b_, d)
            u = _orthogonal_to(torch.cat([flat[:b], flat[b + 1:]]), flat[b])
            for groups, zero in ((GROUPS, True), (None, False)):
                r = rows.clone().requires_grad_()
                loss = loss_fn(r, cols, groups=groups, **common)
                (g,) = _grads(loss, r)
                moved = rows.clone()
                moved[a] += 3.0 * u
                delta = (loss_fn(moved, cols, groups=groups, **common) - loss).abs().item()
                if zero:
                    assert abs(g[a] @ u).item() < 1e-12 and delta < 1e-12, (loss_fn.__name__, a, b)
                else:
                    assert abs(g[a] @ u).item() > 1e-4 and delta > 1e-4, (loss_fn.__name__, a, b)
            # The same from the other side: y_b moves along w orthogonal to every x_j but x_a.
            w = _orthogonal_to(torch.cat([rows[:a], rows[a + 1:]]), rows[a])
            c = cols.clone().requires_grad_()
            (g,) = _grads(loss_fn(r.detach(), c, groups=GROUPS, **common), c)
            assert abs(g.reshape(b_, d)[b] @ w).item() < 1e-12, (loss_fn.__name__, a, b)


def test_groups_gradcheck() -> None:
    x, y = _rand(5, 3, seed=55).requires_grad_(), _rand(5, 3, seed=56).requires_grad_()
    t = _rand(5, 2, 3, seed=57).requires_grad_()
    groups = torch.tensor([1, 0, 1, 2, 0])
    for form, sym in FORMS:
        assert torch.autograd.gradcheck(
            lambda a, b, f=form, s=sym: nce_loss(a, b, temperature=0.3, symmetric=s, form=f, groups=groups), (x, y))
        assert torch.autograd.gradcheck(
            lambda a, b, f=form, s=sym: milnce_loss(a, b, temperature=0.3, symmetric=s, form=f, groups=groups),
            (x, t))


@pytest.mark.parametrize("form", ["joint", "mean"])
def test_mmv_loss_passes_groups_to_every_term(form: str) -> None:
    emb = _emb(b=6)
    am = torch.tensor([True, True, False, True, True, True])
    tm = torch.rand(6, 3, generator=torch.Generator().manual_seed(58)) > 0.3
    cfg = LossConfig(temperature=0.1, weight_va=0.5, weight_vt=2.0, weight_at=0.25, form=form)
    total, parts = mmv_loss(emb, cfg, audio_mask=am, text_mask=tm, groups=GROUPS)
    _, plain = mmv_loss(emb, cfg, audio_mask=am, text_mask=tm)
    va = nce_loss(emb["video"]["va"], emb["audio"]["va"], temperature=0.1, mask=am, form=form, groups=GROUPS)
    vt = milnce_loss(emb["video"]["vt"], emb["text"]["vt"], text_mask=tm, temperature=0.1, form=form, groups=GROUPS)
    at = milnce_loss(emb["audio"]["at"], emb["text"]["at"], text_mask=tm, sample_mask=am, temperature=0.1,
                     form=form, groups=GROUPS)
    torch.testing.assert_close(total, 0.5 * va + 2.0 * vt + 0.25 * at, rtol=1e-12, atol=1e-12)
    for name, term in (("va", va), ("vt", vt), ("at", at)):
        torch.testing.assert_close(parts[name], term.float())
        assert abs(parts[name].item() - plain[name].item()) > 1e-3, name


def test_groups_bad_inputs() -> None:
    x, t = torch.randn(4, 3), torch.randn(4, 2, 3)
    for bad, match in ((torch.zeros(4), "must be an integer tensor, got dtype torch.float32"),
                       (torch.zeros(4, dtype=torch.bool), "must be an integer tensor, got dtype torch.bool"),
                       (torch.zeros(3, dtype=torch.int64), r"must have shape \(4,\), got \(3,\)"),
                       (torch.zeros(4, 1, dtype=torch.int64), r"must have shape \(4,\), got \(4, 1\)")):
        with pytest.raises(ValueError, match="^nce_loss groups " + match):
            nce_loss(x, x, groups=bad)
        with pytest.raises(ValueError, match="^milnce_loss groups " + match):
            milnce_loss(x, t, groups=bad)
        with pytest.raises(ValueError, match="groups " + match):
            mmv_loss(_emb(b=4), LossConfig(), groups=bad)


# ---------------------------------------------------------------------------------------------
# Two processes (gloo): negatives gathered from the other rank, both forms, with and without groups

SPLIT_GROUPS = torch.tensor([0, 1, 0, 2, 2, 3, 1, 3])
"""Groups of the 8 clips of :func:`dist_worker_parity.loss_inputs` (2 ranks x 4): videos 0 and 3 twice on one
rank, videos 1 and 2 on both ranks (global ids: the same video wherever it is). Only rank 1 has audio, so
the va and at terms see video 3; the vt term sees the videos split over the ranks."""


def _forms_worker(rank: int, world_size: int) -> dict[str, Any]:
    """Each rank scores its share of :func:`dist_worker_parity.loss_inputs` under both forms, without and with
    :data:`SPLIT_GROUPS`."""
    li = W.loss_inputs(world_size)
    b = li["audio_mask"].shape[0] // world_size
    sl = slice(rank * b, (rank + 1) * b)
    out: dict[str, Any] = {}
    for form in ("joint", "mean"):
        for groups in (None, SPLIT_GROUPS):
            leaves = {m: {s: t[sl].clone().requires_grad_() for s, t in d.items()} for m, d in li["emb"].items()}
            cfg = dataclasses.replace(li["cfg"], form=form)
            total, parts = mmv_loss(leaves, cfg, audio_mask=li["audio_mask"][sl], text_mask=li["text_mask"][sl],
                                    groups=None if groups is None else groups[sl])
            total.backward()
            out[form, groups is not None] = {"total": total.detach(), "parts": parts,
                                             "grads": {m: {s: t.grad for s, t in d.items()} for m, d in leaves.items()}}
    return out


@pytest.fixture(scope="module")
def two_process_results() -> list[dict[str, Any]]:
    return W.spawn(_forms_worker, 2, timeout_s=120)


@pytest.mark.parametrize("with_groups", [False, True])
def test_both_forms_two_processes_equal_one_process(two_process_results: list[dict[str, Any]],
                                                     with_groups: bool) -> None:
    li = W.loss_inputs(2)
    b = li["audio_mask"].shape[0] // 2
    groups = SPLIT_GROUPS if with_groups else None
    for form in ("joint", "mean"):
        leaves = {m: {s: t.clone().requires_grad_() for s, t in d.items()} for m, d in li["emb"].items()}
        cfg = dataclasses.replace(li["cfg"], form=form)
        total, parts = mmv_loss(leaves, cfg, audio_mask=li["audio_mask"], text_mask=li["text_mask"], groups=groups)
        total.backward()
        for name, want in (
                ("vt", ref_milnce(li["emb"]["video"]["vt"], li["emb"]["text"]["vt"], li["text_mask"], None,
                                  cfg.temperature, True, True, form, groups=groups)),
                ("va", ref_nce(li["emb"]["video"]["va"], li["emb"]["audio"]["va"], cfg.temperature, True, True,
                               li["audio_mask"], form, groups=groups))):
            assert parts[name].item() == pytest.approx(want, rel=1e-6)
        for r, res in enumerate(two_process_results):
            got = res[form, with_groups]
            torch.testing.assert_close(got["total"], total.detach(), rtol=1e-12, atol=1e-12)
            for m, d in leaves.items():  # without DDP a rank's gradient is W times its share
                for s, t in d.items():
                    torch.testing.assert_close(got["grads"][m][s], 2 * t.grad[r * b:(r + 1) * b],
                                               rtol=1e-10, atol=1e-12, msg=f"{form} rank {r} {m}/{s}")
        if with_groups:  # the cross-rank groups change every term
            _, plain = mmv_loss(li["emb"], cfg, audio_mask=li["audio_mask"], text_mask=li["text_mask"])
            for name in ("va", "vt", "at"):
                assert abs(parts[name].item() - plain[name].item()) > 1e-3, (form, name)
