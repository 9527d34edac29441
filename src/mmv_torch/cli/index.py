"""The ``mmv-torch index ...`` and ``mmv-torch serve`` subcommands: build, extend and query
a search index of a video collection, and serve it as a local web page (:mod:`mmv_torch.index`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
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
    VALUE,
    add_device_arg,
    classify,
    device_name,
    int_at_least,
)
from mmv_torch.fileio import atomic_write_text


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    value = int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {value}")
    return value


def _cmd_index(args: argparse.Namespace) -> int:
    if getattr(args, "index_command", None) == "check":
        return _check(args)
    return _run_index_command(args, device_name(args.device))


def _run_index_command(args: argparse.Namespace, device: str) -> int:
    """Run ``serve``, ``index build``, ``index add`` or ``index search`` and print the summary or hits;
    returns the exit status."""
    if args.command == "serve":
        from mmv_torch.extras import require

        for module in ("fastapi", "uvicorn", "multipart"):
            require(module, "mmv-torch serve")
        from mmv_torch.index.server import serve

        serve(args.index, host=args.host, port=args.port, device=device, max_upload_mb=args.max_upload_mb,
              allowed_hosts=args.allowed_host)
        return 0
    result = _run(args, device)
    if result.get("missing_files"):
        import sys

        print(f"{result['missing_files']} indexed files no longer exist; `mmv-torch index add {result['index']} "
              "--videos DIR --prune` removes them", file=sys.stderr)
    if args.index_command == "search" and not args.json_stdout and args.json != "-":
        for hit in result["results"]:
            score = "   -  " if hit["score"] is None else f"{hit['score']:.4f}"
            print(f"{score}  cos {hit['cosine']:+.3f}  {hit['start']:7.2f}-{hit['end']:7.2f} s  {hit['path']}")
        if result["message"]:
            print(result["message"])
    else:
        print(json.dumps(result, indent=1))
    if args.index_command in ("build", "add"):
        import sys

        for space, kind in result.get("nn_index", {}).items():
            print(f"search index {space}: {kind.get('factory', kind.get('type'))}"
                  + (f", nprobe {kind['nprobe']}" if kind.get("nprobe") else "")
                  + (f", top {kind['rerank']}x k re-ranked" if kind.get("rerank") else "")
                  + (f", recall@10 {kind['recall_at_10']} ({kind.get('recall_measured', '')})"
                     if "recall_at_10" in kind else ""), file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    """``index check``: one line per problem with its fix; exit status 0 when the index is sound, 1 when
    problems are left."""
    from mmv_torch.index.check import check_index

    report = check_index(args.index, repair=args.repair, wait=not args.no_wait)
    if args.json_stdout:
        print(json.dumps(report.as_dict(), indent=1))
        return 0 if report.ok else 1
    for line in report.repaired:
        print(f"repaired: {line}")
    for p in report.problems:
        print(f"problem: {p.what}; fix: {p.fix}")
    for line in report.notes:
        print(f"note: {line}")
    c = report.counts
    state = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"{args.index}: {state} ({c['files']} files, {c['bad_files']} bad, {c['windows']} windows)")
    return 0 if report.ok else 1


def _onnx_folder(args: argparse.Namespace) -> str | None:
    """``--onnx DIR`` for ``--runtime onnx``; refused without it, or with ``--runtime torch``."""
    if args.runtime == "onnx" and args.onnx is None:
        raise ValueError("--runtime onnx needs --onnx DIR (a folder of `mmv-torch export --checkpoint CK --onnx DIR`)")
    if args.runtime == "torch" and args.onnx is not None:
        raise ValueError("--onnx DIR is for --runtime onnx")
    return args.onnx


def _run(args: argparse.Namespace, device: str) -> dict[str, Any]:
    from mmv_torch.index.build import build_index
    from mmv_torch.index.store import IndexStore, is_index

    if args.index_command == "build":
        return build_index(args.checkpoint, args.videos, args.out, window_s=args.window_s, stride_s=args.stride_s,
                           workers=args.workers, vocab=args.vocab, windows=args.windows or "fixed",
                           word_mask=None if args.word_mask == "auto" else args.word_mask == "yes", device=device,
                           progress=not args.no_progress, wait=not args.no_wait, onnx=_onnx_folder(args),
                           batch_size=args.batch_size, memory_gb=args.memory_gb, nn_index=args.nn_index)
    if not is_index(args.index):
        raise ValueError(f"{args.index}: not an index (build one with `mmv-torch index build`)")
    if args.index_command == "add":
        info = IndexStore(args.index).info()
        if not Path(info["checkpoint"]).exists():
            raise ValueError(f"{args.index} was built with the checkpoint {info['checkpoint']}, which is gone: move "
                             "it back, or build a new index with `mmv-torch index build --checkpoint NEW ...`")
        return build_index(info["checkpoint"], args.videos, args.index, window_s=info["window_s"],
                           stride_s=info["stride_s"], workers=args.workers, vocab=info.get("vocab"),
                           word_mask=bool(info.get("word_mask")), device=device,
                           windows=args.windows or info.get("window_kind", "fixed"),
                           progress=not args.no_progress, add=True, prune=args.prune, wait=not args.no_wait,
                           onnx=info.get("onnx") if info.get("runtime") == "onnx" else None,
                           batch_size=args.batch_size, memory_gb=args.memory_gb, nn_index=args.nn_index)
    for f in (args.audio, args.video):
        if f is not None and not Path(f).is_file():
            raise ValueError(f"{f}: no such file")
    if args.text is None and args.audio is None and args.video is None:
        raise ValueError("give --text, --audio or --video (or several: their scores are fused)")
    from mmv_torch.index.api import Filters, clean, open_index

    filters = Filters(path=args.path_glob, min_duration=args.min_duration, max_duration=args.max_duration,
                      has_audio={"yes": True, "no": False}.get(args.has_audio), modified_after=args.modified_after,
                      modified_before=args.modified_before)
    result = open_index(args.index, device=device).search(
        text=args.text, audio=args.audio, video=args.video, start=args.start, k=args.k, filters=filters,
        target=args.target, exclude_self=not args.include_self, exclude_source=args.exclude_source)
    out = clean(result.to_dict())
    if args.json not in (None, "-"):
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    return out


def add_index_parsers(sub: Any) -> None:
    index = sub.add_parser("index", help="search a video collection: build, add to and query an index").add_subparsers(
        dest="index_command", required=True)
    for name in ("build", "add"):
        p = index.add_parser(name, help="index every video of a folder or manifest (fixed windows or windows in shots)"
                             if name == "build" else "add a collection's new or changed videos to an index")
        if name == "build":
            p.add_argument("--checkpoint", required=True, metavar="PATH",
                           help="a training run folder, an export or `mmv-torch convert` folder, or a checkpoint .pt")
            p.add_argument("--out", required=True, metavar="INDEX", help="index folder (an unfinished one resumes)")
            p.add_argument("--window-s", type=RATE, default=None, help="window length (default: the clip span)")
            p.add_argument("--stride-s", type=RATE, default=None, help="window stride (default: the window)")
            p.add_argument("--vocab", metavar="FILE", default=None,
                           help="vocabulary of the word table for text search (DMVR vocabulary or word list); "
                                "default: the checkpoint's vocab.txt")
            p.add_argument("--word-mask", choices=["auto", "yes", "no"], default="auto",
                           help="max-pool text over real words only (auto: when the checkpoint has vocab.txt)")
            p.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                           help="embed with PyTorch or with onnxruntime on the --onnx folder's towers (index add "
                                "keeps the index's runtime)")
            p.add_argument("--onnx", metavar="DIR", default=None, help="an `export --onnx` folder of this checkpoint")
        else:
            p.add_argument("index", metavar="INDEX")
        p.add_argument("--videos", required=True, metavar="DIR|MANIFEST", help="a folder (recursive) or a manifest")
        p.add_argument("--workers", type=COUNT, default=0, help="decoding processes (0: in the main process)")
        p.add_argument("--windows", choices=["fixed", "shots"], default=None,
                       help="fixed: sliding windows (build's default); shots: windows within shots, cut at shot "
                            "boundaries" + (" (default: the index's own kind; another one is refused)" if name == "add"
                                            else ""))
        p.add_argument("--batch-size", type=POSITIVE, default=16,
                       help="windows per forward pass, across files (default 16)")
        add_device_arg(p)
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--no-wait", action="store_true",
                       help="stop at once when another process is writing the index (default: wait for it)")
        if name == "add":
            p.add_argument("--prune", action="store_true", help="remove indexed files that no longer exist")
        p.add_argument("--memory-gb", type=RATE, default=None, metavar="GB",
                       help="resident memory for serving the search indexes: exact, IVF-Flat, then IVF-PQ with "
                            "re-ranking (default: the recorded budget; none: IVF-Flat above 100k windows)")
        p.add_argument("--nn-index", default=None, metavar="FACTORY",
                       help="a faiss index factory string instead of the choice, e.g. 'IVF4096,PQ64' (recorded)")
        p.set_defaults(func=_cmd_index)
        if name == "build":
            classify(p, checkpoint=OWNED_INPUT, out=OUTPUT_FOLDER, vocab=INPUT, videos=INPUT, onnx=INPUT,
                     nn_index=VALUE)
        else:
            classify(p, index=OWNED_INPUT, videos=INPUT, nn_index=VALUE)
    p = index.add_parser("check", help="check that an index's rows, vectors and search index agree")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--repair", action="store_true",
                   help="fix what can be fixed without the model (stray files, lost vectors marked to be indexed "
                        "again, the search index rebuilt)")
    p.add_argument("--no-wait", action="store_true", help="with --repair: stop at once when another process "
                   "is writing the index")
    p.add_argument("--json-stdout", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_index)
    classify(p, index=OWNED_INPUT)
    p = index.add_parser("search", help="query an index by text, an audio file or a video file")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--text", help="text -> video (S_vt)")
    p.add_argument("--audio", metavar="FILE", help="audio -> video (S_va; an audio file or a video's track)")
    p.add_argument("--video", metavar="FILE", help="video -> video (S_vt), or video -> audio with --target audio; "
                   "several of --text/--audio/--video are fused (mean of calibrated scores)")
    p.add_argument("--start", type=NONNEG, default=None, help="window start in --video (default: its middle)")
    p.add_argument("--target", choices=["video", "audio"], default="video",
                   help="what --video and --audio search: videos, or the indexed sounds (S_va)")
    p.add_argument("--include-self", action="store_true",
                   help="keep the --video window itself (and the windows touching it) when it is indexed")
    p.add_argument("--exclude-source", action="store_true", help="leave out the whole --video file when indexed")
    p.add_argument("--path", dest="path_glob", metavar="GLOB", default=None,
                   help="only files whose path (absolute or under its root) matches, e.g. '*.avi', 'kitchen/*'")
    p.add_argument("--min-duration", type=NONNEG, default=None, metavar="S")
    p.add_argument("--max-duration", type=NONNEG, default=None, metavar="S")
    p.add_argument("--has-audio", choices=["yes", "no"], default=None)
    p.add_argument("--modified-after", default=None, metavar="DATE", help="ISO date, e.g. 2024-01-31")
    p.add_argument("--modified-before", default=None, metavar="DATE")
    p.add_argument("-k", type=POSITIVE, default=10, help="hits")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="print the hits as JSON (--json) or also write them to OUT (--json OUT)")
    p.add_argument("--json-stdout", action="store_true", help="print the hits as JSON (as --json alone)")
    add_device_arg(p)
    p.set_defaults(func=_cmd_index)
    classify(p, index=OWNED_INPUT, text=VALUE, audio=INPUT, video=INPUT, json=OUTPUT, path_glob=VALUE,
             modified_after=VALUE, modified_before=VALUE)
    p = sub.add_parser("serve", help="a local web page and JSON API to search an index")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000, help="1-65535")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host name the server answers (besides loopback names and --host); repeatable")
    p.add_argument("--max-upload-mb", type=RATE, default=100.0, help="largest accepted upload")
    add_device_arg(p)
    p.set_defaults(func=_cmd_index)
    classify(p, index=OWNED_INPUT, host=VALUE, allowed_host=VALUE)
