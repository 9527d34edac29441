"""Reusable multi-process (gloo, CPU) harness: DDP on W processes must equal one process on the
concatenated batch.

Typical use (the lead's real-model check follows the same pattern)::

    from tests.helpers.dist_worker_parity import assert_parity, make_mmv_step, run_ddp_parity
    factory = functools.partial(create_model, "tiny")          # picklable, builds the same model per seed
    step = make_mmv_step(cfg.loss, input_keys=("video", "audio", "text"))
    reference, ranks = run_ddp_parity(factory, step, batch, world_size=2)
    assert_parity(reference, ranks, tol=1e-5)

``batch`` is a dict of tensors whose leading dim is the GLOBAL batch (split evenly across ranks in
order). ``step_fn(model, batch) -> (loss, parts)`` must be picklable (a module-level function or a
``functools.partial`` of one). Workers run through ``torch.multiprocessing`` with the spawn method, so
the callables must be importable: keep them in an installed package or in this file (the tests
directory is put on ``sys.path`` by the test module).
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mmv_torch import dist
from mmv_torch.config import LossConfig
from mmv_torch.losses import milnce_loss, mmv_loss, nce_loss

Batch = dict[str, torch.Tensor]
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


# ---------------------------------------------------------------------------------------------
# Spawning


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., dict], world_size: int, port: int, out_dir: str, args: tuple,
           slurm: bool) -> None:
    for key in [k for k in os.environ if k.startswith("SLURM_") or k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                          "MASTER_ADDR", "MASTER_PORT")]:
        del os.environ[key]
    if slurm:  # as `srun` would set them; MASTER_ADDR comes from the node list
        os.environ.update({"SLURM_PROCID": str(rank), "SLURM_NTASKS": str(world_size), "SLURM_LOCALID": str(rank),
                           "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost,node[2-3]",
                           "MASTER_PORT": str(port)})
    else:  # as torchrun would set them
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    assert dist.init_distributed(backend="gloo", timeout_s=60.0)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_distributed()


def spawn(fn: Callable[..., dict], world_size: int, args: tuple = (), timeout_s: float = 120.0,
          slurm: bool = False) -> list[dict]:
    """Run ``fn(rank, world_size, *args) -> dict`` in ``world_size`` gloo processes; the dicts in rank order.

    The processes find each other through torchrun-style variables, or SLURM ones when ``slurm``
    (then :func:`dist.init_distributed` reads ranks and the master host from ``SLURM_*``).
    A failing worker re-raises here with its traceback; a hang past ``timeout_s`` kills the workers and
    raises ``TimeoutError``.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(_entry, args=(fn, world_size, free_port(), out_dir, args, slurm), nprocs=world_size,
                                 join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"distributed workers did not finish within {timeout_s} s")
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


# ---------------------------------------------------------------------------------------------
# DDP step parity


def _collect(model: nn.Module, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "loss": loss.detach().clone(),
        "parts": {k: v.detach().clone() for k, v in parts.items()},
        "grads": {n: (None if p.grad is None else p.grad.detach().clone())
                  for n, p in model.named_parameters() if p.requires_grad},  # frozen tables are not trained
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
    }


def reference_step(model_factory: Callable[[], nn.Module], step_fn: StepFn, batch: Batch, seed: int = 0) -> dict:
    """One forward/backward of ``model_factory()`` (seeded) on the whole batch in this process."""
    torch.manual_seed(seed)
    model = model_factory()
    model.train()
    loss, parts = step_fn(model, batch)
    loss.backward()
    return _collect(model, loss, parts)


def ddp_step_worker(rank: int, world_size: int, model_factory: Callable[[], nn.Module], step_fn: StepFn,
                    batch: Batch, seed: int = 0) -> dict:
    """Worker: seeded model, BN converted to SyncBatchNorm, DDP-wrapped, one step on this rank's shard."""
    torch.manual_seed(seed)
    model = model_factory()
    model.train()
    model = dist.convert_sync_batchnorm(model)
    ddp = DDP(model)
    n = next(iter(batch.values())).shape[0]
    if any(v.shape[0] != n for v in batch.values()) or n % world_size:
        raise ValueError(f"batch entries must share a leading dim divisible by {world_size}")
    b = n // world_size
    local = {k: v[rank * b:(rank + 1) * b] for k, v in batch.items()}
    loss, parts = step_fn(ddp, local)
    loss.backward()
    out = _collect(model, loss, parts)
    out["sync_bn"] = sum(isinstance(m, dist.SyncBatchNorm) for m in model.modules())
    return out


