"""dist.py: single-process answers, launcher parsing, SyncBatchNorm, and a 2-process gloo parity test
(loss and every gradient under DDP equal one process on the concatenated batch)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from mmv_torch import dist  # noqa: E402
from mmv_torch.config import LossConfig  # noqa: E402
from mmv_torch.losses import mmv_loss  # noqa: E402
from tests.helpers import dist_worker_parity as W

# ---------------------------------------------------------------------------------------------
# Single process


def test_single_process_answers() -> None:
    assert not dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (0, 1, 0, True)
    dist.barrier()
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.all_gather_with_grad(x) is x
    g = dist.all_gather(x)
    assert torch.equal(g, x.detach()) and not g.requires_grad and g.data_ptr() != x.data_ptr()
    assert dist.all_reduce_sum(2.0).item() == 2.0
    assert dist.all_reduce_mean(torch.tensor([3])).item() == 3.0
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    assert dist.convert_sync_batchnorm(model) is model and isinstance(model[1], nn.BatchNorm2d)


@pytest.mark.parametrize("nodelist,host", [
    ("node001", "node001"),
    ("node[003-005,9],gpu7", "node003"),
    ("a,b", "a"),
    ("gpu-[12,14-16]", "gpu-12"),
    ("rack[1-2]-n[07-08]", "rack1-n07"),
    ("  x[0009]  ", "x0009"),
])
def test_first_slurm_host(nodelist: str, host: str) -> None:
    assert dist.first_slurm_host(nodelist) == host


@pytest.mark.parametrize("bad", ["", "node[1-2", "node]1["])
def test_first_slurm_host_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="SLURM node list"):
        dist.first_slurm_host(bad)


def test_launch_env() -> None:
    assert dist.launch_env({}) is None
    tr = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234",
          "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert dist.launch_env(tr) == {"rank": 3, "world_size": 8, "local_rank": 1, "master_addr": "h0",
                                   "master_port": 1234}
    sl = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
          "SLURM_NODELIST": "gpu[07-10]", "SLURM_STEP_NODELIST": "gpu[08-09]"}
    assert dist.launch_env(sl) == {"rank": 5, "world_size": 16, "local_rank": 1, "master_addr": "gpu08",
                                   "master_port": 10000 + 123456 % 20000}
    del sl["SLURM_STEP_NODELIST"]
    assert dist.launch_env(sl)["master_addr"] == "gpu07"
    assert dist.launch_env({**sl, "MASTER_ADDR": "m", "MASTER_PORT": "29400"})["master_addr"] == "m"
    with pytest.raises(ValueError, match="SLURM_NTASKS"):
        dist.launch_env({**sl, "SLURM_NTASKS": "x"})
    with pytest.raises(ValueError, match="NODELIST"):
        dist.launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    with pytest.raises(ValueError, match="outside world size"):
        dist.launch_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK"):
        dist.launch_env({"WORLD_SIZE": "2"})


def test_init_distributed_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert dist.init_distributed() is False
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.init_distributed() is False
    assert not dist.is_initialized()


@pytest.mark.parametrize("bn_cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (6, 3, 4)),
                                          (nn.BatchNorm2d, (5, 3, 4, 4)), (nn.BatchNorm3d, (4, 3, 2, 3, 3))])
def test_sync_batchnorm_single_process_is_plain_bn(bn_cls: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ref = bn_cls(3, momentum=0.2)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
        ref.running_mean.uniform_(-1, 1)
    model = nn.Sequential(bn_cls(3, momentum=0.2))
    model[0].load_state_dict(ref.state_dict())
    model = dist.to_sync_batchnorm(model)
    sync = model[0]
    assert isinstance(sync, dist.SyncBatchNorm)
    assert list(sync.state_dict()) == list(ref.state_dict())
    x = torch.randn(*shape)
    torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_var, ref.running_var)
    sync.eval()
    ref.eval()
    torch.testing.assert_close(sync(x), ref(x))


def test_to_sync_batchnorm_preserves_state() -> None:
    model = nn.Sequential(nn.Conv3d(2, 4, 1), nn.BatchNorm3d(4, eps=1e-3, momentum=None), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4, affine=False)))
    model(torch.randn(3, 2, 1, 2, 2))  # builds running stats
    model[1].weight.requires_grad_(False)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[1].weight
    dist.to_sync_batchnorm(model)
    assert isinstance(model[1], dist.SyncBatchNorm) and isinstance(model[3][2], dist.SyncBatchNorm)
    assert model[1].weight is weight and not model[1].weight.requires_grad
    assert model[1].eps == 1e-3 and model[1].momentum is None and not model[3][2].affine
    assert not model[1].training
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    bn = dist.to_sync_batchnorm(nn.BatchNorm2d(3))
    assert isinstance(bn, dist.SyncBatchNorm)
    with pytest.raises(ValueError, match="at least 2 dims"):
        bn(torch.randn(3))


# ---------------------------------------------------------------------------------------------
# Two processes (gloo): one spawn runs every check, the tests compare against one process.

WORLD = 2


@pytest.fixture(scope="module")
def results() -> list[dict]:
    # SLURM variables here (torchrun ones are what run_ddp_parity uses), so both launch paths are exercised.
    return W.spawn(W.selftest_worker, WORLD, timeout_s=120, slurm=True)


def test_two_process_basics(results: list[dict]) -> None:
    for r, res in enumerate(results):
        assert (res["rank"], res["world_size"], res["local_rank"], res["is_main"]) == (r, WORLD, r, r == 0)
        torch.testing.assert_close(res["sum"], torch.tensor([3.0, 4.0]))
        assert res["mean"].item() == pytest.approx(0.5)
        assert res["gather_bool"].tolist() == [True, True, False, True]
        assert res["master_addr"] == "localhost"  # first host of SLURM_STEP_NODELIST


def test_all_gather_with_grad_sums_gradients_over_ranks(results: list[dict]) -> None:
    x, c = W.gather_inputs(WORLD)
    x = x.clone().requires_grad_()
    sum(W.gather_loss(x, c, r) for r in range(WORLD)).backward()
    b = x.shape[0] // WORLD
    for r, res in enumerate(results):
        torch.testing.assert_close(res["gathered"], x.detach(), rtol=0, atol=0)
        torch.testing.assert_close(res["gather_grad"], x.grad[r * b:(r + 1) * b], rtol=1e-12, atol=1e-12)


def test_losses_global_value_and_ddp_scaled_gradient(results: list[dict]) -> None:
    li = W.loss_inputs(WORLD)
    leaves = {m: {s: t.clone().requires_grad_() for s, t in d.items()} for m, d in li["emb"].items()}
    total, parts = mmv_loss(leaves, li["cfg"], audio_mask=li["audio_mask"], text_mask=li["text_mask"])
    total.backward()
    b = li["audio_mask"].shape[0] // WORLD
    for r, res in enumerate(results):
        torch.testing.assert_close(res["loss_total"], total.detach(), rtol=1e-12, atol=1e-12)
        assert set(res["loss_parts"]) == {"va", "vt", "at"}
        for k, v in parts.items():
            torch.testing.assert_close(res["loss_parts"][k], v, rtol=1e-6, atol=1e-7)
        # Without DDP, a rank's gradient is W times its share; DDP's mean over ranks makes it exact.
        for m, d in leaves.items():
            for s, t in d.items():
                torch.testing.assert_close(res["loss_grads"][m][s], WORLD * t.grad[r * b:(r + 1) * b],
                                           rtol=1e-10, atol=1e-12, msg=f"rank {r} {m}/{s}")
        assert res["empty_loss"].item() == 0.0 and torch.all(res["empty_grad"] == 0)


def test_sync_batchnorm_two_processes_uneven_batches(results: list[dict]) -> None:
    sizes, x, w = W.bn_inputs()
    x = x.clone().requires_grad_()
    bn = nn.BatchNorm2d(4, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 1.5, 4))
        bn.bias.copy_(torch.linspace(-1, 1, 4))
    y = bn(x)
    (y * w).sum().backward()
    starts = [0, sizes[0]]
    for r, res in enumerate(results):
        sl = slice(starts[r], starts[r] + sizes[r])
        torch.testing.assert_close(res["bn_out"], y.detach()[sl], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res["bn_group_out"], y.detach()[sl], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res["bn_x_grad"], x.grad[sl], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res["bn_w_grad_sum"], bn.weight.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res["bn_b_grad_sum"], bn.bias.grad, rtol=1e-10, atol=1e-12)
        mean, var, count = res["bn_running"]
        torch.testing.assert_close(mean, bn.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, bn.running_var, rtol=1e-12, atol=1e-12)
        assert count.item() == 1
    bn.eval()
    for r, res in enumerate(results):
        sl = slice(starts[r], starts[r] + sizes[r])
        torch.testing.assert_close(res["bn_eval_out"], bn(x.detach())[sl], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_ddp_toy_model_equals_one_process(results: list[dict], dtype: torch.dtype, tol: float) -> None:
    batch = W.toy_batch(4 * WORLD, dtype=dtype)
    # The masks really differ between the two ranks' halves.
    assert not torch.equal(batch["audio_mask"][:4], batch["audio_mask"][4:])
    assert not torch.equal(batch["text_mask"][:4], batch["text_mask"][4:])
    reference = W.reference_step(functools.partial(W.toy_model, dtype), W.make_mmv_step(LossConfig(weight_at=0.5)),
                                 batch)
    ranks = [res[f"ddp_{dtype}"] for res in results]
    assert all(r["sync_bn"] == 4 for r in ranks)
    assert set(reference["parts"]) == {"va", "vt", "at"}
    worst = W.assert_parity(reference, ranks, tol=tol)
    print(f"{dtype}: largest gradient difference DDP vs one process {worst:.2e}")
