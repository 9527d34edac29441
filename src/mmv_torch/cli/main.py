"""Command-line interface: ``mmv-torch <command>`` (also ``python -m mmv_torch``).

Every command is a small function that parses its arguments and calls the library; heavy imports
happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mmv_torch.cli.data import add_data_parsers, add_vocab_parsers
from mmv_torch.cli.eval import add_eval_parsers
from mmv_torch.cli.index import add_index_parsers
from mmv_torch.cli.support import (
    INPUT,
    INPUT_SPECS,
    OUTPUT_FOLDER,
    OWNED_INPUT,
    POSITIVE,
    REPLACED_FOLDER,
    RESUME,
    VALUE,
    Parser,
    anticipated,
    check_outputs,
    classify,
    one_line,
    resume_command,
)


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
    from mmv_torch.weights.fetch import OFFICIAL_PAGE, RELEASED

    print(f"\nReleased weights (DeepMind, {OFFICIAL_PAGE}); `mmv-torch fetch PRESET` downloads, verifies and "
          "converts them:")
    for name in PRESETS:
        r = RELEASED.get(name)
        print(f"  {name.ljust(widths[0])}  " + (f"{r.licence} (non-commercial use)  {r.url}" if r else "none released"))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from mmv_torch.weights.fetch import fetch_weights

    out = args.out or f"weights/{args.name}"
    origin = fetch_weights(args.name, out, url=args.url, sha256=args.sha256, cache=args.cache,
                           progress=not args.quiet, say=lambda m: print(m, file=sys.stderr))
    check = "verified" if origin["sha256_verified"] else "recorded (no published checksum to verify against)"
    print(f"wrote {out} (licence {origin['licence']}; sha256 {origin['sha256']} {check}); load it with "
          f"mmv_torch.load({out!r})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from mmv_torch.weights.convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out_dir)
    print(f"wrote {out}; load it with create_model(checkpoint={str(out)!r})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if not args.hub and not args.onnx:
        raise ValueError("export needs --hub DIR and/or --onnx DIR")
    if args.hub:
        from mmv_torch.weights.hub import parse_hub_id
        from mmv_torch.weights.hub_export import export_hub

        if args.hub_id:
            parse_hub_id(args.hub_id)
        out = export_hub(args.checkpoint, args.hub, name=args.name, licence=args.license, metrics=args.metrics or (),
                         hub_id=args.hub_id)
        print(f"wrote {out} (weights, config, model card); upload it with: huggingface-cli upload "
              f"{args.hub_id or 'ORG/NAME'} {out}")
    if args.onnx:
        from mmv_torch.weights.onnx_export import export_onnx, onnx_parity
        from mmv_torch.weights.resolve import resolve_checkpoint

        resolved = resolve_checkpoint(args.checkpoint)
        model = resolved.load_model("cpu")
        towers = tuple(t for t in args.towers.split(",") if t)
        record = export_onnx(model, resolved.config, args.onnx, towers=towers)
        worst = onnx_parity(model, resolved.config, args.onnx)
        print(f"wrote {args.onnx} ({', '.join(record['towers'])}); onnxruntime vs PyTorch, largest relative "
              f"difference {max(worst.values()):.2e} ({max(worst, key=worst.get)})")
    return 0


def _is_launcher_rank0() -> bool:
    """Rank 0 of a torchrun launch (or a plain process): the one that owns the run folder."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _cmd_train(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from mmv_torch.runs import claim_run_dir
    from mmv_torch.train.loop import TrainingDivergedError, run_train
    from mmv_torch.train.run_folder import discard_unsaved_run

    if (args.preset is None) == (args.config is None):
        raise ValueError("train needs exactly one of --preset NAME or --config run.json"
                         + (" (got both: --config holds the whole config)" if args.preset else ""))
    rank0, existed = _is_launcher_rank0(), Path(args.out).exists()
    owner = (claim_run_dir(args.out, resume=args.resume is not None, overwrite=args.overwrite)
             if rank0 else contextlib.nullcontext())
    with owner, (discard_unsaved_run(args.out, fresh=args.resume is None, created=not existed) if rank0
                 else contextlib.nullcontext()):
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
    from mmv_torch.demo import QUICK, DemoSettings, demo_config, run_demo

    settings = QUICK if args.quick else DemoSettings()
    changes: dict[str, Any] = {"overrides": tuple(args.set or ())}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.num_clips is not None:
        changes["num_clips"] = args.num_clips
    settings = dataclasses.replace(settings, **changes)
    demo_config(settings)  # a wrong --set key fails here, before any data is written
    run_demo(args.out, settings, progress=not args.no_progress)
    return 0


# ---------------------------------------------------------------------------------------------
# embed / eval commands: options -> library calls (mmv_torch.eval.pipelines, mmv_torch.data.sources)





































