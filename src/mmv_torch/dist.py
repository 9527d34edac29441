"""Distributed helpers: process-group set-up, gathers with autograd, metric reductions, SyncBatchNorm.

Every helper gives the trivial single-process answer when ``torch.distributed`` is not initialised
(rank 0, world size 1, gathers return their input, reductions return a copy), so the training loop
has no ``if ddp:`` branches.

Gradient convention (used by ``losses.py`` and :class:`SyncBatchNorm`): the backward of a collective
is its adjoint collective. ``all_gather_with_grad`` sums, over all ranks, the gradient flowing into
the local slice, so the local backward of rank r computes the gradient of the SUM over ranks of the
per-rank losses with respect to rank r's own activations. DDP then averages the parameter gradients
over ranks. ``losses.py`` scales each rank's loss so that this average is exactly the gradient of the
single-process loss on the concatenated batch (see ``losses._global_mean``).

Only ``torch`` is imported.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_LOCAL_RANK: int | None = None


# ---------------------------------------------------------------------------------------------
# Process group state


def is_initialized() -> bool:
    """True when a default ``torch.distributed`` process group exists."""
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 when not initialised)."""
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not initialised)."""
    return tdist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """Rank of this process on its node (0 when not initialised).

    Taken from :func:`init_distributed` or, for a group initialised elsewhere, from ``LOCAL_RANK``
    (torchrun) or ``SLURM_LOCALID``.
    """
    if not is_initialized():
        return 0
    if _LOCAL_RANK is not None:
        return _LOCAL_RANK
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def is_main() -> bool:
    """True on global rank 0 (and in a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; no-op in a single process."""
    if is_initialized():
        tdist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself when not initialised."""
    if not is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


# ---------------------------------------------------------------------------------------------
# Launch environment


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list (the host of task 0 under block distribution).

    ``"node[003-005,9],gpu7"`` -> ``"node003"``; ``"rack[1-2]-n[07-08]"`` -> ``"rack1-n07"``;
    ``"a,b"`` -> ``"a"``. Every bracket group is replaced by the first number of its first range, with
    its zero padding kept. Raises ``ValueError`` for an empty or malformed list.
    """
    text = nodelist.strip()
    depth = 0
    end = len(text)
    for i, ch in enumerate(text):  # the first host ends at the first comma outside brackets
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                break
        elif ch == "," and depth == 0:
            end = i
            break
    if depth < 0:
        raise ValueError(f"SLURM node list {nodelist!r}: unbalanced ']'")
    first = text[:end]

    def _first_of_group(m: re.Match[str]) -> str:
        return re.split(r"[,-]", m.group(1))[0]

    host = re.sub(r"\[([^\[\]]*)\]", _first_of_group, first)
    if not host or "[" in host or "]" in host:
        raise ValueError(f"SLURM node list {nodelist!r}: cannot read the first host")
    return host


def launch_env(environ: dict[str, str] | None = None) -> dict[str, int | str] | None:
    """Read the launcher's variables: ``{"rank", "world_size", "local_rank", "master_addr", "master_port"}``.

    torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) win.
    Otherwise SLURM ones are used when ``SLURM_PROCID`` and ``SLURM_NTASKS`` are set (one task per
    process, e.g. ``srun --ntasks-per-node=8 python -m mmv_torch train ...``): rank ``SLURM_PROCID``,
    world size ``SLURM_NTASKS``, local rank ``SLURM_LOCALID``; ``MASTER_ADDR`` defaults to the first
    host of ``SLURM_STEP_NODELIST`` (else ``SLURM_JOB_NODELIST``/``SLURM_NODELIST``) and
    ``MASTER_PORT`` to ``10000 + SLURM_JOB_ID % 20000`` so two jobs on one node do not collide. Do not
    start training from the batch script itself under SLURM without ``srun``: its variables claim
    ``SLURM_NTASKS`` processes and rank 0 would wait for the others. Returns ``None`` when neither
    launcher is found. A malformed value raises ``ValueError`` naming the variable.
    """
    env = dict(os.environ if environ is None else environ)

    def _int(key: str, default: int | None = None) -> int:
        if key not in env:
            if default is None:
                raise ValueError(f"environment variable {key} is required but not set")
            return default
        try:
            return int(env[key])
        except ValueError:
            raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None

    if "WORLD_SIZE" in env or "RANK" in env:
        out: dict[str, int | str] = {
            "rank": _int("RANK"),
            "world_size": _int("WORLD_SIZE"),
            "local_rank": _int("LOCAL_RANK", 0),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": _int("MASTER_PORT", 29500),
        }
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        else:
            nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
            if not nodelist:
                raise ValueError("SLURM launch: none of MASTER_ADDR, SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, "
                                 "SLURM_NODELIST is set")
            addr = first_slurm_host(nodelist)
        port_default = 10000 + _int("SLURM_JOB_ID", 19500) % 20000
        out = {
            "rank": _int("SLURM_PROCID"),
            "world_size": _int("SLURM_NTASKS"),
            "local_rank": _int("SLURM_LOCALID", 0),
            "master_addr": addr,
            "master_port": _int("MASTER_PORT", port_default),
        }
    else:
        return None
    if not 0 <= int(out["rank"]) < int(out["world_size"]):
        raise ValueError(f"launch environment: rank {out['rank']} outside world size {out['world_size']}")
    return out


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun or SLURM variables (see :func:`launch_env`).

    ``backend`` defaults to NCCL when CUDA is available (and then selects the GPU ``local_rank``) and
    gloo otherwise. Returns True when a group with more than one process is (or already was)
    initialised, False for a single process (no launcher variables, or world size 1): then every
    helper here answers trivially. ``timeout_s`` bounds collectives, so a misconfigured launch fails.
    """
    global _LOCAL_RANK
    if is_initialized():
        return tdist.get_world_size() > 1
    env = launch_env()
    if env is None or int(env["world_size"]) == 1:
        return False
    if not tdist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    _LOCAL_RANK = int(env["local_rank"])
    if backend == "nccl":
        torch.cuda.set_device(_LOCAL_RANK)
    os.environ["MASTER_ADDR"] = str(env["master_addr"])
    os.environ["MASTER_PORT"] = str(env["master_port"])
    tdist.init_process_group(backend=backend, init_method="env://", rank=int(env["rank"]),
                             world_size=int(env["world_size"]),
                             timeout=datetime.timedelta(seconds=timeout_s))
    return True


