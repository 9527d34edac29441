"""What ``mmv-torch index build|add|search`` run, given their parsed options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmv_torch.fileio import atomic_write_text


def run_index_command(args: Any, device: str) -> int:
    """Run ``serve``, ``index build``, ``index add`` or ``index search`` and print the summary or hits;
    returns the exit status."""
    if args.command == "serve":
        from mmv_torch.index.server import serve

        serve(args.index, host=args.host, port=args.port, device=device, max_upload_mb=args.max_upload_mb)
        return 0
    result = _run(args, device)
    if args.index_command == "search" and not args.json_stdout:
        for hit in result["results"]:
            print(f"{hit['score']:.4f}  {hit['start']:7.2f}-{hit['end']:7.2f} s  {hit['path']}")
    else:
        print(json.dumps(result, indent=1))
    return 0


def _run(args: Any, device: str) -> dict[str, Any]:
    from mmv_torch.index.build import build_index
    from mmv_torch.index.query import open_searcher
    from mmv_torch.index.store import IndexStore, is_index

    if args.index_command == "build":
        return build_index(args.checkpoint, args.videos, args.out, window_s=args.window_s, stride_s=args.stride_s,
                           workers=args.workers, vocab=args.vocab, word_mask=args.word_mask, device=device,
                           progress=not args.no_progress)
    if not is_index(args.index):
        raise ValueError(f"{args.index}: not an index (build one with `mmv-torch index build`)")
    if args.index_command == "add":
        info = IndexStore(args.index).info()
        return build_index(info["checkpoint"], args.videos, args.index, window_s=info["window_s"],
                           stride_s=info["stride_s"], workers=args.workers, vocab=info.get("vocab"),
                           word_mask="yes" if info.get("word_mask") else "no", device=device,
                           progress=not args.no_progress, add=True)
    for f in (args.audio, args.video):
        if f is not None and not Path(f).is_file():
            raise ValueError(f"{f}: no such file")
    searcher = open_searcher(args.index, device=device)
    if args.text is not None:
        hits = searcher.search("text", k=args.k, text=args.text)
    elif args.audio is not None:
        hits = searcher.search("audio", k=args.k, path=args.audio)
    else:
        mode = "video" if args.target == "video" else "video-audio"
        hits = searcher.search(mode, k=args.k, path=args.video, start_s=args.start)
    result = {"results": [{k: h[k] for k in ("path", "start", "end", "score")} for h in hits]}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result
