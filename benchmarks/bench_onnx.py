"""ONNX export benchmarks: per preset and tower, the export time and the largest relative difference between
onnxruntime and PyTorch (the check ``mmv-torch export --onnx`` prints), on a network whose BatchNorm statistics are
calibrated on synthetic clips (:func:`calibrated_model`).

Usage (prints a markdown table; numbers go by hand, with the machine, to benchmarks/RESULTS.md, "ONNX"):

    python benchmarks/bench_onnx.py export --presets tiny mmv_s3d      # one preset per process is kinder to RAM
    python benchmarks/bench_onnx.py index --checkpoint CK --onnx DIR --videos CLIPS   # torch vs onnxruntime

``index`` times the embedding of the same decoded windows with PyTorch and with onnxruntime (same threads,
alternating, best of ``--repeats``), then ``index build`` end to end with each runtime, and compares the vectors.

The parity batches are 1 and 3 (the graphs are exported at batch 2 with a dynamic batch axis).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def calibrated_model(preset: str, seed: int = 0, windows: int = 6) -> torch.nn.Module:
    """``create_model(preset)`` seeded with ``seed``, its BatchNorm statistics averaged over one forward of
    ``windows`` windows of synthetic narrated clips at the preset's input contract, in eval mode.

    Statistics of i.i.d. noise are badly conditioned stand-ins: pooled, every noise clip gives nearly the same
    features, so the float32 rounding of a random network grows to 2-3e-4 relative through the S3D blocks (PyTorch
    in float32 against float64 differs by as much as onnxruntime does). Statistics of structured video do not."""
    import mmv_torch
    from mmv_torch.config import get_preset
    from mmv_torch.data.datasets import clip_span
    from mmv_torch.data.synthetic import write_dataset
    from mmv_torch.index.embedding import decode_windows

    cfg = get_preset(preset)
    span = clip_span(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(tmp, 4, seed, size=64, num_probe_train=0, num_probe_test=0, num_retrieval=0, workers=1,
                      duration=(2 * span, 3 * span))
        decoded = [decode_windows(p, cfg, span, span, thumbs=False) for p in sorted(Path(tmp).glob("clip_*.mp4"))]
    video = torch.cat([d.video for d in decoded])[:windows]
    audio = torch.cat([d.audio for d in decoded])[:windows]
    torch.manual_seed(seed)
    model = mmv_torch.create_model(preset)
    text = torch.randint(1, cfg.model.text.vocab_size, (windows, cfg.data.max_words))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # the cumulative average over the one calibration batch
    with torch.no_grad():
        model(video=video, audio=audio, text=text)
    return model.eval()


def float32_error(model: torch.nn.Module, cfg: object, tower: str, batch: int = 3, seed: int = 4) -> float:
    """The largest relative difference between the tower (with heads, normalised) in float32 and in float64 on
    the parity's inputs: the float32 accuracy of PyTorch itself, the floor for any float32 runtime."""
    import copy

    from mmv_torch.weights.onnx_export import ExportTower, example_inputs

    inputs = example_inputs(cfg, batch=batch, seed=seed)[tower]
    spaces = {"video": ("va", "vt"), "audio": ("va", "at", "vt"), "text": ("vt", "at")}[tower]
    exact = copy.deepcopy(model).double()
    worst = 0.0
    with torch.no_grad():
        got = ExportTower(model, tower, spaces)(*inputs)
        ref = ExportTower(exact, tower, spaces)(*(x.double() if x.is_floating_point() else x for x in inputs))
    for g, r in zip(got, ref):
        worst = max(worst, float((g.double() - r).abs().max() / r.abs().max()))
    return worst


def bench_export(presets: list[str], towers: list[str]) -> list[str]:
    from mmv_torch.config import get_preset
    from mmv_torch.weights.onnx_export import export_onnx, onnx_parity

    rows = ["| preset | tower | export s | onnxruntime vs PyTorch, largest relative difference (output) | "
            "PyTorch float32 vs float64 |", "|---|---|---|---|---|"]
    for preset in presets:
        cfg = get_preset(preset)
        model = calibrated_model(preset)
        for tower in towers:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                export_onnx(model, cfg, Path(tmp) / "onnx", towers=(tower,))
                took = time.perf_counter() - start
                worst = onnx_parity(model, cfg, Path(tmp) / "onnx", batches=(1, 3))
            detail = ", ".join(f"{k.split('.')[1]} {v:.1e}" for k, v in worst.items())
            rows.append(f"| {preset} | {tower} | {took:.1f} | {max(worst.values()):.1e} ({detail}) | "
                        f"{float32_error(model, cfg, tower):.1e} |")
            print(rows[-1], flush=True)
    return rows


def bench_index(checkpoint: str, onnx: str, videos: str, repeats: int) -> list[str]:
    import numpy as np

    from mmv_torch.data.datasets import clip_span
    from mmv_torch.index.build import build_index, list_videos
    from mmv_torch.index.embedding import decode_windows, embed_windows
    from mmv_torch.index.store import IndexStore
    from mmv_torch.weights.onnx_runtime import load_onnx_towers
    from mmv_torch.weights.resolve import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint)
    cfg = resolved.config
    span = clip_span(cfg.data)
    decoded = [decode_windows(p, cfg, span, span, thumbs=False) for p in list_videos(videos)[1]]
    windows = sum(d.video.shape[0] for d in decoded)
    runtimes = {"torch": resolved.load_model("cpu").eval(), "onnx": load_onnx_towers(onnx, resolved)}
    best = {k: float("inf") for k in runtimes}
    for _ in range(repeats):
        for name, model in runtimes.items():
            start = time.perf_counter()
            for d in decoded:
                embed_windows(model, d)
            best[name] = min(best[name], time.perf_counter() - start)
    rows = [f"{windows} windows of {len(decoded)} files, {torch.get_num_threads()} threads",
            "| runtime | embed s (best) | windows/s | index build s | vs torch (embed, build) | max rel. diff |",
            "|---|---|---|---|---|---|"]
    built: dict[str, float] = {}
    vectors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in runtimes:
            start = time.perf_counter()
            build_index(checkpoint, videos, Path(tmp) / name, progress=False, onnx=onnx if name == "onnx" else None)
            built[name] = time.perf_counter() - start
            store = IndexStore(Path(tmp) / name)
            vectors[name] = {s: store.vectors(s)[0] for s in ("video_vt", "video_va", "audio_va")}
            store.close()
    for name in runtimes:
        diff = max(float(np.abs(vectors[name][s] - vectors["torch"][s]).max() / np.abs(vectors["torch"][s]).max())
                   for s in vectors[name] if len(vectors[name][s]))
        rows.append(f"| {name} | {best[name]:.2f} | {windows / best[name]:.1f} | {built[name]:.1f} | "
                    f"{best['torch'] / best[name]:.2f}x, {built['torch'] / built[name]:.2f}x | {diff:.1e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="export time and onnxruntime parity per preset and tower")
    p.add_argument("--presets", nargs="+", default=["tiny"])
    p.add_argument("--towers", nargs="+", default=["video", "audio", "text"])
    p = sub.add_parser("index", help="index build speed: PyTorch vs onnxruntime on the same windows")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True, help="the checkpoint's `export --onnx` folder")
    p.add_argument("--videos", required=True)
    p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.1f}")
    if args.cmd == "index":
        rows = bench_index(args.checkpoint, args.onnx, args.videos, args.repeats)
    else:
        rows = bench_export(args.presets, args.towers)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
