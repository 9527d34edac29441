"""Time per step and peak memory of a contrastive batch of N = R x B clips by gradient caching
(``train.contrastive_batch = N``, micro-batches of B) against plain steps of batch B and of batch N.

Each configuration runs in a fresh process (so a CPU peak RSS is that configuration's own) and times
``mmv_torch.train.loop.train_step`` on in-memory synthetic batches (``bench_train.make_batch``: the preset's
data sizes; tiny: 8 x 64 x 64 video, 1 s of 40-bin log-mel, K = 3 narrations), data loading excluded:

- ``plain B``: one loss over B clips per step;
- ``cached R x B``: one loss over N = R x B clips, R micro-batches of B embedded twice (gradient caching);
- ``plain R x B``: one loss over N clips in one graph (where it fits).

Memory: CUDA ``max_memory_allocated`` since the model, optimizer and batches were set up (activations,
gradients, Adam state: the part that grows with the batch); CPU the peak RSS of the process and its growth
over the RSS after set-up (``rss_growth_mib``: activations, gradients, Adam state and the allocator's reuse).

    python benchmarks/bench_train_gradcache.py                        # tiny, B = 16, R = 4, CPU
    python benchmarks/bench_train_gradcache.py --device cuda --preset mmv_s3d --batch 8 --ratio 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TAG = "BENCH_GRADCACHE_RESULT "


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``spec["warmup"] + spec["steps"]`` train steps of one configuration (in this process)."""
    import itertools

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import make_batch

    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.models.mmv import MMV
    from mmv_torch.train.loop import TrainState, build_optimizer, freeze_unreached, train_step

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    total = spec["warmup"] + spec["steps"]
    cfg = apply_overrides(get_preset(spec["preset"]), {
        "train.batch_size": spec["batch"], "train.contrastive_batch": spec["contrastive_batch"],
        "train.steps": max(total, 10), "train.precision": spec["precision"]})
    torch.manual_seed(0)
    raw = MMV(cfg.model)
    freeze_unreached(raw, cfg)
    raw.to(device).train()
    optimizer = build_optimizer(raw, cfg)
    micro = cfg.train.micro_batches(1)
    # Batches as the loader gives them (host memory; the step moves each to the device when it embeds it).
    batches = [make_batch(cfg, spec["batch"], "cpu", seed=s) for s in range(micro)]
    state = TrainState(raw, raw, optimizer, torch.amp.GradScaler(device.type, enabled=False), cfg, device,
                       itertools.cycle(batches))
    rss_setup = _rss_mib()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times, losses = [], []
    for _ in range(total):
        t0 = time.perf_counter()
        losses.append(train_step(state).loss)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    out = {"step_times": times[spec["warmup"]:], "loss_first": losses[0], "rss_peak_mib": _rss_mib(),
           "rss_growth_mib": _rss_mib() - rss_setup, "micro_batches": micro}
    if device.type == "cuda":
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def launch(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run :func:`run` in a fresh interpreter; its result dict (``{"error": ...}`` when it failed, e.g. OOM)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}


def _row(name: str, spec: dict[str, Any], res: dict[str, Any]) -> str:
    if "error" in res:
        return f"| {name} | {spec['clips_per_loss']} | - | - | - | did not run: {res['error']} |"
    t = res["step_times"]
    mem = f"{res['cuda_peak_mib']:.0f} (CUDA)" if "cuda_peak_mib" in res else \
        f"{res['rss_peak_mib']:.0f} / +{res['rss_growth_mib']:.0f}"
    return (f"| {name} | {spec['clips_per_loss']} | {res['micro_batches']} | {statistics.median(t):.3f} "
            f"({min(t):.3f}-{max(t):.3f}) | {mem} | {res['loss_first']:.3f} |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16, help="micro-batch B")
    p.add_argument("--ratio", type=int, default=4, help="R: the contrastive batch is R x B")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(TAG + json.dumps(run(json.loads(args.worker))), flush=True)
        return []
    common = {"preset": args.preset, "device": args.device, "steps": args.steps, "warmup": args.warmup,
              "threads": args.threads, "precision": args.precision}
    big = args.batch * args.ratio
    configs = [(f"plain B={args.batch}", {"batch": args.batch, "contrastive_batch": 0, "clips_per_loss": args.batch}),
               (f"cached {args.ratio} x {args.batch}", {"batch": args.batch, "contrastive_batch": big,
                                                         "clips_per_loss": big}),
               (f"plain B={big}", {"batch": big, "contrastive_batch": 0, "clips_per_loss": big})]
    with open("/proc/loadavg") as f:
        load_start = f.read().split()[:3]
    rows, lines = [], []
    for name, extra in configs:
        spec = {**common, **extra}
        res = launch(spec, args.timeout)
        rows.append({"name": name, **spec, **res})
        lines.append(_row(name, spec, res))
    with open("/proc/loadavg") as f:
        load_end = f.read().split()[:3]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {' '.join(load_start)} at start, {' '.join(load_end)} at end")
    mem_head = "peak MiB (CUDA, since set-up)" if args.device.startswith("cuda") else "peak RSS MiB / growth"
    print(f"| config | clips per loss | micro-batches | s/step median (min-max) | {mem_head} | step-0 loss |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
