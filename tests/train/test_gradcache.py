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


# ---------------------------------------------------------------------------------------------
# In the loop


def _run(tmp, name, n, steps=1, **train):
    import mmv_torch.train.loop as T
    from tests.helpers.train_worker_ddp import RandomClips
    from tests.train.test_loop import losses, read_log, tiny_cfg

    cfg = tiny_cfg(steps=steps, batch_size=8, contrastive_batch=n, **train)
    T.train(cfg, RandomClips(128), tmp / name, tensorboard=False, progress=False)
    return losses(tmp / name), read_log(tmp / name)


def test_step0_loss_grows_with_the_contrastive_batch_as_the_log_of_the_negatives(tmp_path, capsys):
    import math

    va = {}
    for n in (0, 32, 128):
        _, log = _run(tmp_path, f"n{n}", n)
        event = next(r for r in log if r.get("event") == "contrastive_batch")
        assert event["clips_per_loss"] == (n or 8) and event["negatives_per_softmax"] == 2 * ((n or 8) - 1)
        va[n or 8] = log[-1]["loss_va"]
    line = "contrastive batch: 128 clips per loss (8 per process x 16 micro-batches x 1 processes"
    assert line in capsys.readouterr().err
    # One softmax of the joint NCE holds 2(N - 1) negatives; at initialisation the loss follows their log
    # (measured: +1.77 for 8 -> 32 where log(63/15) = 1.44, +1.67 for 32 -> 128 where log(255/63) = 1.40).
    for small, big in ((8, 32), (32, 128)):
        ratio = (va[big] - va[small]) / math.log((2 * big - 1) / (2 * small - 1))
        assert 0.8 < ratio < 1.4, (small, big, va)


def test_cached_training_kill_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    import mmv_torch.train.loop as T
    import mmv_torch.weights.checkpoint as C
    from mmv_torch.config import apply_overrides
    from tests.helpers.train_worker_ddp import RandomClips
    from tests.train.test_loop import Killed, kill_at_loss_call, losses, tiny_cfg

    cfg = tiny_cfg(steps=4, ckpt_every=2, batch_size=4, contrastive_batch=8)  # 12 clips: steps cross epochs
    sizes = []
    orig = T.mmv_loss

    def spy(emb, *args, **kwargs):
        sizes.append(emb["video"]["va"].shape[0])
        return orig(emb, *args, **kwargs)

    monkeypatch.setattr(T, "mmv_loss", spy)
    T.train(cfg, RandomClips(12), tmp_path / "full", tensorboard=False, progress=False)
    monkeypatch.undo()
    assert sizes == [8] * 4  # one loss over both micro-batches per step
    kill_at_loss_call(monkeypatch, 4)  # dies in step 4, after the checkpoint of step 2
    with pytest.raises(Killed):
        T.train(cfg, RandomClips(12), tmp_path / "cut", tensorboard=False, progress=False)
    monkeypatch.undo()
    out = T.train(apply_overrides(cfg, {"train.num_workers": 1}), RandomClips(12), tmp_path / "cut",
                  resume="latest", tensorboard=False, progress=False)
    assert out["start_step"] == 2
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    full = C.load_checkpoint(C.checkpoint_path(tmp_path / "full", 4))
    cut = C.load_checkpoint(C.checkpoint_path(tmp_path / "cut", 4))
    assert all(torch.equal(v, cut["model"][k]) for k, v in full["model"].items())
    assert (full["data"]["epoch"], full["data"]["batch"]) == (2, 2)  # 8 micro-batches of 3 per epoch


@pytest.mark.parametrize("preset", ["mmv_s3d", "mmv_tsm_r50", "mmv_tsm_r50x2"])
def test_paper_configs_fix_the_contrastive_batch_on_any_number_of_processes(preset):
    from pathlib import Path

    from mmv_torch.config import load_config
    from mmv_torch.train.gradcache import announce_contrastive_batch

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/paper" / f"{preset}.json")
    for world in (1, 2, 4, 8, 16, 32, 64, 128):
        assert cfg.train.micro_batches(world) * cfg.train.batch_size * world == 4096
    line = announce_contrastive_batch(cfg, 8)
    assert "4096 clips per loss (32 per process x 16 micro-batches x 8 processes" in line
    assert "8190 negatives (4095 per direction" in line


def test_two_process_loop_with_contrastive_batch_equals_one_process(tmp_path):
    """The real loop under a torchrun-style gloo launch: 2 ranks x micro-batches of 2 with contrastive_batch=8
    (2 micro-batches per rank, negatives gathered across ranks, SyncBatchNorm per micro-batch) give the losses
    of 1 process with micro-batches of 4 (the same 4 clips per micro-batch) and contrastive_batch=8."""
    import json
    from pathlib import Path

    import mmv_torch.train.loop as T
    from mmv_torch.config import save_config
    from tests.helpers.train_worker_ddp import RandomClips, run_two_ranks
    from tests.train.test_loop import losses, tiny_cfg

    steps = 2
    save_config(tiny_cfg(steps=steps, ckpt_every=steps, batch_size=2, contrastive_batch=8), tmp_path / "ddp.json")
    outputs = run_two_ranks(tmp_path, 16, timeout=300)
    run = tmp_path / "ddp"
    assert "8 clips per loss (2 per process x 2 micro-batches x 2 processes" in outputs[0]
    summaries = [json.loads(Path(run, f"summary_rank{r}.json").read_text()) for r in range(2)]
    assert summaries[0]["final_loss"] == summaries[1]["final_loss"]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        T.train(tiny_cfg(steps=steps, ckpt_every=steps, batch_size=4, contrastive_batch=8), RandomClips(16),
                tmp_path / "one", tensorboard=False, progress=False)
    finally:
        torch.set_default_dtype(default)
    ddp, one = losses(run), losses(tmp_path / "one")
    assert sorted(ddp) == [1, 2]
    for k in one:  # step 1 before any update; step 2 after one Adam step (rounding amplified, see test_loop.py)
        assert ddp[k] == pytest.approx(one[k], rel=1e-10 if k == 1 else 1e-7), k
