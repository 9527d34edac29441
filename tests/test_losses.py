"""Losses against brute-force loop references, masking, gradients and mmv_loss wiring (one process)."""

from __future__ import annotations

import math

import pytest
import torch

from mmv_torch.config import LossConfig
from mmv_torch.losses import milnce_loss, mmv_loss, nce_loss

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


def ref_nce(x, y, tau=0.07, normalize=True, symmetric=True, mask=None) -> float:
    xs, ys = _vecs(x, normalize), _vecs(y, normalize)
    keep = [i for i in range(len(xs)) if mask is None or bool(mask[i])]
    if not keep:
        return 0.0
    total = 0.0
    for i in keep:
        l1 = -math.log(math.exp(_dot(xs[i], ys[i]) / tau) / sum(math.exp(_dot(xs[i], ys[j]) / tau) for j in keep))
        if symmetric:
            l2 = -math.log(math.exp(_dot(ys[i], xs[i]) / tau) / sum(math.exp(_dot(ys[i], xs[j]) / tau) for j in keep))
            l1 = 0.5 * (l1 + l2)
        total += l1
    return total / len(keep)


def ref_milnce(v, t, text_mask=None, sample_mask=None, tau=0.07, normalize=True, symmetric=True) -> float:
    vs, ts = _vecs(v, normalize), _vecs(t, normalize)
    b, k = len(ts), len(ts[0])
    pos = {i: [c for c in range(k) if (text_mask is None or bool(text_mask[i][c]))] for i in range(b)}
    keep = [i for i in range(b) if pos[i] and (sample_mask is None or bool(sample_mask[i]))]
    if not keep:
        return 0.0
    total = 0.0
    for i in keep:
        num = sum(math.exp(_dot(vs[i], ts[i][c]) / tau) for c in pos[i])
        den = sum(math.exp(_dot(vs[i], ts[j][c]) / tau) for j in keep for c in pos[j])
        loss = -math.log(num / den)
        if symmetric:
            den2 = sum(math.exp(_dot(vs[j], ts[i][c]) / tau) for j in keep for c in pos[i])
            loss = 0.5 * (loss - math.log(num / den2))
        total += loss
    return total / len(keep)


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# NCE


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
def test_nce_matches_reference(normalize: bool, symmetric: bool, tau: float) -> None:
    x, y = _rand(6, 5, seed=1), _rand(6, 5, seed=2)
    if not normalize:
        x, y = 0.3 * x, 0.3 * y  # keep exp() in range for the loop reference
    mask = torch.tensor([True, False, True, True, False, True])
    for m in (None, mask):
        got = nce_loss(x, y, temperature=tau, normalize=normalize, symmetric=symmetric, mask=m)
        assert got.item() == pytest.approx(ref_nce(x, y, tau, normalize, symmetric, m), rel=1e-10, abs=1e-12)


def test_nce_masking_equals_dropping() -> None:
    x = _rand(7, 4, seed=3).requires_grad_()
    y = _rand(7, 4, seed=4).requires_grad_()
    mask = torch.tensor([True, True, False, True, False, False, True])
    masked = nce_loss(x, y, mask=mask)
    gx, gy = torch.autograd.grad(masked, (x, y))
    xd, yd = x.detach()[mask].clone().requires_grad_(), y.detach()[mask].clone().requires_grad_()
    dropped = nce_loss(xd, yd)
    gxd, gyd = torch.autograd.grad(dropped, (xd, yd))
    torch.testing.assert_close(masked, dropped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx[mask], gxd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gy[mask], gyd, rtol=1e-10, atol=1e-12)
    assert torch.all(gx[~mask] == 0) and torch.all(gy[~mask] == 0)


def test_nce_temperature_scaling() -> None:
    x, y = _rand(5, 3, seed=5), _rand(5, 3, seed=6)
    # Without normalisation, scaling one side by c is the same as dividing tau by c.
    a = nce_loss(x, y, temperature=0.2, normalize=False)
    b = nce_loss(2.5 * x, y, temperature=0.5, normalize=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Aligned pairs: a lower temperature gives a sharper softmax and a lower loss.
    e = _rand(5, 3, seed=7)
    assert nce_loss(e, e, temperature=0.05) < nce_loss(e, e, temperature=0.5) < nce_loss(e, e, temperature=5.0)
    # An infinite temperature limit tends to log(B).
    assert nce_loss(e, e, temperature=1e6).item() == pytest.approx(math.log(5), rel=1e-5)


def test_nce_gradcheck() -> None:
    x = _rand(4, 3, seed=8).requires_grad_()
    y = _rand(4, 3, seed=9).requires_grad_()
    mask = torch.tensor([True, False, True, True])
    for sym in (True, False):
        assert torch.autograd.gradcheck(lambda a, b, s=sym: nce_loss(a, b, temperature=0.3, symmetric=s, mask=mask),
                                        (x, y))
    assert torch.autograd.gradcheck(lambda a, b: nce_loss(a, b, temperature=0.5, normalize=False), (x, y))


def test_nce_all_masked_is_zero_without_nan() -> None:
    x = _rand(4, 3, seed=10, dtype=torch.float32).requires_grad_()
    y = _rand(4, 3, seed=11, dtype=torch.float32).requires_grad_()
    loss = nce_loss(x, y, mask=torch.zeros(4, dtype=torch.bool))
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


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_milnce_matches_reference(symmetric: bool, normalize: bool) -> None:
    v, t = _rand(5, 4, seed=20), _rand(5, 3, 4, seed=21)
    if not normalize:
        v, t = 0.3 * v, 0.3 * t
    text_mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False],
                              [True, True, True], [False, True, True]])
    sample_mask = torch.tensor([True, True, True, False, True])
    for tm, sm in ((None, None), (text_mask, None), (text_mask, sample_mask), (None, sample_mask)):
        for tau in (0.07, 1.0):
            got = milnce_loss(v, t, text_mask=tm, sample_mask=sm, temperature=tau, normalize=normalize,
                              symmetric=symmetric)
            want = ref_milnce(v, t, tm, sm, tau, normalize, symmetric)
            assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_milnce_k1_equals_nce(symmetric: bool) -> None:
    v, t = _rand(6, 4, seed=22).requires_grad_(), _rand(6, 1, 4, seed=23).requires_grad_()
    mask = torch.tensor([True, False, True, True, True, False])
    a = milnce_loss(v, t, text_mask=mask[:, None], symmetric=symmetric, temperature=0.1)
    ga = torch.autograd.grad(a, (v, t))
    b = nce_loss(v, t[:, 0], mask=mask, symmetric=symmetric, temperature=0.1)
    gb = torch.autograd.grad(b, (v, t))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    # sample_mask and text_mask express the same thing for K = 1.
    c = milnce_loss(v, t, sample_mask=mask, symmetric=symmetric, temperature=0.1)
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