def run_ddp_parity(model_factory: Callable[[], nn.Module], step_fn: StepFn, batch: Batch, world_size: int = 2,
                   seed: int = 0, timeout_s: float = 120.0) -> tuple[dict, list[dict]]:
    """(reference on the concatenated batch, per-rank DDP results); each has loss, parts, grads, buffers."""
    ranks = spawn(ddp_step_worker, world_size, (model_factory, step_fn, batch, seed), timeout_s)
    return reference_step(model_factory, step_fn, batch, seed), ranks


def _close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> float:
    """Max |got - want| <= tol * max(1, max |want|): absolute below 1, relative to the tensor's scale above."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    scale = max(1.0, want.double().abs().max().item() if want.numel() else 0.0)
    assert diff <= tol * scale, f"{what}: max abs diff {diff:.3e} > {tol:.1e} x scale {scale:.3e}"
    return diff


def assert_parity(reference: dict, ranks: list[dict], tol: float = 1e-5, require_all_grads: bool = True) -> float:
    """Assert every rank's loss, parts, parameter gradients and float BN buffers equal the reference.

    Per tensor: ``max |rank - reference| <= tol * max(1, max |reference|)``. In float64 parity is exact
    to rounding (tol 1e-10 passes); in float32 gradients of size ~10 differ by ~1e-5 from the order of
    the sums, hence the scale. Returns the largest absolute gradient difference seen.
    """
    worst = 0.0
    for r, res in enumerate(ranks):
        _close(res["loss"], reference["loss"], tol, f"rank {r} loss")
        assert set(res["parts"]) == set(reference["parts"]), f"rank {r}: loss terms differ"
        for k in reference["parts"]:
            _close(res["parts"][k], reference["parts"][k], tol, f"rank {r} part {k}")
        assert set(res["grads"]) == set(reference["grads"]), f"rank {r}: parameter names differ"
        for name, g in reference["grads"].items():
            got = res["grads"][name]
            if require_all_grads:
                assert g is not None, f"reference: parameter {name} got no gradient"
            assert (got is None) == (g is None), f"rank {r}: gradient presence differs for {name}"
            if g is not None:
                worst = max(worst, _close(got, g, tol, f"rank {r} grad {name}"))
        assert set(res["buffers"]) == set(reference["buffers"]), f"rank {r}: buffer names differ"
        for name, buf in reference["buffers"].items():
            if buf.is_floating_point():
                _close(res["buffers"][name], buf, tol, f"rank {r} buffer {name}")
            else:
                assert torch.equal(res["buffers"][name], buf), f"rank {r} buffer {name}"
    return worst


def mmv_step(model: nn.Module, batch: Batch, cfg: LossConfig,
             input_keys: tuple[str, ...] = ("video", "audio", "text")) -> tuple[torch.Tensor, dict]:
    """``emb = model(**inputs)``, then :func:`mmv_loss` with ``batch["audio_mask"]``/``batch["text_mask"]``."""
    emb = model(**{k: batch[k] for k in input_keys})
    return mmv_loss(emb, cfg, audio_mask=batch.get("audio_mask"), text_mask=batch.get("text_mask"))


def make_mmv_step(cfg: LossConfig, input_keys: tuple[str, ...] = ("video", "audio", "text")) -> StepFn:
    """A picklable ``step_fn`` that runs the model and :func:`mmv_loss`."""
    return functools.partial(mmv_step, cfg=cfg, input_keys=input_keys)


# ---------------------------------------------------------------------------------------------
# A toy three-tower model with Conv + BatchNorm (1d and 3d) and linear heads


class ToyMMV(nn.Module):
    """video (B, 3, T, H, W), audio (B, 1, L), text (B, K, Dw) -> {"video": {va, vt}, "audio": {va, at},
    "text": {vt, at}} with va (B, 6), vt (B, 4), at (B, 5), text spaces (B, K, .)."""

    def __init__(self, word_dim: int = 5) -> None:
        super().__init__()
        self.video = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8), nn.ReLU(),
                                   nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.audio = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                                   nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.text = nn.Linear(word_dim, 8)
        self.video_va = nn.Sequential(nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
        self.video_vt = nn.Sequential(nn.Linear(8, 4, bias=False), nn.BatchNorm1d(4))
        self.audio_va = nn.Linear(8, 6)
        self.audio_at = nn.Linear(8, 5)
        self.text_vt = nn.Linear(8, 4)
        self.text_at = nn.Linear(8, 5)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor) -> dict:
        v, a, t = self.video(video), self.audio(audio), torch.relu(self.text(text))
        return {"video": {"va": self.video_va(v), "vt": self.video_vt(v)},
                "audio": {"va": self.audio_va(a), "at": self.audio_at(a)},
                "text": {"vt": self.text_vt(t), "at": self.text_at(t)}}


def toy_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A :class:`ToyMMV` in ``dtype`` (the RNG seed is set by the harness)."""
    return ToyMMV().to(dtype)