def destroy_distributed() -> None:
    """Tear the default process group down (no-op when not initialised)."""
    global _LOCAL_RANK
    if is_initialized():
        tdist.destroy_process_group()
    _LOCAL_RANK = None


def _comm_device() -> torch.device:
    """Device tensors must live on for the current backend (CUDA for NCCL)."""
    if is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Collectives


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...), without autograd.

    Every rank must pass the same shape. Bool tensors are supported.
    """
    if not is_initialized() or tdist.get_world_size() == 1:
        return x.detach().clone()
    src = x.detach()
    if src.dtype == torch.bool:
        return all_gather(src.to(torch.uint8)).bool()
    src = src.contiguous()
    out = [torch.empty_like(src) for _ in range(tdist.get_world_size())]
    tdist.all_gather(out, src)
    return torch.cat(out, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate the local (B, ...) tensors of all ranks. Backward: sum the incoming (W*B, ...)
    gradient over ranks (all_reduce) and return this rank's slice, i.e. the total derivative of the sum
    of all ranks' losses with respect to the local input."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.local_b = x.shape[0]
        ctx.rank = tdist.get_rank()
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(out, x)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        b = ctx.local_b
        return grad[ctx.rank * b:(ctx.rank + 1) * b]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...), differentiable.

    The gradient reaching the local ``x`` is the sum over ranks of the gradients every rank's loss sends
    into rows ``[rank*B, (rank+1)*B)`` of the output. Why the sum (an all_reduce in backward) is needed
    although DDP averages gradients: rank r's columns enter the losses of all other ranks, and only rank
    r can backpropagate those contributions through its own network; without the all_reduce they are
    lost and DDP would average incomplete gradients. With it, each rank's parameter gradient is the
    derivative of the sum of all ranks' losses through its own samples, and DDP's mean over ranks is the
    derivative of the mean of the per-rank losses. Every rank must pass the same shape and must call
    backward (it is a collective). Returns ``x`` itself in a single process.
    """
    if not is_initialized() or tdist.get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_reduce_sum(x: torch.Tensor | float) -> torch.Tensor:
    """Sum of ``x`` over ranks, as a new detached tensor (for metrics; no autograd)."""
    t = torch.as_tensor(x, device=_comm_device() if not isinstance(x, torch.Tensor) else None)
    t = t.detach().clone()
    if is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_mean(x: torch.Tensor | float) -> torch.Tensor:
    """Mean of ``x`` over ranks, as a new detached floating tensor (for metrics; no autograd)."""
    t = all_reduce_sum(x)
    if not t.is_floating_point():
        t = t.double()
    return t / world_size()


