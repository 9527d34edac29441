"""The ``mmv-torch data ...`` and ``mmv-torch vocab ...`` subcommands: data sets, checks,
shards, frames, preparation from official annotation files, transcoding, and recovering a word table's vocabulary.
Each command parses its options and calls the library; :func:`add_data_parsers` and
:func:`add_vocab_parsers` register them on ``mmv-torch``'s parser."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from mmv_torch.cli.support import (
    COUNT,
    INPUT,
    NONNEG,
    OUTPUT,
    OUTPUT_FOLDER,
    OWNED_INPUT,
    POSITIVE,
    RATE,
    REPLACED_FOLDER,
    VALUE,
    VOCAB_OUTPUT,
    add_json_arg,
    classify,
    int_at_least,
)
from mmv_torch.config import DataConfig


def _cmd_data_synthetic(args: argparse.Namespace) -> int:
    import json

    from mmv_torch.data.synthetic import write_dataset

    summary = write_dataset(args.out_dir, args.num_clips, args.seed, size=args.size, fps=args.fps,
                            workers=args.workers, speech=args.speech, num_probe_train=args.num_probe_train,
                            num_probe_test=args.num_probe_test, num_retrieval=args.num_retrieval, progress=True)
    from pathlib import Path

    from mmv_torch.fileio import atomic_write_text

    out = Path(args.out_dir) / "summary.json"
    atomic_write_text(out, json.dumps(summary, indent=2, default=str) + "\n")
    counts = ", ".join(f"{n} {k}" for k, n in summary["counts"].items())
    print(f"wrote {summary['num_files']} clips ({counts}) to {args.out_dir} in {summary['seconds']:.1f} s; "
          f"manifests {', '.join(summary['manifests'].values())}; summary in {out}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from mmv_torch.data.tools.check import run_check

    report = run_check(args.path, args.json, args.clean, full=args.full)
    return 1 if report["num_bad"] > 0 else 0


def _cmd_data_shard(args: argparse.Namespace) -> int:
    from mmv_torch.data.tools.shard_writer import run_shard

    run_shard(args.manifest, args.out_dir, args.samples_per_shard, verify=not args.no_verify, overwrite=args.overwrite)
    return 0


def _cmd_data_frames(args: argparse.Namespace) -> int:
    from mmv_torch.data.tools.frames import write_middle_frames

    path = write_middle_frames(args.manifest, args.out_dir)
    print(f"wrote {path}; evaluate with: mmv-torch eval image --data {path} --checkpoint CKPT")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from mmv_torch.data.prepare import run_prepare

    run_prepare(args.dataset, args.annotations, args.media_root, args.out_manifest, split=args.split,
                pattern=args.pattern, labels=args.labels, json_out=args.json)
    return 0


def _cmd_data_transcode(args: argparse.Namespace) -> int:
    from mmv_torch.data.tools.transcode import TranscodeOptions, format_summary, run_transcode

    opts = TranscodeOptions(short_side=args.short_side or None, fps=args.fps,
                            keyframe_interval=args.keyframe_interval, crf=args.crf, preset=args.preset)
    report = run_transcode(args.manifest, args.out, opts, workers=args.workers, json_out=args.json,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_summary(report))
    return 1 if report["num_failed"] else 0


def _add_transcode_parser(data: Any) -> None:
    p = data.add_parser("transcode", help="re-encode a manifest's videos for training (short side, frame rate, "
                                          "key frame interval); writes the new manifest and a report")
    p.add_argument("manifest", help="JSONL manifest whose 'video' entries are re-encoded")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: the videos (same relative paths, .mp4), the new manifest (same name) and "
                        "transcode_report.json; a rerun skips the files already done")
    p.add_argument("--short-side", type=COUNT, default=256, help="scale the short side down to this (0: keep)")
    p.add_argument("--fps", type=RATE, default=None, help="constant output frame rate (default: keep the source's)")
    p.add_argument("--keyframe-interval", type=RATE, default=0.5, metavar="S", help="seconds between key frames")
    p.add_argument("--crf", type=COUNT, default=23, help="libx264 quality (0-51, lower is better)")
    p.add_argument("--preset", default="veryfast", help="libx264 preset")
    p.add_argument("--workers", type=POSITIVE, default=1, help="parallel encoding processes")
    p.add_argument("--json", default=None, metavar="REPORT", help="write the report here instead")
    p.set_defaults(func=_cmd_data_transcode)
    classify(p, manifest=INPUT, out=OUTPUT_FOLDER, json=OUTPUT, preset=VALUE)


def add_data_parsers(sub: Any) -> None:
    data = sub.add_parser("data", help="data tools: synthetic sets, checks, shards, frames, prepare, transcode, "
                                       "bench")
    data = data.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synthetic", help="write a synthetic narrated-video data set (mp4 + manifests)")
    p.add_argument("out_dir")
    p.add_argument("--num-clips", type=COUNT, default=200, help="pretraining clips (probe/retrieval sets extra)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int_at_least(8), default=64, help="frame height and width in pixels")
    p.add_argument("--fps", type=RATE, default=16.0)
    p.add_argument("--workers", type=POSITIVE, default=2)
    p.add_argument("--speech", action="store_true", help="mix espeak-ng narration into the audio track")
    p.add_argument("--num-probe-train", type=COUNT, default=None, help="default: num_clips // 2")
    p.add_argument("--num-probe-test", type=COUNT, default=None, help="default: num_clips // 4")
    p.add_argument("--num-retrieval", type=COUNT, default=None, help="default: num_clips // 8")
    p.set_defaults(func=_cmd_data_synthetic)
    classify(p, out_dir=OUTPUT_FOLDER)
    p = data.add_parser("check", help="report for every file of a manifest or folder what decodes and why not")
    p.add_argument("path", help="a JSONL manifest or a folder of media files")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--clean", default=None, help="write a manifest with only the good entries here")
    p.add_argument("--full", action="store_true",
                   help="decode every frame and audio packet (finds mid-file corruption; slow). Default: the "
                        "header, the start and the last second of each file")
    p.set_defaults(func=_cmd_data_check)
    classify(p, path=INPUT, json=OUTPUT, clean=OUTPUT)
    p = data.add_parser("shard", help="write WebDataset tar shards from a pretraining manifest")
    p.add_argument("manifest")
    p.add_argument("out_dir")
    p.add_argument("--samples-per-shard", type=POSITIVE, default=1000)
    p.add_argument("--no-verify", action="store_true", help="do not decode each file before sharding it")
    p.add_argument("--overwrite", action="store_true",
                   help="out_dir is not empty: replace its contents once the new shards are complete")
    p.set_defaults(func=_cmd_data_shard)
    classify(p, manifest=INPUT, out_dir=REPLACED_FOLDER)
    p = data.add_parser("frames", help="the middle frame of every video of a labelled manifest, as an image set")
    p.add_argument("manifest", help="labelled JSONL manifest whose entries are videos")
    p.add_argument("out_dir", help="folder for img_NNNN.png and images.jsonl")
    p.set_defaults(func=_cmd_data_frames)
    classify(p, manifest=INPUT, out_dir=OUTPUT_FOLDER)
    _add_prepare_parser(data)
    _add_transcode_parser(data)
    from mmv_torch.cli.data import add_bench_arguments, run_bench_command

    p = data.add_parser("bench", help="clips/s of the training input pipeline against the raw decode rate")
    add_bench_arguments(p)
    p.set_defaults(func=run_bench_command)
    classify(p, manifest=INPUT, json=OUTPUT, preset=VALUE)


def _add_prepare_parser(data: Any) -> None:
    names = ("howto100m", "audioset", "msrvtt", "youcook2", "kinetics", "vggsound", "ucf101", "hmdb51", "esc50",
             "voc2007", "imagenet")
    p = data.add_parser("prepare", help="a manifest of one of the paper's data sets from its official annotation "
                                        "files and a folder of downloaded media")
    p.add_argument("dataset", choices=names)
    p.add_argument("--annotations", required=True, metavar="PATH",
                   help="the data set's annotation file (or folder: HowTo100M <id>.csv files, UCF101/HMDB51 splits, "
                        "VOC2007 with Annotations/ and ImageSets/, ImageNet with train/ and val/)")
    p.add_argument("--media-root", required=True, metavar="DIR",
                   help="downloaded media, searched recursively by each set's usual file name, any extension")
    p.add_argument("--out", required=True, dest="out_manifest", metavar="MANIFEST.jsonl",
                   help="the manifest to write (paths relative to its folder)")
    p.add_argument("--split", default=None, help="msrvtt: train|validate|test; youcook2: validation|training; "
                   "kinetics: train|validate|test; audioset, vggsound: train|test; "
                   "ucf101/hmdb51: 1-3; esc50: test fold; voc2007: trainval|train|val|test; imagenet: train|val")
    p.add_argument("--pattern", default=None, help="media file name with {id}, {start}, {end} (integer seconds); "
                   "with {start}: pre-cut files, otherwise the segment is a window inside the file")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="audioset: class_labels_indices.csv; imagenet: LOC_synset_mapping.txt (default: beside "
                        "--annotations)")
    p.add_argument("--json", default=None, metavar="REPORT", help="write the report (missing media, malformed "
                   "rows, each with its reason) here")
    p.set_defaults(func=_cmd_data_prepare)
    classify(p, annotations=INPUT, media_root=INPUT, out_manifest=OUTPUT, split=VALUE, pattern=VALUE, labels=INPUT,
             json=OUTPUT)


def _cmd_vocab_match(args: argparse.Namespace) -> int:
    from mmv_torch.weights.resolve import resolve_checkpoint
    from mmv_torch.weights.vocab_match import MatchRefused, run_vocab_match

    resolved = resolve_checkpoint(args.checkpoint)
    print(f"mmv-torch vocab match: {resolved.description}", file=sys.stderr)
    table = resolved.load_model().text.embed.weight
    try:
        r = run_vocab_match(table, args.vocab_out, args.vectors, args.words, args.json, args.min_match, args.name)
    except MatchRefused as e:
        print(f"mmv-torch vocab match: refused: {e}", file=sys.stderr)
        return 1
    print(f"{r['matched']} of {r['rows']} rows matched ({r['match_rate']:.2%}; {r['exact']} exact), "
          f"{len(r['special'])} special, {r['ambiguous_count']} ambiguous, {r['unmatched_count']} unmatched: "
          f"{r['kind']} vocabulary {args.vocab_out}")
    return 0


def add_vocab_parsers(sub: Any) -> None:
    def row_name(text: str) -> tuple[int, str]:
        row, sep, word = text.partition("=")
        if not sep or not row.strip().isdigit() or not word or word.split() != [word]:
            raise argparse.ArgumentTypeError(f"expected ROW=WORD (e.g. 1=<bos>), got {text!r}")
        return int(row), word

    vocab = sub.add_parser("vocab", help="vocabularies of word tables").add_subparsers(dest="vocab_command",
                                                                                       required=True)
    p = vocab.add_parser("match", help="recover or verify the word of every row of a checkpoint's frozen word table "
                                       "from a word-vector source; writes a DMVR vocabulary")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a training run folder, an export or `mmv-torch convert` folder, or a training checkpoint .pt")
    p.add_argument("--vectors", default=None, metavar="SPEC",
                   help="word2vec (binary or text) or GloVe file, glove-6b-50d (bundled; default), or a matrix "
                        ".pkl/.npz/.npy (key word_embeddings) with --words")
    p.add_argument("--words", default=None, metavar="FILE", help="word list of the matrix rows (line i = row i)")
    p.add_argument("--out", dest="vocab_out", required=True, metavar="VOCAB.txt",
                   help="the vocabulary: 'idx word' lines in row order")
    add_json_arg(p)
    p.add_argument("--min-match", type=NONNEG, default=0.9,
                   help="refuse (exit 1, nothing written) when fewer of the rows match")
    p.add_argument("--name", type=row_name, action="append", default=[], metavar="ROW=WORD",
                   help="name a row instead of matching it (repeatable), e.g. --name 1=<bos>")
    p.set_defaults(func=_cmd_vocab_match)
    classify(p, checkpoint=OWNED_INPUT, vectors=INPUT, words=INPUT, vocab_out=VOCAB_OUTPUT, json=OUTPUT)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``mmv-torch data bench`` (see :func:`run_bench_command`)."""
    parser.add_argument("manifest", help="pretraining manifest (JSONL) whose videos are loaded")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds each worker runs (default 20)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON to OUT")
    parser.add_argument("--target-clips-per-s", type=float, default=None, metavar="R",
                        help="per-worker target rate (default: 60%% of the measured decode limit)")
    parser.add_argument("--augment-on", choices=("worker", "batch"), default=None,
                        help="data.augment_on: where the augmentation runs (default: the preset's)")
    parser.add_argument("--clips-per-video", type=int, default=None, metavar="K",
                        help="data.clips_per_video: clips decoded per opened video (default: the preset's)")
    parser.add_argument("--preset", default=None, help="take the data settings of this preset (default: the "
                        "paper's: 32 frames at 10 fps, 200 crop, 2 s audio)")


def run_bench_command(args: argparse.Namespace) -> int:
    """``mmv-torch data bench``: run, print the report, write ``--json``.

    Exit status 1 when ``--target-clips-per-s`` was given and the pipeline is below it, else 0.
    """
    from mmv_torch.config import get_preset
    from mmv_torch.data.tools.bench import format_report, run_data_bench
    from mmv_torch.fileio import atomic_write_text

    cfg = get_preset(args.preset).data if args.preset else DataConfig()
    if getattr(args, "augment_on", None):
        cfg = dataclasses.replace(cfg, augment_on=args.augment_on)
    if getattr(args, "clips_per_video", None) is not None:
        cfg = dataclasses.replace(cfg, clips_per_video=args.clips_per_video)
    result = run_data_bench(args.manifest, cfg, args.workers, args.seconds, args.target_clips_per_s)
    print(format_report(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 1 if args.target_clips_per_s is not None and not result["meets_target"] else 0
