"""Training throughput (clips/s) and peak memory per preset, and scaling over processes.

Two modes, each configuration in fresh worker processes (so a CPU peak RSS is that configuration's own):

- ``step``: the loop's own optimizer step, :func:`mmv_torch.train.loop.train_step` (``MMV`` forward,
  ``mmv_loss``, backward through the GradScaler, gradient-norm clip, the finite check across ranks,
  Adam; ``train.grad_accum=1``) on one in-memory synthetic batch that already lives on the device, so
  data loading is excluded. Video ``(B,3,T,S,S)`` in [0,1], log-mel audio ``(B,1,T',F)`` of
  ``data.audio_seconds``, K narrations ``(B,K,N)`` of random word ids, sizes from the preset's ``data``
  config (tiny: 8x64x64, 1 s, 40 mel, K=3; paper presets: 32x200x200, 2 s, 80 mel, K=5).
- ``loop``: :func:`mmv_torch.train.loop.train` itself on a synthetic manifest (``--data synthetic:N``,
  generated once per preset before timing), decoding and augmentation included; the data time (waiting
  for the next batch) and the step time per step come from the run's ``log.jsonl`` (``log_every=1``),
  warm-up steps dropped.

``--processes 1 2`` launches every configuration with 1 and with 2 processes under torchrun's
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU,
NCCL on GPU (one GPU per process), SyncBatchNorm + DDP exactly as the loop wraps the model, the same
batch per process. ``--threads`` sets ``torch.set_num_threads`` per process; combinations using more
threads than CPU cores are skipped. The aggregate clips/s is ``processes * batch * steps`` over the
slowest rank's time; the efficiency of a P-process row is its aggregate over P times the 1-process
row with the same threads per process.

``CPU s/clip`` (step mode) is the user + system CPU time of all worker processes (all their threads) over
the timed steps per clip: unlike wall time it does not grow when other programs take the cores, so it
separates parallel overhead (spinning, communication) from a shared machine's contention.

Peak memory: CUDA ``max_memory_allocated`` (model, gradients, Adam state and activations); CPU the peak
RSS (``ru_maxrss``) of each worker process, including the ~0.3 GiB of the PyTorch runtime (the RSS after
``import torch`` is in the JSON as ``rss_base_mib``); loop rows leave the DataLoader workers out.

Variants: ``--bf16 both`` runs fp32 and bf16 autocast (as ``train.precision=bf16``); ``--channels-last
both`` runs the towers channels-last (the library default: the video batch in ``channels_last_3d``, the
TSM/R(2+1)D/audio towers with ``channels_last=True``) and without (every tower switch off, parameters
and the batch contiguous). The S3D tower has no switch (it always moves its input to
``channels_last_3d``), so its "off" rows are skipped; in ``loop`` mode only ``train.channels_last`` (the
batch layout) can be set.

    python benchmarks/bench_train.py                                          # tiny on CPU
    python benchmarks/bench_train.py --presets tiny --processes 1 2 --threads 1 2
    python benchmarks/bench_train.py --presets tiny --modes step loop
    python benchmarks/bench_train.py --presets mmv_s3d --device cpu --batch-size 2 --steps 2 --warmup 1
    python benchmarks/bench_train.py --device cuda   # every preset; fp32/bf16 x channels-last on/off
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "SLURM_PROCID", "SLURM_NTASKS")
PAPER_PRESETS = ("mmv_s3d", "mmv_tsm_r50", "mmv_tsm_r50x2", "va_r2plus1d_18")
RESULT_TAG = "BENCH_TRAIN_RESULT "


# ---------------------------------------------------------------------------------------------
# Worker side (runs in a fresh process; torch is imported here so the threads env applies first)


def make_batch(cfg: Any, batch_size: int, device: Any, seed: int = 0) -> dict[str, Any]:
    """An in-memory synthetic training batch on ``device``, shaped like the data pipeline's.

    ``video`` float32 (B,3,T,S,S) in [0,1] with T = ``data.num_frames`` and S = ``data.crop_size``;
    ``audio`` float32 (B,1,T',F), the log-mel shape of ``data.audio_seconds`` at ``data.sample_rate``;
    ``text`` int64 (B,K,N) word ids in [1, vocab) with K = ``data.num_candidates`` and N =
    ``data.max_words``; ``word_mask`` bool (B,K,N) with 3..N real words; ``text_mask`` bool (B,K) and
    ``has_audio`` bool (B,) all True.
    """
    import torch

    from mmv_torch.data.media.audio import log_mel_spectrogram

    d = cfg.data
    g = torch.Generator().manual_seed(seed)
    b, k, n = batch_size, d.num_candidates, d.max_words
    wave = torch.zeros(int(round(d.audio_seconds * d.sample_rate)))
    _, _, t_audio, n_mel = log_mel_spectrogram(wave, d.sample_rate, d.num_mel_bins).shape
    lengths = torch.randint(min(3, n), n + 1, (b, k, 1), generator=g)
    batch = {
        "video": torch.rand(b, 3, d.num_frames, d.crop_size, d.crop_size, generator=g),
        "audio": torch.randn(b, 1, t_audio, n_mel, generator=g),
        "has_audio": torch.ones(b, dtype=torch.bool),
        "text": torch.randint(1, cfg.model.text.vocab_size, (b, k, n), generator=g),
        "word_mask": torch.arange(n).expand(b, k, n) < lengths,
        "text_mask": torch.ones(b, k, dtype=torch.bool),
    }
    return {key: v.to(device) for key, v in batch.items()}


def set_channels_last(model: Any, on: bool) -> None:
    """Leave the towers channels-last (``on``, the default) or switch every tower's ``channels_last``
    attribute off and make 4-D/5-D parameters contiguous. Raises ``ValueError`` for an S3D video tower
    (it has no switch)."""
    import torch

    from mmv_torch.models.s3d import S3D

    if on:
        return
    if isinstance(model.video, S3D):
        raise ValueError("the S3D tower has no channels-last switch (it always runs channels_last_3d)")
    for m in model.modules():
        if isinstance(getattr(m, "channels_last", None), bool):
            m.channels_last = False
    model.to(memory_format=torch.contiguous_format)


def _peak_memory(device: Any) -> dict[str, float]:
    import torch

    out = {"rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["cuda_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_step(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Time ``spec["warmup"] + spec["steps"]`` calls of the loop's :func:`mmv_torch.train.loop.train_step` on
    one resident batch."""
    import itertools

    import torch

    from mmv_torch import dist
    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.models.mmv import MMV
    from mmv_torch.train.loop import TrainState, build_optimizer, freeze_unreached, to_device, train_step, wrap_for_ddp

    total = spec["warmup"] + spec["steps"]
    preset = get_preset(spec["preset"])
    cfg = apply_overrides(preset, {"train.batch_size": spec["batch"], "train.precision": spec["precision"],
                                   "train.channels_last": spec["channels_last"], "train.grad_accum": 1,
                                   "train.steps": max(total, preset.train.steps)})
    t = cfg.train
    torch.manual_seed(t.seed)
    raw = MMV(cfg.model)
    set_channels_last(raw, spec["channels_last"])
    freeze_unreached(raw, cfg)  # as the loop does, before the optimizer is built
    raw.to(device)
    optimizer = build_optimizer(raw, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    model = wrap_for_ddp(raw, device)
    model.train()
    batch = to_device(make_batch(cfg, t.batch_size, device, seed=dist.rank()), device, torch.float32,
                      t.channels_last)
    state = TrainState(model, raw, optimizer, scaler, cfg, device, itertools.repeat(batch))
    losses, times = [], []
    dist.barrier()
    for step in range(total):
        if step == spec["warmup"]:
            _sync(device)
            dist.barrier()
            t_start = time.perf_counter()
            cpu_start = _cpu_seconds()
        t0 = time.perf_counter()
        result = train_step(state)
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(result.loss)
    _sync(device)
    elapsed = time.perf_counter() - t_start
    cpu = _cpu_seconds() - cpu_start
    w = spec["warmup"]
    return {"elapsed_s": elapsed, "cpu_s": cpu, "step_times": times[w:], "warmup_times": times[:w],
            "loss_first": losses[0], "loss_last": losses[-1], "skipped_steps": state.bad_steps,
            "params_M": sum(p.numel() for p in raw.parameters()) / 1e6, **_peak_memory(device)}


def run_loop(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    """Run :func:`mmv_torch.train.loop.train` on the prepared synthetic manifest; per-step data and step time
    from its ``log.jsonl``."""
    from mmv_torch import dist
    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.train.loop import train

    total = spec["warmup"] + spec["steps"]
    cfg = apply_overrides(get_preset(spec["preset"]), {
        "train.batch_size": spec["batch"], "train.precision": spec["precision"],
        "train.channels_last": spec["channels_last"], "train.steps": total, "train.log_every": 1,
        "train.ckpt_every": total, "train.keep_ckpts": 1, "train.num_workers": spec["num_workers"]})
    run_dir = Path(spec["run_dir"])
    t0 = time.perf_counter()
    summary = train(cfg, [spec["manifest"]], run_dir, device=str(device), tensorboard=False, progress=False)
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": wall, "loop_clips_per_s_incl_warmup": summary["clips_per_s"],
                           "loss_last": summary["final_loss"], **_peak_memory(device)}
    out["rss_children_peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if dist.is_main():
        records = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln.strip()]
        timed = [r for r in records if "step_time" in r and r["step"] > spec["warmup"]]
        if len(timed) != spec["steps"]:
            raise RuntimeError(f"{run_dir / 'log.jsonl'}: expected {spec['steps']} timed step records after "
                               f"{spec['warmup']} warm-up steps, found {len(timed)}")
        out["step_times"] = [r["step_time"] for r in timed]
        out["data_times"] = [r["data_time"] for r in timed]
        out["elapsed_s"] = sum(out["step_times"])
    return out


def worker_main(spec_json: str) -> None:
    """Entry point of one worker process: measure ``spec`` and print one tagged JSON line."""
    spec = json.loads(spec_json)
    import torch

    torch.set_num_threads(spec["threads"])
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from mmv_torch import dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if spec["device"] == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        device = torch.device("cpu")
    if spec["mode"] == "step" and world > 1:
        dist.init_distributed(backend="nccl" if device.type == "cuda" else "gloo")
    result: dict[str, Any] = {"rank": dist.rank(), "world": world, "threads": torch.get_num_threads(),
                              "rss_base_mib": rss_base}
    try:
        result.update(run_step(spec, device) if spec["mode"] == "step" else run_loop(spec, device))
    except torch.cuda.OutOfMemoryError as e:
        result["error"] = f"CUDA out of memory: {str(e).splitlines()[0]}"
    finally:
        dist.destroy_distributed()
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Launcher side


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(spec: dict[str, Any], processes: int, timeout_s: float) -> list[dict[str, Any]]:
    """Run ``spec`` in ``processes`` fresh worker processes (torchrun-style variables when more than
    one); returns each rank's result dict, or one ``{"error": ...}`` when a worker failed."""
    port = _free_port()
    procs, logs = [], []
    base_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    threads = str(spec["threads"])
    base_env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    for rank in range(processes):
        env = dict(base_env)
        if processes > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        out = tempfile.TemporaryFile(mode="w+")
        err = tempfile.TemporaryFile(mode="w+")
        logs.append((out, err))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True))
    deadline = time.monotonic() + timeout_s
    timed_out = False
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results, errors = [], []
    for rank, (p, (out, err)) in enumerate(zip(procs, logs)):
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith(RESULT_TAG)]
        tail = " | ".join(err.read().strip().splitlines()[-3:])
        out.close()
        err.close()
        if lines:
            results.append(json.loads(lines[-1][len(RESULT_TAG):]))
        else:
            why = f"timed out after {timeout_s:.0f} s" if timed_out else f"exit code {p.returncode}"
            errors.append(f"rank {rank}: {why}: {tail}")
    if errors:
        return [{"error": "; ".join(errors)}]
    return results