# ---------------------------------------------------------------------------------------------
# SyncBatchNorm


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device (CPU/gloo included).

    PyTorch's ``nn.SyncBatchNorm`` (checked on torch 2.13) raises ``ValueError`` for CPU inputs in
    training with an initialised group, so CPU runs need this one. Input (N, C, *) of any rank >= 2,
    like ``nn.BatchNorm1d/2d/3d``; parameters, buffers and ``state_dict`` keys are those of plain BN.

    Training with world size > 1: each rank computes its count n_r, mean m_r (C,) and sum of squared
    deviations M2_r (C,) in float32 (or float64), the (1 + 2C) vectors are gathered with
    :func:`all_gather_with_grad`, and merged exactly (Chan et al.):
    ``n = sum n_r``, ``mean = sum n_r m_r / n``, ``M2 = sum [M2_r + n_r (m_r - mean)^2]``, biased
    ``var = M2 / n`` for normalisation and unbiased ``M2 / (n - 1)`` for ``running_var``, as plain
    BatchNorm on the concatenated batch. The gradient flows through the gathered statistics (backward
    sums over ranks), so it is exact under DDP. Ranks may have different batch sizes (even 0). Eval
    mode, a single process and ``track_running_stats=False`` outside training behave as plain BN.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: object | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects input (N, C, *) with at least 2 dims, got {input.dim()}D")

    def _group_size(self) -> int:
        if not is_initialized():
            return 1
        group = self.process_group if self.process_group is not None else tdist.group.WORLD
        return tdist.get_world_size(group)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """(N, C, *) -> (N, C, *)."""
        self._check_input_dim(input)
        if input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}) got input with {input.shape[1]} channels")
        if not (self.training and self._group_size() > 1):
            return super().forward(input)  # plain BN (eval, or nothing to synchronise)

        factor = 0.0
        if self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked.item()) if self.momentum is None else self.momentum

        c = self.num_features
        stat_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        x = input.to(stat_dtype)
        dims = [0] + list(range(2, x.dim()))
        n_local = x.numel() // c
        count = torch.full((1,), float(n_local), dtype=stat_dtype, device=x.device)
        if n_local > 0:
            mean_r = x.mean(dim=dims)
            m2_r = (x - _expand(mean_r, x.dim())).pow(2).sum(dim=dims)
        else:
            mean_r = x.sum(dim=dims)  # zeros that keep the graph connected
            m2_r = mean_r
        stats = torch.cat([count, mean_r, m2_r])[None]  # (1, 1 + 2C)
        if self.process_group is None:
            gathered = all_gather_with_grad(stats)  # (W, 1 + 2C)
        else:
            gathered = _AllGatherGroup.apply(stats, self.process_group)
        counts, means, m2s = gathered[:, :1], gathered[:, 1:1 + c], gathered[:, 1 + c:]
        n = counts.sum().clamp_min(1.0)
        mean = (counts * means).sum(0) / n
        m2 = (m2s + counts * (means - mean).pow(2)).sum(0)
        var = m2 / n

        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            with torch.no_grad():
                unbiased = m2 / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)

        invstd = torch.rsqrt(var + self.eps)
        y = (x - _expand(mean, x.dim())) * _expand(invstd, x.dim())
        if self.affine:
            y = y * _expand(self.weight.to(stat_dtype), x.dim()) + _expand(self.bias.to(stat_dtype), x.dim())
        return y.to(input.dtype)


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) with ``ndim`` dims."""
    return v.reshape([1, -1] + [1] * (ndim - 2))


class _AllGatherGroup(torch.autograd.Function):
    """:func:`all_gather_with_grad` restricted to ``group`` (used by SyncBatchNorm's process_group)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, group: object) -> torch.Tensor:
        ctx.group = group
        ctx.local_b = x.shape[0]
        ctx.rank = tdist.get_rank(group)
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size(group))]
        tdist.all_gather(out, x, group=group)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM, group=ctx.group)
        b = ctx.local_b
        return grad[ctx.rank * b:(ctx.rank + 1) * b], None


def to_sync_batchnorm(module: nn.Module, process_group: object | None = None) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by :class:`SyncBatchNorm` (in place where
    possible; returns the new root when ``module`` itself is a BN), keeping weights, biases, running
    statistics, ``num_batches_tracked``, ``requires_grad``, the training flag, device and dtype."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)
        if module.affine:
            new.weight = module.weight  # the same Parameter objects: optimizers stay valid
            new.bias = module.bias
        new.running_mean = module.running_mean
        new.running_var = module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = to_sync_batchnorm(child, process_group)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def convert_sync_batchnorm(model: nn.Module, use_torch_impl: bool | None = None) -> nn.Module:
    """Make every BatchNorm of ``model`` synchronise across ranks when world size > 1.

    Returns ``model`` unchanged in a single process. ``use_torch_impl`` picks PyTorch's
    ``nn.SyncBatchNorm`` (fused CUDA kernels; GPU only); ``None`` chooses it when the backend is NCCL
    and this module's CPU-capable :class:`SyncBatchNorm` otherwise. Call it before wrapping in DDP.
    """
    if world_size() == 1:
        return model
    if use_torch_impl is None:
        use_torch_impl = tdist.get_backend() == "nccl"
    if use_torch_impl:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return to_sync_batchnorm(model)