def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from mmv_torch.version import __version__

    parser = Parser(prog="mmv-torch", description="MultiModal Versatile Networks in PyTorch")
    parser.add_argument("--version", action="version", version=f"mmv-torch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model presets with parameter counts per tower")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="synthetic data -> train the tiny model -> evaluate -> report")
    p.add_argument("--out", default="runs/demo", help="output folder (data, run, report.md, plots)")
    p.add_argument("--steps", type=POSITIVE, default=None, help="training steps (default: the demo's setting)")
    p.add_argument("--num-clips", type=POSITIVE, default=None, help="pretraining clips (default: the demo's setting)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on top of the demo's, for ablations, e.g. loss.form=mean")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run with tiny sizes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)
    classify(p, out=OUTPUT_FOLDER, set=VALUE)

    p = sub.add_parser("convert", help="convert a released DeepMind MMV checkpoint (.pkl) to safetensors")
    p.add_argument("checkpoint", help="mmv_s3d.pkl, mmv_tsm_resnet_x1.pkl or mmv_tsm_resnet_x2.pkl")
    p.add_argument("out_dir", help="folder for model.safetensors + config.json")
    p.set_defaults(func=_cmd_convert)
    classify(p, checkpoint=INPUT, out_dir=REPLACED_FOLDER)

    p = sub.add_parser("fetch", help="download released weights (progress, resume), verify, convert; records the "
                                     "origin and licence")
    p.add_argument("name", help="a preset with released weights (see `mmv-torch models`), or any name with --url")
    p.add_argument("--url", default=None, help="download from here instead of the official URL")
    p.add_argument("--sha256", default=None, metavar="HEX", help="refuse a download with another SHA-256")
    p.add_argument("--out", default=None, metavar="DIR", help="the converted folder (default: weights/NAME)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="where downloads are kept and resumed (default: $MMV_TORCH_CACHE or ~/.cache/mmv-torch)")
    p.set_defaults(func=_cmd_fetch)
    classify(p, name=VALUE, url=VALUE, sha256=VALUE, out=OUTPUT_FOLDER, cache=OUTPUT_FOLDER)

    p = sub.add_parser("export", help="a Hub-ready folder with a model card (--hub) and/or ONNX towers (--onnx)")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a run folder, an export, a converted or fetched folder, a checkpoint .pt or hf-hub:ORG/NAME")
    p.add_argument("--hub", default=None, metavar="DIR", help="write a Hugging Face Hub repository folder here")
    p.add_argument("--hub-id", default=None, metavar="ORG/NAME", help="the repository it will be uploaded to "
                                                                      "(named in the card's loading snippet)")
    p.add_argument("--name", default=None, help="the model card's title (default: from --hub-id or the checkpoint)")
    p.add_argument("--license", default=None, help="licence of the weights (default: the recorded one, e.g. CC BY-NC "
                                                   "4.0 for fetched weights; else 'other')")
    p.add_argument("--metrics", nargs="*", metavar="JSON", help="evaluation JSONs (`eval ... --json`) for the card")
    p.add_argument("--onnx", default=None, metavar="DIR", help="write video.onnx, audio.onnx, text.onnx here")
    p.add_argument("--towers", default="video,audio,text", help="which towers --onnx exports")
    p.set_defaults(func=_cmd_export)
    classify(p, checkpoint=OWNED_INPUT, hub=OUTPUT_FOLDER, hub_id=VALUE, name=VALUE, license=VALUE, metrics=INPUT,
             onnx=OUTPUT_FOLDER, towers=VALUE)

    p = sub.add_parser("train", help="self-supervised multimodal training")
    p.add_argument("--preset", default=None, help="model/run preset (see `mmv-torch models`)")
    p.add_argument("--config", default=None, help="a saved config.json (instead of --preset)")
    p.add_argument("--data", required=True,
                   help="comma-separated: manifest.jsonl[@weight], a data folder, a shard folder, or synthetic[:N]")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-3")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint path")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds a run: move it aside to OUT.old-<time> (never deleted) and start afresh")
    p.set_defaults(func=_cmd_train)
    classify(p, preset=VALUE, config=INPUT, data=INPUT_SPECS, out=OUTPUT_FOLDER, set=VALUE, resume=RESUME)

    add_eval_parsers(sub)
    add_data_parsers(sub)
    add_vocab_parsers(sub)
    add_index_parsers(sub)
    _add_quiet(parser)
    return parser


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bars) on every leaf command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars (none either when stderr "
                                                                     "is not a terminal)")
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            _add_quiet(child)




def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Anticipated failures (bad options, files, data, devices, corrupt weights) print one line on stderr
    and return 2; Ctrl-C returns 130; unexpected exceptions keep their traceback."""
    from mmv_torch.cli.runtime import enable_fast_cpu_memory
    from mmv_torch.runs import Interrupted

    enable_fast_cpu_memory()  # before the first CPU tensor: huge pages for large activations
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from mmv_torch.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    name = " ".join([args.command] + [v for k, v in sorted(vars(args).items()) if k.endswith("_command") and v])
    try:
        check_outputs(args)
        return func(args)
    except Interrupted as e:
        again = resume_command(list(sys.argv[1:] if argv is None else argv))
        print(f"mmv-torch {name}: interrupted at step {e.step} (checkpoint {e.checkpoint}); continue with: {again}",
              file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" or getattr(args, "eval_command", None) == "finetune":
            hint = f"; continue with the same command and --resume latest (run folder {args.out})"
        print(f"mmv-torch {name}: interrupted{hint}", file=sys.stderr)
        return 130
    except anticipated() as e:
        print(f"mmv-torch {name}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