def toy_batch(n: int, k: int = 3, dtype: torch.dtype = torch.float32, seed: int = 1) -> Batch:
    """Inputs for :class:`ToyMMV` plus masks that differ across the two halves of the batch."""
    g = torch.Generator().manual_seed(seed)
    audio_mask = torch.rand(n, generator=g) > 0.3
    audio_mask[: n // 2][0] = False
    text_mask = torch.rand(n, k, generator=g) > 0.4
    text_mask[1] = False  # a clip without narration (AudioSet-like) on rank 0
    text_mask[n - 1, 1:] = False
    return {"video": torch.randn(n, 3, 2, 5, 5, generator=g).to(dtype),
            "audio": torch.randn(n, 1, 12, generator=g).to(dtype),
            "text": torch.randn(n, k, 5, generator=g).to(dtype),
            "audio_mask": audio_mask, "text_mask": text_mask}


# ---------------------------------------------------------------------------------------------
# Self-test worker for tests/test_dist.py: everything that needs several processes, in one spawn.


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gather_inputs(world_size: int, b: int = 3, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Global X (W*B, D) and per-rank coefficients C (W, W*B, D) for the all_gather_with_grad check."""
    return (torch.randn(world_size * b, d, generator=_rng(2), dtype=torch.float64),
            torch.randn(world_size, world_size * b, d, generator=_rng(3), dtype=torch.float64))


def gather_loss(y: torch.Tensor, c: torch.Tensor, r: int) -> torch.Tensor:
    """Rank r's loss on the gathered (W*B, D) tensor (different on every rank)."""
    return (y * c[r]).sum() + (r + 1) * (y ** 3).sum()


def loss_inputs(world_size: int, b: int = 4, k: int = 3) -> dict[str, Any]:
    """Leaf embeddings and masks (global batch) for the loss-only check; the masks differ across ranks."""
    n = world_size * b
    g = _rng(4)
    emb = {"video": {"va": torch.randn(n, 6, generator=g, dtype=torch.float64),
                     "vt": torch.randn(n, 4, generator=g, dtype=torch.float64)},
           "audio": {"va": torch.randn(n, 6, generator=g, dtype=torch.float64),
                     "at": torch.randn(n, 5, generator=g, dtype=torch.float64)},
           "text": {"vt": torch.randn(n, k, 4, generator=g, dtype=torch.float64),
                    "at": torch.randn(n, k, 5, generator=g, dtype=torch.float64)}}
    audio_mask = torch.ones(n, dtype=torch.bool)
    audio_mask[:b] = False  # rank 0 has no audio at all
    audio_mask[b] = False
    text_mask = torch.rand(n, k, generator=g) > 0.4
    text_mask[b:, 0] = True
    text_mask[0] = False
    return {"emb": emb, "audio_mask": audio_mask, "text_mask": text_mask,
            "cfg": LossConfig(temperature=0.1, weight_va=1.0, weight_vt=0.7, weight_at=0.3)}


def bn_inputs() -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Uneven per-rank sizes, global input (sum n_r, 4, 3, 3) and output weights for the SyncBN check."""
    sizes = [3, 5]
    x = torch.randn(sum(sizes), 4, 3, 3, generator=_rng(5), dtype=torch.float64) * 2 + 1
    w = torch.randn(sum(sizes), 4, 3, 3, generator=_rng(6), dtype=torch.float64)
    return sizes, x, w


def selftest_worker(rank: int, world_size: int) -> dict[str, Any]:
    """All multi-process checks of tests/test_dist.py; returns what the test compares."""
    out: dict[str, Any] = {"rank": dist.rank(), "world_size": dist.world_size(), "local_rank": dist.local_rank(),
                           "is_main": dist.is_main()}
    dist.barrier()
    # Metric reductions and plain gathers.
    out["sum"] = dist.all_reduce_sum(torch.tensor([rank + 1.0, 2.0]))
    out["mean"] = dist.all_reduce_mean(float(rank))
    out["gather_bool"] = dist.all_gather(torch.tensor([rank == 0, True]))

    # all_gather_with_grad: forward and the summed gradient.
    x_glob, c = gather_inputs(world_size)
    b = x_glob.shape[0] // world_size
    x = x_glob[rank * b:(rank + 1) * b].clone().requires_grad_()
    y = dist.all_gather_with_grad(x)
    gather_loss(y, c, rank).backward()
    out["gathered"] = y.detach()
    out["gather_grad"] = x.grad

    # Losses on leaf embeddings (no DDP): the value is global; the gradient is W x this rank's share.
    li = loss_inputs(world_size)
    n = li["audio_mask"].shape[0]
    b = n // world_size
    sl = slice(rank * b, (rank + 1) * b)
    leaves = {m: {s: t[sl].clone().requires_grad_() for s, t in d.items()} for m, d in li["emb"].items()}
    total, parts = mmv_loss(leaves, li["cfg"], audio_mask=li["audio_mask"][sl], text_mask=li["text_mask"][sl])
    total.backward()
    out["loss_total"] = total.detach()
    out["loss_parts"] = parts
    out["loss_grads"] = {m: {s: t.grad for s, t in d.items()} for m, d in leaves.items()}
    # A term with no valid pair on any rank: 0, zero gradient, no NaN, no hang.
    v = leaves["video"]["va"].detach().clone().requires_grad_()
    empty = nce_loss(v, v, mask=torch.zeros(b, dtype=torch.bool)) + milnce_loss(
        v, torch.randn(b, 2, 6, dtype=torch.float64), text_mask=torch.zeros(b, 2, dtype=torch.bool))
    empty.backward()
    out["empty_loss"] = empty.detach()
    out["empty_grad"] = v.grad

    # SyncBatchNorm with uneven per-rank batches: output, input/weight gradients, running stats, eval.
    sizes, xb, wb = bn_inputs()
    start = sum(sizes[:rank])
    xr = xb[start:start + sizes[rank]].clone().requires_grad_()
    bn = dist.to_sync_batchnorm(nn.BatchNorm2d(4, momentum=0.3).double())
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 1.5, 4))
        bn.bias.copy_(torch.linspace(-1, 1, 4))
    yb = bn(xr)
    (yb * wb[start:start + sizes[rank]]).sum().backward()
    out["bn_out"] = yb.detach()
    out["bn_x_grad"] = xr.grad
    out["bn_w_grad_sum"] = dist.all_reduce_sum(bn.weight.grad)
    out["bn_b_grad_sum"] = dist.all_reduce_sum(bn.bias.grad)
    out["bn_running"] = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    bn_group = dist.to_sync_batchnorm(nn.BatchNorm2d(4, momentum=0.3).double(),
                                      process_group=torch.distributed.new_group(list(range(world_size))))
    bn_group.load_state_dict({k: v for k, v in bn.state_dict().items() if "running" not in k}, strict=False)
    out["bn_group_out"] = bn_group(xr.detach()).detach()
    out["master_addr"] = os.environ["MASTER_ADDR"]
    bn.eval()
    out["bn_eval_out"] = bn(xr.detach())

    # Toy MMV model under DDP with SyncBN and gathered negatives, float64 and float32.
    for dtype in (torch.float64, torch.float32):
        batch = toy_batch(4 * world_size, dtype=dtype)
        out[f"ddp_{dtype}"] = ddp_step_worker(rank, world_size, functools.partial(toy_model, dtype),
                                              make_mmv_step(LossConfig(weight_at=0.5)), batch)
    return out