def test_milnce_masking_equals_dropping() -> None:
    v = _rand(6, 4, seed=24).requires_grad_()
    t = _rand(6, 3, 4, seed=25).requires_grad_()
    text_mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True],
                              [True, False, False], [False, True, False], [True, True, False]])
    sample_mask = torch.tensor([True, True, True, False, True, True])
    keep = text_mask.any(1) & sample_mask
    masked = milnce_loss(v, t, text_mask=text_mask, sample_mask=sample_mask)
    gv, gt = torch.autograd.grad(masked, (v, t))
    vd = v.detach()[keep].clone().requires_grad_()
    td = t.detach()[keep].clone().requires_grad_()
    dropped = milnce_loss(vd, td, text_mask=text_mask[keep])
    gvd, gtd = torch.autograd.grad(dropped, (vd, td))
    torch.testing.assert_close(masked, dropped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gv[keep], gvd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt[keep], gtd, rtol=1e-10, atol=1e-12)
    assert torch.all(gv[~keep] == 0) and torch.all(gt[~keep] == 0)
    assert torch.all(gt[~text_mask] == 0)  # invalid candidates get no gradient
    # The content of invalid candidates does not matter.
    t2 = t.detach().clone()
    t2[~text_mask] = 100.0 * torch.randn(int((~text_mask).sum()), 4, dtype=torch.float64)
    torch.testing.assert_close(milnce_loss(v, t2, text_mask=text_mask, sample_mask=sample_mask), masked)


def test_milnce_gradcheck() -> None:
    v = _rand(3, 4, seed=26).requires_grad_()
    t = _rand(3, 2, 4, seed=27).requires_grad_()
    tm = torch.tensor([[True, False], [True, True], [False, True]])
    for sym in (True, False):
        assert torch.autograd.gradcheck(
            lambda a, b, s=sym: milnce_loss(a, b, text_mask=tm, temperature=0.3, symmetric=s), (v, t))
    assert torch.autograd.gradcheck(lambda a, b: milnce_loss(a, b, temperature=0.7, normalize=False), (v, t))


def test_milnce_all_masked_and_zero_padding_no_nan() -> None:
    v = _rand(4, 3, seed=28, dtype=torch.float32).requires_grad_()
    t = _rand(4, 2, 3, seed=29, dtype=torch.float32)
    t[:, 1] = 0.0  # zero padding vectors, normalised with normalize=True
    t.requires_grad_()
    loss = milnce_loss(v, t, text_mask=torch.zeros(4, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(v.grad == 0) and torch.all(t.grad == 0)
    v.grad = t.grad = None
    tm = torch.tensor([[True, False]] * 4)
    loss = milnce_loss(v, t, text_mask=tm)
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


def test_mmv_loss_is_weighted_sum_of_terms() -> None:
    emb = _emb()
    am = torch.tensor([True, False, True, True, True])
    tm = torch.tensor([[True, True, False], [False, False, False], [True, False, False],
                       [True, True, True], [False, True, False]])
    cfg = LossConfig(temperature=0.1, weight_va=0.5, weight_vt=2.0, weight_at=0.25)
    total, parts = mmv_loss(emb, cfg, audio_mask=am, text_mask=tm)
    va = nce_loss(emb["video"]["va"], emb["audio"]["va"], temperature=0.1, mask=am)
    vt = milnce_loss(emb["video"]["vt"], emb["text"]["vt"], text_mask=tm, temperature=0.1)
    at = milnce_loss(emb["audio"]["at"], emb["text"]["at"], text_mask=tm, sample_mask=am, temperature=0.1)
    assert set(parts) == {"va", "vt", "at"}
    torch.testing.assert_close(parts["va"], va.float())
    torch.testing.assert_close(parts["vt"], vt.float())
    torch.testing.assert_close(parts["at"], at.float())
    torch.testing.assert_close(total, 0.5 * va + 2.0 * vt + 0.25 * at)
    # The at term against the loop reference: clips without audio are dropped from it.
    assert parts["at"].item() == pytest.approx(
        ref_milnce(emb["audio"]["at"], emb["text"]["at"], tm, am, 0.1, True, True), rel=1e-6)


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
