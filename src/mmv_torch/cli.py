"""Command-line interface: ``mmv-torch <command>`` (also ``python -m mmv_torch``).

Every command is a small function that parses its arguments and calls the library; heavy imports
happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from mmv_torch.config import PRESETS
    from mmv_torch.models.mmv import MMV

    rows = []
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            counts = MMV(cfg.model).parameter_counts()
        v = cfg.model.video
        desc = f"{v.backbone}" + (f"{v.depth}" if v.backbone != "s3d" else "") + (
            f" x{v.width_mult:g}" if v.width_mult != 1 else "")
        rows.append((name, desc, counts["video"], counts["audio"], counts["text"], counts["heads"], counts["total"]))
    header = ("preset", "video backbone", "video", "audio", "text", "heads", "total")
    table = [header] + [tuple(c if i < 2 else f"{c:,}" for i, c in enumerate(r)) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("Parameter counts include the frozen word-vector table of the text tower.")
    return 0


def _cmd_data_synthetic(args: argparse.Namespace) -> int:
    import json

    from mmv_torch.data.synthetic import write_dataset

    summary = write_dataset(args.out_dir, args.num_clips, args.seed, size=args.size, fps=args.fps,
                            workers=args.workers, speech=args.speech, num_probe_train=args.num_probe_train,
                            num_probe_test=args.num_probe_test, num_retrieval=args.num_retrieval)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from mmv_torch.data.check import run_check

    report = run_check(args.path, args.json, args.clean)
    return 1 if report["num_bad"] > 0 else 0


def _cmd_data_shard(args: argparse.Namespace) -> int:
    from mmv_torch.data.shards import run_shard

    run_shard(args.manifest, args.out_dir, args.samples_per_shard, verify=not args.no_verify)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from mmv_torch.convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out_dir)
    print(f"wrote {out}; load it with create_model(checkpoint={str(out)!r})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mmv_torch.train import TrainingDivergedError, run_train

    if args.preset is None and args.config is None:
        raise ValueError("train needs --preset NAME or --config run.json")
    try:
        summary = run_train(args.preset, [d for d in args.data.split(",") if d], args.out, args.set or [],
                            args.resume, args.config)
    except TrainingDivergedError as e:
        print(f"mmv-torch train: stopped: {e}", file=sys.stderr)
        return 3
    print(f"done: {summary.get('steps', '?')} steps, final loss {summary.get('final_loss')}, "
          f"export {summary.get('export')}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mmv_torch.demo import QUICK, DemoSettings, run_demo

    settings = QUICK if args.quick else DemoSettings()
    if args.steps is not None:
        settings = DemoSettings(**{**settings.__dict__, "steps": args.steps})
    run_demo(args.out, settings, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mmv-torch", description="MultiModal Versatile Networks in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model presets with parameter counts per tower")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="synthetic data -> train the tiny model -> evaluate -> report")
    p.add_argument("--out", default="runs/demo", help="output folder (data, run, report.md, plots)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's setting)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run with tiny sizes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert", help="convert a released DeepMind MMV checkpoint (.pkl) to safetensors")
    p.add_argument("checkpoint", help="mmv_s3d.pkl, mmv_tsm_resnet_x1.pkl or mmv_tsm_resnet_x2.pkl")
    p.add_argument("out_dir", help="folder for model.safetensors + config.json")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("train", help="self-supervised multimodal training")
    p.add_argument("--preset", default=None, help="model/run preset (see `mmv-torch models`)")
    p.add_argument("--config", default=None, help="a saved config.json (instead of --preset)")
    p.add_argument("--data", required=True,
                   help="comma-separated: manifest.jsonl[@weight], a data folder, a shard folder, or synthetic[:N]")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-3")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint path")
    p.set_defaults(func=_cmd_train)

    data = sub.add_parser("data", help="data tools: synthetic sets, checks, shards").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("synthetic", help="write a synthetic narrated-video data set (mp4 + manifests)")
    p.add_argument("out_dir")
    p.add_argument("--num-clips", type=int, default=200, help="pretraining clips (probe/retrieval sets extra)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--speech", action="store_true", help="mix espeak-ng narration into the audio track")
    p.add_argument("--num-probe-train", type=int, default=None, help="default: num_clips // 2")
    p.add_argument("--num-probe-test", type=int, default=None, help="default: num_clips // 4")
    p.add_argument("--num-retrieval", type=int, default=None, help="default: num_clips // 8")
    p.set_defaults(func=_cmd_data_synthetic)
    p = data.add_parser("check", help="report for every file of a manifest or folder what decodes and why not")
    p.add_argument("path", help="a JSONL manifest or a folder of media files")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--clean", default=None, help="write a manifest with only the good entries here")
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("shard", help="write WebDataset tar shards from a pretraining manifest")
    p.add_argument("manifest")
    p.add_argument("out_dir")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--no-verify", action="store_true", help="do not decode each file before sharding it")
    p.set_defaults(func=_cmd_data_shard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ValueError as e:
        print(f"mmv-torch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
