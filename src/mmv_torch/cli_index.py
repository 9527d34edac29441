"""The ``mmv-torch index ...`` and ``mmv-torch serve`` subcommands (layer L4): build, extend and query
a search index of a video collection, and serve it as a local web page (:mod:`mmv_torch.index`)."""

from __future__ import annotations

import argparse
from typing import Any

from mmv_torch.cli_support import COUNT, NONNEG, POSITIVE, RATE, device_name, int_at_least


def _cmd_index(args: argparse.Namespace) -> int:
    from mmv_torch.index.cli import run_index_command

    return run_index_command(args, device_name(args.device))


def add_index_parsers(sub: Any) -> None:
    index = sub.add_parser("index", help="search a video collection: build, add to and query an index").add_subparsers(
        dest="index_command", required=True)
    for name in ("build", "add"):
        p = index.add_parser(name, help="index every video of a folder or manifest (sliding windows)" if name == "build"
                             else "add a collection's new or changed videos to an index")
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
        else:
            p.add_argument("index", metavar="INDEX")
        p.add_argument("--videos", required=True, metavar="DIR|MANIFEST", help="a folder (recursive) or a manifest")
        p.add_argument("--workers", type=COUNT, default=0, help="decoding processes (0: in the main process)")
        p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_cmd_index)
    p = index.add_parser("search", help="query an index by text, an audio file or a video file")
    p.add_argument("index", metavar="INDEX")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="text -> video")
    q.add_argument("--audio", metavar="FILE", help="audio -> video (an audio file or a video's track)")
    q.add_argument("--video", metavar="FILE", help="video -> video, or video -> audio with --target audio")
    p.add_argument("--start", type=NONNEG, default=None, help="window start in --video (default: its middle)")
    p.add_argument("--target", choices=["video", "audio"], default="video", help="what --video searches")
    p.add_argument("-k", type=POSITIVE, default=10, help="hits")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the hits as JSON here")
    p.add_argument("--json-stdout", action="store_true", help="print the hits as JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.set_defaults(func=_cmd_index)
    p = sub.add_parser("serve", help="a local web page and JSON API to search an index")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_at_least(0), default=8000)
    p.add_argument("--max-upload-mb", type=RATE, default=100.0, help="largest accepted upload")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.set_defaults(func=_cmd_index)
