"""Speed and memory of every preset's towers at the paper's input sizes.

For each (preset, tower, mode) it prints the time per clip of an inference forward (eval mode,
``torch.no_grad``, eval size) and of a training step (train mode, forward + backward of a scalar
loss, train size), the FLOPs per clip counted by ``torch.utils.flop_counter.FlopCounterMode``, the
achieved GFLOP/s and its fraction of the machine's fp32 GEMM peak (a 4096x4096 matmul) measured in
the same process right before and after the case, and the peak memory (CUDA: ``max_memory_allocated``;
CPU: the peak RSS of a fresh process that runs only that case, so it includes the ~0.3 GiB of the
PyTorch runtime).

Paper sizes: video 32x200x200 at batch 2 for training and 32x224x224 at batch 1 for evaluation;
audio a log-mel ``(B, 1, 1 + 100*audio_seconds, num_mel_bins)`` (10 ms hop); text ``(B, max_words)``.

    python benchmarks/bench_models.py --presets mmv_s3d --towers video --repeats 2
    python benchmarks/bench_models.py --presets tiny --compile --device cpu
    python benchmarks/bench_models.py --presets mmv_tsm_r50 --towers video --modes forward --cold
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmv_torch.config import PRESETS, Config
from mmv_torch.models.mmv import build_audio_backbone, build_video_backbone

TOWERS = ("video", "audio", "text")
MODES = ("forward", "train")


@dataclass(frozen=True)
class Case:
    """One measurement: a tower of a preset in one mode on one device."""

    preset: str
    tower: str
    mode: str
    device: str
    repeats: int
    compile: bool
    channels_last: bool
    frames: int
    train_size: int
    eval_size: int
    train_batch: int
    eval_batch: int
    cold: bool = False


def build_tower(cfg: Config, tower: str) -> nn.Module:
    """The ``tower`` ('video', 'audio' or 'text') of preset config ``cfg``."""
    m = cfg.model
    if tower == "video":
        return build_video_backbone(m.video, m.bn)
    if tower == "audio":
        return build_audio_backbone(m.audio, m.bn)
    if tower == "text":
        from mmv_torch.models.text import TextTower

        return TextTower(m.text)
    raise ValueError(f"unknown tower {tower!r}; valid: {list(TOWERS)}")


def make_input(cfg: Config, case: Case) -> torch.Tensor:
    """The input batch of ``case``: video ``(B,3,T,S,S)``, audio ``(B,1,T',F)`` or text ids ``(B,N)``."""
    train = case.mode == "train"
    b = case.train_batch if train else case.eval_batch
    g = torch.Generator().manual_seed(0)
    if case.tower == "video":
        s = case.train_size if train else case.eval_size
        return torch.rand(b, 3, case.frames, s, s, generator=g)
    if case.tower == "audio":
        t = 1 + int(round(cfg.data.audio_seconds * 100))
        return torch.randn(b, 1, t, cfg.data.num_mel_bins, generator=g)
    return torch.randint(0, cfg.model.text.vocab_size, (b, cfg.model.text.max_words), generator=g)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_peak(device: str, n: int = 4096, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of an ``n x n`` matmul on ``device``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def run_case(case: Case) -> dict[str, Any]:
    """Measure one case in this process; returns the numbers as a dict."""
    torch.manual_seed(0)
    cfg = PRESETS[case.preset]
    dev = case.device
    model = build_tower(cfg, case.tower).to(dev)
    x = make_input(cfg, case).to(dev)
    if case.channels_last and x.dim() in (4, 5):
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    train = case.mode == "train"
    model.train(train)
    if case.tower == "text":
        model.requires_grad_(True)
        for name, p in model.named_parameters():
            if "embed" in name:
                p.requires_grad_(False)
    fn = torch.compile(model) if case.compile else model

    def step() -> None:
        if train:
            fn(x).square().mean().backward()
            for p in model.parameters():
                p.grad = None
        else:
            with torch.no_grad():
                fn(x)

    def count_flops() -> int:
        # FLOPs of the plain eager ops: the inference path may use fused oneDNN ops the counter does not
        # know, so the forward is counted with autograd on (same maths, plain aten convolutions).
        with FlopCounterMode(display=False) as counter:
            y = model(x)
            if train:
                y.square().mean().backward()
        del y
        for p in model.parameters():
            p.grad = None
        return counter.get_total_flops()

    # --cold: the timed steps come first, so an inference case runs in a process that has not yet run
    # an autograd pass (whose large activations warm the allocator); the FLOPs are counted afterwards.
    flops = 0 if case.cold else count_flops()
    peak_before = gemm_peak(dev)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    _sync(dev)
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(case.repeats):
        t0 = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    peak_after = gemm_peak(dev)
    if case.cold:
        flops = count_flops()
    if dev == "cuda":
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    batch = x.shape[0]
    best = min(times)
    peak = max(peak_before, peak_after)
    return {
        "preset": case.preset, "tower": case.tower, "mode": case.mode, "device": dev,
        "input": "x".join(str(s) for s in x.shape), "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflop_per_clip": flops / batch / 1e9, "s_per_clip": best / batch,
        "s_per_clip_median": statistics.median(times) / batch, "warmup_s": warmup,
        "gflops": flops / best / 1e9, "gemm_peak_gflops": peak, "gemm_peak_before": peak_before,
        "gemm_peak_after": peak_after, "fraction": flops / best / 1e9 / peak, "peak_mem_mib": mem,
        "compile": case.compile, "channels_last": case.channels_last, "threads": torch.get_num_threads(),
        "cold": case.cold,
    }


def _worker(case: Case, queue: Any) -> None:
    try:
        queue.put(run_case(case))
    except Exception as e:  # reported in the table, the other cases still run
        queue.put({"preset": case.preset, "tower": case.tower, "mode": case.mode, "device": case.device,
                   "error": f"{type(e).__name__}: {e}"})


def run_isolated(case: Case) -> dict[str, Any]:
    """Run ``case`` in a fresh process so its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(case, queue))
    proc.start()
    proc.join()
    if queue.empty():
        return {"preset": case.preset, "tower": case.tower, "mode": case.mode, "device": case.device,
                "error": f"worker exited with code {proc.exitcode}"}
    return queue.get()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the results."""
    head = ("| preset | tower | mode | device | input (B×…) | GFLOP/clip | s/clip best | s/clip median | "
            "GFLOP/s | GEMM peak GFLOP/s | fraction of peak | peak mem MiB |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['tower']} | {r['mode']} | {r['device']} | error: {r['error']} "
                         "| | | | | | | |")
            continue
        lines.append(
            f"| {r['preset']} | {r['tower']} | {r['mode']} | {r['device']} | {r['input']} | "
            f"{r['gflop_per_clip']:.1f} | {r['s_per_clip']:.3f} | {r['s_per_clip_median']:.3f} | "
            f"{r['gflops']:.1f} | {r['gemm_peak_gflops']:.1f} | {100 * r['fraction']:.0f}% | "
            f"{r['peak_mem_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--towers", nargs="+", default=["video", "audio"], choices=TOWERS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="'all': CPU, and CUDA when available")
    p.add_argument("--repeats", type=int, default=2, help="timed iterations after one warm-up")
    p.add_argument("--compile", action="store_true", help="wrap the tower in torch.compile")
    p.add_argument("--channels-last", action="store_true",
                   help="also convert the tower and input to channels_last(_3d) in the benchmark (the video "
                        "towers already run channels-last by default)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--train-size", type=int, default=200)
    p.add_argument("--eval-size", type=int, default=224)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--eval-batch", type=int, default=1)
    p.add_argument("--in-process", action="store_true",
                   help="run the cases in this process (peak RSS is then cumulative)")
    p.add_argument("--cold", action="store_true",
                   help="time the steps before counting FLOPs (the counting forward runs autograd), so an "
                        "inference case measures a fresh inference-only process")
    p.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    devices = ["cpu"] if a.device == "cpu" else ["cuda"] if a.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()} threads={torch.get_num_threads()}  "
          f"load={os.getloadavg()[0]:.2f}  compile={a.compile} channels_last_flag={a.channels_last} cold={a.cold}")
    rows = []
    for dev in devices:
        for preset in a.presets:
            for tower in a.towers:
                for mode in a.modes:
                    case = Case(preset, tower, mode, dev, a.repeats, a.compile, a.channels_last, a.frames,
                                a.train_size, a.eval_size, a.train_batch, a.eval_batch, a.cold)
                    row = run_case(case) if a.in_process else run_isolated(case)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"# load at end={os.getloadavg()[0]:.2f}")
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    from mmv_torch.cli.runtime import enable_fast_cpu_memory

    enable_fast_cpu_memory()  # as the CLI: huge pages for large CPU tensors, before the first allocation
    main()