def summarize(spec: dict[str, Any], processes: int, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from the per-rank results of a configuration."""
    row: dict[str, Any] = {k: spec[k] for k in ("preset", "device", "mode", "batch", "precision",
                                               "channels_last", "threads", "steps", "warmup")}
    row["processes"] = processes
    failed = [r["error"] for r in ranks if "error" in r]
    if failed:
        row["error"] = failed[0]
        return row
    main = next(r for r in ranks if r["rank"] == 0)
    slowest = max(r.get("elapsed_s", main["elapsed_s"]) for r in ranks)
    clips = processes * spec["batch"] * spec["steps"]
    row["clips_per_s"] = clips / slowest
    row["s_per_step"] = statistics.median(main["step_times"])
    if all("cpu_s" in r for r in ranks):
        row["cpu_s_per_clip"] = sum(r["cpu_s"] for r in ranks) / clips
    row["peak_rss_mib"] = max(r["rss_peak_mib"] for r in ranks)
    row["rss_base_mib"] = main["rss_base_mib"]
    if spec["device"] == "cuda":
        row["cuda_peak_mib"] = max(r["cuda_peak_mib"] for r in ranks)
    if "data_times" in main:
        row["data_s_per_step"] = statistics.mean(main["data_times"])
        compute = [s - d for s, d in zip(main["step_times"], main["data_times"])]
        row["compute_s_per_step"] = statistics.mean(compute)
        row["data_fraction"] = sum(main["data_times"]) / sum(main["step_times"])
        row["rss_children_peak_mib"] = main.get("rss_children_peak_mib")
    row["loss_last"] = main.get("loss_last")
    row["threads_actual"] = main["threads"]
    return row


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median clips/s among the repeats of one configuration (the lower median for an
    even count), with every run's clips/s in ``clips_per_s_runs``; the first error when all failed."""
    ok = sorted((r for r in runs if "clips_per_s" in r), key=lambda r: r["clips_per_s"])
    if not ok:
        return runs[0]
    row = dict(ok[(len(ok) - 1) // 2])
    row["clips_per_s_runs"] = [r["clips_per_s"] for r in runs if "clips_per_s" in r]
    row["failed_runs"] = len(runs) - len(ok)
    return row


def add_efficiency(rows: list[dict[str, Any]]) -> None:
    """``efficiency`` of each multi-process row: its clips/s over P x the matching 1-process row."""
    key_fields = ("preset", "device", "mode", "batch", "precision", "channels_last", "threads")
    single = {tuple(r[k] for k in key_fields): r for r in rows if r["processes"] == 1 and "clips_per_s" in r}
    for r in rows:
        if "clips_per_s" not in r:
            continue
        ref = single.get(tuple(r[k] for k in key_fields))
        if ref is not None and r["processes"] > 1:
            r["efficiency"] = r["clips_per_s"] / (r["processes"] * ref["clips_per_s"])


def _num(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows."""
    head = ("| preset | device | mode | procs x threads | batch/proc | precision | channels-last "
            "| steps (+warm-up) | s/step (median) | clips/s (all procs) | clips/s range over repeats "
            "| efficiency vs 1 proc | CPU s/clip | data s/step | compute s/step | peak mem MiB/proc |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        cl = "on" if r["channels_last"] else "off"
        lead = (f"| {r['preset']} | {r['device']} | {r['mode']} | {r['processes']} x {r['threads']} "
                f"| {r['batch']} | {r['precision']} | {cl} | {r['steps']} (+{r['warmup']}) |")
        if "error" in r:
            lines.append(f"{lead} {r['error'][:300]} | | | | | | | |")
            continue
        eff = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else ""
        data = f"{r['data_s_per_step']:.3f}" if "data_s_per_step" in r else "excluded"
        comp = f"{r['compute_s_per_step']:.3f}" if "compute_s_per_step" in r else ""
        mem = (f"{r['cuda_peak_mib']:.0f} (CUDA)" if "cuda_peak_mib" in r
               else f"{r['peak_rss_mib']:.0f} (RSS)")
        runs = r.get("clips_per_s_runs", [])
        spread = f"{_num(min(runs))}-{_num(max(runs))} ({len(runs)} runs)" if len(runs) > 1 else ""
        cpu = f"{r['cpu_s_per_clip']:.4f}" if "cpu_s_per_clip" in r else ""
        lines.append(f"{lead} {r['s_per_step']:.3f} | {_num(r['clips_per_s'])} | {spread} | {eff} | {cpu} "
                     f"| {data} | {comp} | {mem} |")
    return "\n".join(lines)


def _variants(choice: str) -> list[bool]:
    return {"on": [True], "off": [False], "both": [True, False]}[choice]


def _prepare_manifest(preset: str, batch: int, clips: int, cache: Path) -> str:
    """Generate (once) the synthetic set ``--data synthetic:N`` would train on; its manifest path."""
    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.train.data import synthetic_manifest

    cfg = apply_overrides(get_preset(preset), {"train.batch_size": batch})
    t0 = time.perf_counter()
    manifest = synthetic_manifest(f"synthetic:{clips}", cfg, cache / preset)
    print(f"# {preset}: {clips} synthetic clips in {cache / preset} ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    return str(manifest)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="+", help="default: tiny on CPU; every preset on CUDA")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="'auto': CUDA when available, else CPU")
    p.add_argument("--modes", nargs="+", choices=("step", "loop"), default=["step"],
                   help="'step': model+loss+optimizer on a resident batch; 'loop': train() on synthetic data")
    p.add_argument("--batch-size", type=int,
                   help="clips per process (default: the preset's train.batch_size: 16 tiny, 8 paper)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--bf16", choices=("off", "on", "both"),
                   help="bf16 autocast (default: both on CUDA, off on CPU)")
    p.add_argument("--channels-last", choices=("on", "off", "both"),
                   help="tower memory layout (default: both on CUDA, on on CPU)")
    p.add_argument("--processes", type=int, nargs="+", default=[1], help="process counts to compare")
    p.add_argument("--threads", type=int, nargs="+",
                   help="torch threads per process (default: CPU cores // processes)")
    p.add_argument("--oversubscribe", action="store_true", help="allow processes x threads > CPU cores")
    p.add_argument("--num-workers", type=int, help="loop mode: DataLoader workers (default: the preset's)")
    p.add_argument("--clips", type=int,
                   help="loop mode: synthetic clips (default: max(32, 2 x batch x procs))")
    p.add_argument("--repeats", type=int, default=1,
                   help="run each configuration this many times, interleaved; the table shows the median run")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--keep", help="loop mode: keep the synthetic data and run folders under this folder")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--render", help="only print the table of rows saved with --json")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark (or one worker, with ``--worker``); returns the table's rows."""
    p = _parser()
    a = p.parse_args(argv)
    if a.worker is not None:
        worker_main(a.worker)
        return []
    if a.render:
        rows = json.loads(Path(a.render).read_text())
        print(format_table(rows))
        return rows

    import torch

    from mmv_torch.config import PRESETS, get_preset

    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if a.device == "auto" else a.device
    if device == "cuda" and not cuda:
        p.error("--device cuda but torch.cuda.is_available() is False")
    presets = a.presets or (list(PRESETS) if device == "cuda" else ["tiny"])
    for name in presets:
        get_preset(name)  # ValueError listing the valid names
    if a.steps < 1 or a.repeats < 1 or a.warmup < 0 or any(n < 1 for n in a.processes):
        p.error("--steps, --repeats and --processes must be >= 1, --warmup >= 0")
    if device == "cuda" and max(a.processes) > torch.cuda.device_count():
        p.error(f"--processes {max(a.processes)} needs as many GPUs; {torch.cuda.device_count()} visible")
    bf16 = a.bf16 or ("both" if device == "cuda" else "off")
    layouts = _variants(a.channels_last or ("both" if device == "cuda" else "on"))
    precisions = ["fp32", "bf16"] if bf16 == "both" else ["bf16"] if bf16 == "on" else ["fp32"]
    cores = os.cpu_count() or 1
    combos = []
    for procs in a.processes:
        for threads in a.threads or [max(1, cores // procs)]:
            if device == "cpu" and procs * threads > cores and not a.oversubscribe:
                print(f"# skipped {procs} processes x {threads} threads: more than {cores} cores "
                      "(--oversubscribe to run it)")
                continue
            combos.append((procs, threads))

    cpu_name = platform.processor() or platform.machine()
    dev_name = torch.cuda.get_device_name() if device == "cuda" else cpu_name
    now = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"# {now}  torch {torch.__version__}  {dev_name}  cpus={cores}  "
          f"load={' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    configs: list[tuple[dict[str, Any], int]] = []
    rows: list[dict[str, Any]] = []
    try:
        for preset in presets:
            batch = a.batch_size or get_preset(preset).train.batch_size
            manifest = None
            if "loop" in a.modes:
                clips = a.clips or max(32, 2 * batch * max(a.processes))
                manifest = _prepare_manifest(preset, batch, clips, work / "data")
            for mode in a.modes:
                for precision in precisions:
                    for cl in layouts:
                        for procs, threads in combos:
                            spec = {"preset": preset, "device": device, "mode": mode, "batch": batch,
                                    "precision": precision, "channels_last": cl, "threads": threads,
                                    "steps": a.steps, "warmup": a.warmup}
                            if mode == "loop":
                                workers = a.num_workers
                                spec.update(manifest=manifest, num_workers=(
                                    workers if workers is not None else get_preset(preset).train.num_workers))
                            configs.append((spec, procs))
        runs: list[list[dict[str, Any]]] = [[] for _ in configs]
        for rep in range(a.repeats):  # interleaved, so a change of machine load hits every configuration
            for i, (spec, procs) in enumerate(configs):
                if not spec["channels_last"] and spec["mode"] == "step" and \
                        get_preset(spec["preset"]).model.video.backbone == "s3d":
                    why = "skipped: the S3D tower has no channels-last switch"
                    row = summarize(spec, procs, [{"error": why}])
                else:
                    if spec["mode"] == "loop":
                        spec = dict(spec, run_dir=str(work / "runs" / f"{i:03d}_{spec['preset']}_r{rep}"))
                    t0 = time.perf_counter()
                    row = summarize(spec, procs, launch(spec, procs, a.timeout))
                    row["wall_s"] = time.perf_counter() - t0
                row["repeat"] = rep
                runs[i].append(row)
                print(json.dumps(row), flush=True)
        rows = [median_run(r) for r in runs]
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    add_efficiency(rows)
    print(f"# load at end={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    from mmv_torch.cli.runtime import enable_fast_cpu_memory

    enable_fast_cpu_memory()  # as the CLI: huge pages for large CPU tensors, before the first allocation
    main()
