"""train.contrastive_batch: the gradient-cached step is the exact gradient of ONE loss over all micro-batches
(float64, 1 process and 2 gloo processes), BatchNorm running statistics move once per micro-batch, the
config refuses what it cannot run, and the loop logs the negatives and resumes exactly."""

from __future__ import annotations

import pytest
import torch

from mmv_torch.config import apply_overrides
from tests.helpers import gradcache_utils as G
from tests.helpers.dist_worker_parity import spawn


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(got: dict, want: dict, rtol: float = 1e-9) -> None:
    assert set(got) == set(want) and got
    for k, v in want.items():
        # relative to the tensor's largest entry; biases followed by BatchNorm have an exact-zero gradient
        assert (got[k] - v).abs().max().item() <= rtol * v.abs().max().item() + 1e-12, k


@pytest.mark.parametrize("loss_kw", [{}, {"form": "mean", "weight_at": 0.5}])
def test_cached_step_gradient_equals_one_graph_over_all_micro_batches(loss_kw):
    cfg = G.small_cfg(**loss_kw)
    batches = G.micro_batches(3, 4)
    ref_model, model = G.make_model(cfg), G.make_model(cfg)
    torch.manual_seed(7)
    ref_loss = G.reference_step(ref_model, batches, cfg)
    torch.manual_seed(7)
    loss = G.cached_step(model, batches, cfg)
    after = torch.get_rng_state()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    ref, got = G.grads_and_buffers(ref_model), G.grads_and_buffers(model)
    _close(got["grads"], ref["grads"])
    # Running statistics moved once per micro-batch (as in the reference), not twice.
    _close(got["buffers"], ref["buffers"], rtol=1e-12)
    counts = {v.item() for n, v in got["buffers"].items() if n.endswith("num_batches_tracked")}
    assert counts == {3}
    # The RNG ends where the reference's ends (pass 2 replays pass 1's draws).
    third = G.make_model(cfg)
    torch.manual_seed(7)
    G.reference_step(third, batches, cfg)
    assert torch.equal(after, torch.get_rng_state())


def test_without_restoring_the_rng_dropout_would_differ():
    """The guard is real: the cached step with the RNG left to run on gives another gradient."""
    import mmv_torch.train.gradcache as GC

    cfg = G.small_cfg()
    batches = G.micro_batches(2, 4)
    ref_model, model = G.make_model(cfg), G.make_model(cfg)
    torch.manual_seed(7)
    G.reference_step(ref_model, batches, cfg)
    torch.manual_seed(7)
    orig = GC._set_rng_state
    GC._set_rng_state = lambda state, device: None
    try:
        G.cached_step(model, batches, cfg)
    finally:
        GC._set_rng_state = orig
    ref, got = G.grads_and_buffers(ref_model)["grads"], G.grads_and_buffers(model)["grads"]
    assert max((got[k] - v).abs().max().item() for k, v in ref.items()) > 1e-6


def test_cached_step_under_two_gloo_processes_equals_one_process():
    """2 ranks x 2 micro-batches x 2 clips (SyncBatchNorm per micro-batch, negatives gathered across ranks) equal
    one graph over the 8 clips with each micro-batch's BatchNorm over both ranks' clips."""
    n_micro, b = 2, 2
    ranks = spawn(G.ddp_worker, 2, ({"weight_at": 0.5}, n_micro, b), timeout_s=240.0)
    cfg = G.small_cfg(weight_at=0.5)
    per_rank = [G.micro_batches(n_micro, b, seed=10 + r, first_index=1000 * r) for r in range(2)]
    joined = [{k: torch.cat([per_rank[0][m][k], per_rank[1][m][k]]) for k in per_rank[0][m]} for m in range(n_micro)]
    # Rows of the reference: micro-batch-major (m0: r0 r1, m1: r0 r1); the ranks' loss sees rank-major rows.
    order = [m * 2 * b + r * b + i for r in range(2) for m in range(n_micro) for i in range(b)]
    model = G.make_model(cfg, p=0.0)
    loss = G.reference_step(model, joined, cfg, order=order)
    ref = G.grads_and_buffers(model)
    for r in ranks:
        assert r["loss"].item() == pytest.approx(loss.item(), rel=1e-12)
        _close(r["grads"], ref["grads"])
        _close(r["buffers"], ref["buffers"], rtol=1e-10)


def test_contrastive_batch_config_refusals():
    from mmv_torch.train.gradcache import contrastive_batch_info

    cfg = apply_overrides(G.small_cfg(), {"train.batch_size": 8, "train.contrastive_batch": 32})
    assert cfg.train.micro_batches(1) == 4 and cfg.train.micro_batches(2) == 2
    with pytest.raises(ValueError, match=r"not a multiple of train.batch_size \(8\) x 3 processes = 24"):
        cfg.train.micro_batches(3)
    with pytest.raises(ValueError, match="cannot be combined with train.grad_accum=2"):
        apply_overrides(cfg, {"train.grad_accum": 2})
    with pytest.raises(ValueError, match="must be a multiple of train.batch_size"):
        apply_overrides(cfg, {"train.contrastive_batch": 12})
    info = contrastive_batch_info(cfg, 2)
    assert (info["clips_per_loss"], info["micro_batches"], info["negatives_per_direction"],
            info["negatives_per_softmax"]) == (32, 2, 30, 60)  # 2 clips per video: the other one is no negative
    plain = contrastive_batch_info(apply_overrides(cfg, {"train.contrastive_batch": 0, "train.grad_accum": 4}), 1)
    assert plain["clips_per_loss"] == 8 and plain["micro_batches"] == 4
