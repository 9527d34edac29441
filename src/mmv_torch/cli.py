"""Command-line interface: ``mmv-torch <command>`` (also ``python -m mmv_torch``).

Every command is a small function that parses its arguments and calls the library; heavy imports
happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


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
# Evaluation and feature extraction: shared pieces


class _EpochLoader:
    """Iterate ``loader`` once per ``iter()``, calling ``dataset.set_epoch(e)`` before pass ``e``.

    The labelled data sets seed their augmentation from (seed, epoch, index), so without this every
    pass of a multi-epoch feature extraction or fine-tuning would see the same crops.
    """

    def __init__(self, loader: Any, dataset: Any, start_epoch: int = 0) -> None:
        self.loader, self.dataset, self.epoch = loader, dataset, start_epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)


@dataclass
class _Labelled:
    """Entries of a labelled data source with what the manifest adds (aligned lists)."""

    entries: list[Any]
    """LabelledEntry per item."""
    records: list[dict[str, Any]]
    """Per entry, what the index JSON / reports show (the manifest line, or the split file's facts)."""
    source: str
    """Where the entries came from, for settings and messages."""
    classes: list[str] | None = None
    """Class order when the source defines one (official split files)."""
    folds: list[Any] | None = None
    """Per entry, its cross-validation fold (ESC-50 meta CSV)."""

    def rows(self, ds: Any) -> list[int]:
        """Position in ``entries`` of every item of a LabelledDataset built from them."""
        pos = {id(e): i for i, e in enumerate(self.entries)}
        return [pos[id(e)] for e in ds.entries]


def _device(name: str | None) -> str:
    import torch

    from mmv_torch import dist

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        name = f"cuda:{dist.local_rank()}"
    return name


def _load_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model in eval mode on the device, full Config with ``--set data.*`` applied, device)."""
    from pathlib import Path

    from mmv_torch.config import apply_overrides, load_config
    from mmv_torch.models.mmv import create_model

    ckpt = Path(args.checkpoint)
    if not (ckpt / "config.json").is_file():
        raise ValueError(f"checkpoint folder {ckpt} has no config.json (expected a training run's export/ or a "
                         f"`mmv-torch convert` output)")
    cfg = load_config(ckpt / "config.json")
    overrides = args.set or []
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise ValueError(f"--set changes only data.* settings of the checkpoint's config (the weights fix the "
                         f"model); got {bad}")
    cfg = apply_overrides(cfg, overrides)
    device = _device(args.device)
    model = create_model(checkpoint=ckpt).to(device)
    return model.eval(), cfg, device


def _class_folders(root: Any) -> _Labelled:
    """Kinetics/ImageNet-style class folders (``root/<class>/*`` or ``root/train|val|test/<class>/*``)."""
    from mmv_torch.data.datasets import read_class_folders

    entries, classes = read_class_folders(root)
    records = [{e.modality: e.path, "label": e.label, "split": e.split} for e in entries]
    return _Labelled(entries, records, str(root), classes)


def _caption_dataset(args: argparse.Namespace, cfg: Any, entries: list[Any],
                     source: str) -> tuple[Any, list[str], Any, Any]:
    """Tokenised captions of ``entries`` with the checkpoint's (or ``--vocab``) word list: (dataset, captions,
    entry row of each caption, vocabulary path). No vocabulary raises ``MissingVocabularyError``."""
    from mmv_torch.data.captions import CaptionDataset, caption_rows, checkpoint_vocabulary
    from mmv_torch.data.text import Tokenizer

    vocab, vocab_path = checkpoint_vocabulary(args.checkpoint, args.vocab, cfg.model.text.vocab_size, "--vocab FILE")
    captions, owner = caption_rows(entries)
    if not captions:
        raise ValueError(f"{source}: no entry has a 'caption' or 'captions' field")
    ds = CaptionDataset(captions, Tokenizer(vocab, max_words=cfg.data.max_words), _word_mask(args))
    return ds, captions, owner, vocab_path


def _labelled_data(args: argparse.Namespace, modality: str) -> _Labelled:
    """The entries named by ``--data`` or the official split options; video files give audio for
    ``modality == 'audio'`` (their audio track)."""
    from dataclasses import replace
    from pathlib import Path

    from mmv_torch.data.datasets import (
        read_esc50,
        read_hmdb51_split,
        read_jsonl,
        read_labelled_manifest,
        read_ucf101_split,
    )

    given = [o for o in ("data", "ucf101_splits", "hmdb51_splits", "esc50_meta") if getattr(args, o, None)]
    if len(given) != 1:
        raise ValueError("give exactly one of --data, --ucf101-splits, --hmdb51-splits, --esc50-meta; got "
                         f"{['--' + g.replace('_', '-') for g in given] or 'none'}")
    split = getattr(args, "split", 1)
    data = None
    if args.data:
        path = Path(args.data)
        if path.is_dir():
            data = _class_folders(path)
        else:
            entries = read_labelled_manifest(path)
            records = [obj for _, obj in read_jsonl(path)]
            data = _Labelled(entries, records, str(path))
    elif getattr(args, "esc50_meta", None):
        if not args.audio_root:
            raise ValueError("--esc50-meta needs --audio-root (the folder of the ESC-50 .wav files)")
        entries, classes = read_esc50(args.esc50_meta, args.audio_root, test_fold=split)
        folds: list[Any] = [None] * len(entries)
        for k in range(1, 6):  # ESC-50's five folds: an entry is in fold k where it is the test split
            for i, e in enumerate(read_esc50(args.esc50_meta, args.audio_root, test_fold=k)[0]):
                if e.split == "test":
                    folds[i] = k
        if any(f is None for f in folds):
            raise ValueError(f"{args.esc50_meta}: some rows have a fold outside 1..5")
        records = [{"audio": e.path, "label": e.label, "split": e.split, "fold": f} for e, f in zip(entries, folds)]
        data = _Labelled(entries, records, str(args.esc50_meta), classes, folds)
    else:
        split_dir = args.ucf101_splits or args.hmdb51_splits
        if not args.video_root:
            raise ValueError("--ucf101-splits / --hmdb51-splits need --video-root (the folder of the videos)")
        reader = read_ucf101_split if args.ucf101_splits else read_hmdb51_split
        entries, classes = reader(split_dir, args.video_root, split)
        records = [{"video": e.path, "label": e.label, "split": e.split} for e in entries]
        data = _Labelled(entries, records, str(split_dir), classes)
    if modality == "audio":
        data.entries = [replace(e, modality="audio") if e.modality == "video" else e for e in data.entries]
    return data


def _loader(ds: Any, args: argparse.Namespace, shuffle: bool = False, distributed: bool = False) -> Any:
    import torch

    from mmv_torch import dist

    sampler = None
    if distributed and dist.world_size() > 1:
        sampler = torch.utils.data.DistributedSampler(ds, shuffle=False)
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=shuffle, sampler=sampler,
                                       num_workers=args.workers)


def _class_labels(ds: Any, data: _Labelled) -> Any:
    """Integer label per dataset row (``ds.classes`` order); an unlabelled entry is an error."""
    import numpy as np

    index = {c: i for i, c in enumerate(ds.classes)}
    missing = [e.path for e in ds.entries if e.label not in index]
    if missing:
        raise ValueError(f"{data.source}: {len(missing)} entries have no label, e.g. {missing[0]}")
    return np.array([index[e.label] for e in ds.entries], dtype=np.int64)


def _multilabel(data: _Labelled) -> tuple[list[str], Any]:
    """Multi-hot labels from the manifest's ``"labels"`` (or list-valued ``"label"``) fields:
    (classes sorted, (N, C) per entry). The entries' labels are cleared (they are not class names)."""
    from dataclasses import replace

    import numpy as np

    lists = []
    for i, rec in enumerate(data.records):
        labels = rec.get("labels", rec.get("label"))
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"{data.source}: entry {i} needs 'labels' (a list of class names) for --multilabel")
        lists.append(labels)
    classes = sorted({x for labels in lists for x in labels})
    col = {c: j for j, c in enumerate(classes)}
    hot = np.zeros((len(lists), len(classes)), dtype=np.float32)
    for i, labels in enumerate(lists):
        hot[i, [col[x] for x in labels]] = 1.0
    data.entries = [replace(e, label="") for e in data.entries]
    return classes, hot


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _probe_kwargs(args: argparse.Namespace, multilabel: bool, hidden_default: str) -> dict[str, Any]:
    """Keyword arguments of the probe chosen by ``--classifier`` / ``--multilabel`` (the torch probes run on
    the CPU: run_linear and run_image_eval take ``device`` for the feature extraction only)."""
    cs, wds = _floats(args.C), _floats(args.weight_decay)
    if multilabel:
        if cs is not None:
            raise ValueError("--C applies to --classifier svm, not to the --multilabel probe (use --weight-decay)")
        if wds is not None and len(wds) != 1:
            raise ValueError(f"the --multilabel probe takes one --weight-decay, got {wds}")
        hidden = args.hidden if args.hidden is not None else hidden_default
        return {"hidden": tuple(int(h) for h in hidden.split(",") if h.strip()), "epochs": args.probe_epochs,
                "weight_decay": wds[0] if wds else 0.0, "seed": args.seed}
    if args.classifier == "svm":
        if wds is not None:
            raise ValueError("--weight-decay applies to --classifier logistic (the SVM is regularised by --C)")
        return {"cs": cs or (0.001,), "seed": args.seed}
    if cs is not None:
        raise ValueError("--C applies to --classifier svm (the logistic probe is regularised by --weight-decay)")
    return {"seed": args.seed, **({"weight_decays": wds} if wds else {})}


def _write(result: dict[str, Any], json_out: str | None) -> None:
    from mmv_torch.eval.report import markdown_table, write_report

    clean = write_report(result, json_out)
    print(markdown_table(clean), end="")
    if json_out:
        from pathlib import Path

        print(f"wrote {json_out} and {Path(json_out).with_suffix('.md')}")


# ---------------------------------------------------------------------------------------------
# embed / eval commands


def _cmd_embed(args: argparse.Namespace) -> int:
    from mmv_torch import dist
    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.eval.features import run_embed

    if args.modality == "image" and args.space != "repr":
        raise ValueError("image embeddings are the deflated video backbone's representation: use --space repr")
    dist.init_distributed()
    model, cfg, device = _load_checkpoint(args)
    data = _labelled_data(args, args.modality)
    info: dict[str, Any] = {"checkpoint": args.checkpoint, "data": data.source}
    if args.modality == "text":
        ds, captions, owner, vocab_path = _caption_dataset(args, cfg, data.entries, data.source)
        records = [{"caption": c, "entry": int(o), "path": data.entries[o].path} for c, o in zip(captions, owner)]
        info.update(vocab=str(vocab_path), word_mask=ds.word_mask, oov_words=int(ds.num_oov.sum()),
                    empty_captions=int((ds.num_words == 0).sum()))
    else:
        ds = LabelledDataset(data.entries, cfg.data, args.modality, classes=data.classes,
                             num_windows=args.windows, seed=args.seed)
        records = [data.records[r] for r in data.rows(ds)]
        info.update(windows=args.windows if args.modality == "video" else 1)
    loader = _loader(ds, args, distributed=True)
    if args.modality == "image":
        from mmv_torch.deflate import image_encoder

        # BN re-training sees the whole set on every rank (same data and seed), so ranks agree.
        model, settings = image_encoder(model.video, args.image_strategy, cfg.data.num_frames,
                                        bn_images=_loader(ds, args), bn_steps=args.bn_steps, bn_lr=args.bn_lr,
                                        device=device)
        info.update(image=settings)
    out = run_embed(model, loader, args.modality, args.space, args.out, records, device, info)
    if dist.is_main():
        print(f"wrote {out['path']} {tuple(out['shape'])} and {out['index_path']}")
    return 0


def _word_mask(args: argparse.Namespace) -> bool:
    """Whether text is max-pooled over its real words only: ``auto`` = yes for a checkpoint with its own
    vocab.txt (trained by this library, which masks padding), no otherwise (the official model pools
    over all positions)."""
    from pathlib import Path

    if args.word_mask == "auto":
        return (Path(args.checkpoint) / "vocab.txt").is_file()
    return args.word_mask == "yes"


def _cmd_eval_linear(args: argparse.Namespace) -> int:
    import numpy as np

    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.linear_probe import cross_validate, run_linear

    model, cfg, device = _load_checkpoint(args)
    data = _labelled_data(args, args.modality)
    classes, hot = _multilabel(data) if args.multilabel else (data.classes, None)
    kwargs = _probe_kwargs(args, args.multilabel, "512")

    def dataset(split: str | None, train: bool) -> Any:
        return LabelledDataset(data.entries, cfg.data, args.modality, split=split, classes=classes, train=train,
                               num_windows=1 if train else args.test_windows, seed=args.seed)

    def labels(ds: Any) -> Any:
        return hot[data.rows(ds)] if hot is not None else _class_labels(ds, data)

    if args.folds:
        if args.multilabel:
            raise ValueError("--folds runs single-label cross-validation; it cannot be combined with --multilabel")
        ds = dataset(None, False)
        rows = data.rows(ds)
        folds = data.folds if data.folds is not None else [rec.get("fold") for rec in data.records]
        fold = [folds[r] for r in rows]
        if any(f is None for f in fold):
            raise ValueError(f"{data.source}: --folds needs a 'fold' field on every {args.modality} entry")
        x, idx = extract_features(model, _loader(ds, args), args.modality, args.space, "none", device)
        if args.classifier == "logistic":
            kwargs["device"] = device
        res = cross_validate(x, labels(ds)[idx], np.asarray(fold)[idx], args.classifier, **kwargs)
        res["settings"].update(modality=args.modality, space=args.space)
        result = {"task": f"linear probe, {len(res['per_fold'])}-fold cross-validation ({args.modality}, "
                          f"{args.space})", **res}
        n_classes = len(ds.classes)
    else:
        train_ds, test_ds = dataset("train", True), dataset("test", False)
        result = run_linear(model, _loader(train_ds, args), _loader(test_ds, args), labels(train_ds), labels(test_ds),
                            args.modality, args.space, args.train_epochs, args.classifier, args.multilabel,
                            device, None, **kwargs)
        n_classes = len(train_ds.classes)
    result["settings"].update(checkpoint=args.checkpoint, data=data.source, seed=args.seed, classes=n_classes)
    _write(result, args.json)
    return 0


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:

    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.eval.retrieval import embed_text_video, run_retrieval, text_video_retrieval

    space = args.space or ("vt" if args.pair == "text-video" else "va")
    model, cfg, device = _load_checkpoint(args)
    data = _labelled_data(args, "video")
    videos = LabelledDataset(data.entries, cfg.data, "video", classes=[""], num_windows=args.windows, seed=args.seed)
    settings: dict[str, Any] = {"checkpoint": args.checkpoint, "data": data.source, "windows": args.windows}
    if args.pair == "audio-video":
        loader = _loader(videos, args)
        result = run_retrieval(model, loader, loader, "audio", "video", space, device=device)
    else:
        texts, captions, owner, vocab_path = _caption_dataset(args, cfg, videos.entries, data.source)
        video_emb, text_emb = embed_text_video(model, _loader(videos, args), _loader(texts, args), space, device)
        r = text_video_retrieval(video_emb, text_emb, owner, device=device)
        result = {"task": f"zero-shot retrieval text<->video ({space})",
                  "metrics": {"text2video": r["t2v"], "video2text": r["v2t"]},
                  "settings": {"space": space, "normalize": True, "videos": len(videos), "captions": len(captions),
                               "video2text": "rank of the best-ranked caption of the video",
                               "vocab": str(vocab_path), "word_mask": texts.word_mask,
                               "oov_words": int(texts.num_oov.sum()),
                               "empty_captions": int((texts.num_words == 0).sum())}}
    result["settings"].update(settings)
    _write(result, args.json)
    return 0


def _cmd_eval_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.eval.finetune import CHECKPOINT, finetune

    ckpt = Path(args.out) / CHECKPOINT
    if ckpt.is_file() and args.resume is None:
        raise ValueError(f"{ckpt} exists: pass --resume latest to continue it, or choose another --out")
    model, cfg, device = _load_checkpoint(args)
    data = _labelled_data(args, "video")

    def dataset(split: str, train: bool) -> Any:
        return LabelledDataset(data.entries, cfg.data, "video", split=split, classes=data.classes, train=train,
                               num_windows=1 if train else args.test_windows, seed=args.seed)

    train_ds, test_ds = dataset("train", True), dataset("test", False)
    _class_labels(train_ds, data)
    _class_labels(test_ds, data)
    start = 0
    if args.resume is not None and ckpt.is_file():
        start = int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1
    train_loader = _EpochLoader(_loader(train_ds, args, shuffle=True), train_ds, start)
    result = finetune(model.video, train_loader, _loader(test_ds, args), len(train_ds.classes), args.out,
                      args.epochs, args.lr, args.backbone_lr, args.weight_decay, args.warmup_steps,
                      resume=args.resume is not None, device=device, seed=args.seed)
    result.pop("model")
    settings = result["settings"]
    settings["finetune_checkpoint"] = settings.pop("checkpoint")
    settings.update(checkpoint=args.checkpoint, data=data.source, test_windows=args.test_windows,
                    batch_size=args.batch_size, seed=args.seed)
    _write(result, args.json)
    return 0


def _cmd_eval_image(args: argparse.Namespace) -> int:
    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.deflate import STRATEGIES, run_image_eval

    strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"--strategies takes names of {list(STRATEGIES)}, got {args.strategies!r}")
    model, cfg, device = _load_checkpoint(args)
    data = _labelled_data(args, "image")
    classes, hot = _multilabel(data) if args.multilabel else (data.classes, None)
    kwargs = _probe_kwargs(args, args.multilabel, "")
    train_ds, test_ds = (LabelledDataset(data.entries, cfg.data, "image", split=s, classes=classes, seed=args.seed)
                         for s in ("train", "test"))

    def labels(ds: Any) -> Any:
        return hot[data.rows(ds)] if hot is not None else _class_labels(ds, data)

    train_loader = _loader(train_ds, args)
    result = run_image_eval(model.video, strategies, cfg.data.num_frames, train_loader, labels(train_ds),
                            _loader(test_ds, args), labels(test_ds), args.multilabel, args.classifier,
                            bn_images=train_loader, bn_steps=args.bn_steps, bn_lr=args.bn_lr, device=device,
                            **kwargs)
    result["settings"] = {**result["settings"], "checkpoint": args.checkpoint, "data": data.source,
                          "train_images": len(train_ds), "test_images": len(test_ds), "seed": args.seed}
    _write(result, args.json)
    return 0


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="config.json + model.safetensors: a training run's export/ or a `mmv-torch convert` output")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--batch-size", type=int, default=8, help="items per batch (each with its windows)")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes (0: in the main process)")
    p.add_argument("--seed", type=int, default=0, help="augmentation and probe seed")
    p.add_argument("--set", nargs="*", metavar="data.KEY=VALUE",
                   help="override data settings of the checkpoint's config, e.g. data.num_frames=16")


def _add_data_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("data (give one of --data, --ucf101-splits, --hmdb51-splits, --esc50-meta)")
    g.add_argument("--data", metavar="MANIFEST", help=what)
    g.add_argument("--ucf101-splits", metavar="DIR", help="UCF101 split folder (classInd.txt, trainlist0N.txt, ...)")
    g.add_argument("--hmdb51-splits", metavar="DIR", help="HMDB51 split folder (<class>_test_splitN.txt)")
    g.add_argument("--video-root", metavar="DIR", help="videos of --ucf101-splits / --hmdb51-splits")
    g.add_argument("--esc50-meta", metavar="CSV", help="ESC-50 meta/esc50.csv")
    g.add_argument("--audio-root", metavar="DIR", help="audio files of --esc50-meta")
    g.add_argument("--split", type=int, default=1, help="official split (UCF101/HMDB51: 1-3) or ESC-50 test fold")


def _add_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", metavar="FILE", default=None,
                   help="word list of the checkpoint's word table (line i = id i); default: DIR/vocab.txt")
    p.add_argument("--word-mask", choices=["auto", "yes", "no"], default="auto",
                   help="max-pool text over real words only (auto: yes when the checkpoint has vocab.txt, i.e. "
                        "was trained here; no for converted official weights, which pool over padding too)")


def _add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", choices=["svm", "logistic"], default="svm",
                   help="svm: StandardScaler + LinearSVC (official); logistic: torch logistic regression")
    p.add_argument("--C", default=None, metavar="C[,C...]",
                   help="LinearSVC C grid (default 0.001, the official value; with several, C is chosen on "
                        "held-out training videos)")
    p.add_argument("--weight-decay", default=None, metavar="WD[,WD...]",
                   help="logistic-regression L2 grid (default 0,1e-4,1e-3,1e-2,1e-1), or the one value of the "
                        "multi-label probe")
    p.add_argument("--multilabel", action="store_true",
                   help="multi-label probe scored by mAP; the manifest gives 'labels': [class, ...]")
    p.add_argument("--hidden", default=None, metavar="H[,H...]",
                   help="hidden sizes of the multi-label probe ('' for linear)")
    p.add_argument("--probe-epochs", type=int, default=100, help="epochs of the multi-label probe")
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics + settings here (and OUT.md)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mmv-torch", description="MultiModal Versatile Networks in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model presets with parameter counts per tower")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="synthetic data -> train the tiny model -> evaluate -> report")
    p.add_argument("--out", default="runs/demo", help="output folder (data, run, report.md, plots)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's setting)")
    p.add_argument("--num-clips", type=int, default=None, help="pretraining clips (default: the demo's setting)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on top of the demo's, for ablations, e.g. data.color_jitter=0.4")
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

    p = sub.add_parser("embed", help="embeddings of a manifest's videos, audio, captions or images (npy + index)")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest (video/audio/image entries; captions for text) or an image folder")
    p.add_argument("--modality", choices=["video", "audio", "text", "image"], required=True,
                   help="audio of video entries is their audio track; text: the entries' captions")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default="repr",
                   help="embedding space, or repr (the backbone representation)")
    p.add_argument("--out", required=True, metavar="FILE", help="writes FILE.npy and FILE.index.json")
    p.add_argument("--windows", type=int, default=1, help="linearly spaced video windows, embeddings averaged")
    _add_text_args(p)
    p.add_argument("--image-strategy", choices=["naive", "bn_retrained", "inflation"], default="naive",
                   help="video network on images: deflated, deflated + BN re-trained, or static-video input")
    p.add_argument("--bn-steps", type=int, default=200, help="BN re-training steps (bn_retrained)")
    p.add_argument("--bn-lr", type=float, default=1e-3, help="BN re-training learning rate (bn_retrained)")
    p.set_defaults(func=_cmd_embed)

    evals = sub.add_parser("eval", help="downstream evaluations writing JSON + markdown reports").add_subparsers(
        dest="eval_command", required=True)
    p = evals.add_parser("linear", help="linear probe on frozen features (official SVM protocol by default)")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest with 'label' and 'split' (train/test) or 'fold' fields")
    p.add_argument("--modality", choices=["video", "audio"], default="video")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default="repr")
    p.add_argument("--train-epochs", type=int, default=10, help="augmented passes over the training set")
    p.add_argument("--test-windows", type=int, default=10, help="linearly spaced test windows, scores averaged")
    p.add_argument("--folds", action="store_true",
                   help="k-fold cross-validation over the 'fold' field (or the ESC-50 folds) instead of train/test")
    _add_probe_args(p)
    p.set_defaults(func=_cmd_eval_linear)

    p = evals.add_parser("retrieval", help="zero-shot text<->video (or audio<->video) retrieval, R@1/5/10")
    _add_checkpoint_args(p)
    _add_data_args(p, "JSONL manifest of videos with 'caption'/'captions' (several per video allowed)")
    p.add_argument("--pair", choices=["text-video", "audio-video"], default="text-video")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default=None,
                   help="default: vt for text-video, va for audio-video")
    p.add_argument("--windows", type=int, default=1, help="linearly spaced video windows, embeddings averaged")
    _add_text_args(p)
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics + settings here (and OUT.md)")
    p.set_defaults(func=_cmd_eval_retrieval)

    p = evals.add_parser("finetune", help="fine-tune the video backbone + a linear head on a labelled set")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest of videos with 'label' and 'split' fields")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="finetune.pt checkpoint and finetune_log.jsonl")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the head")
    p.add_argument("--backbone-lr", type=float, default=None, help="peak learning rate of the backbone (default lr/10)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--test-windows", type=int, default=10, help="linearly spaced test windows, logits averaged")
    p.add_argument("--resume", choices=["latest"], default=None, help="continue RUN_DIR/finetune.pt")
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics + settings here (and OUT.md)")
    p.set_defaults(func=_cmd_eval_finetune)

    p = evals.add_parser("image", help="image probes with the video network deflated / BN-retrained / inflated")
    _add_checkpoint_args(p)
    p.add_argument("--data", required=True, metavar="ROOT_OR_MANIFEST",
                   help="image folder (ROOT/train/<class>/ + ROOT/val|test/<class>/) or a JSONL manifest of "
                        "'image' entries with 'split'")
    p.add_argument("--strategies", default="naive,bn_retrained,inflation",
                   help="comma-separated: naive, bn_retrained, inflation")
    p.add_argument("--bn-steps", type=int, default=200, help="BN re-training steps (bn_retrained)")
    p.add_argument("--bn-lr", type=float, default=1e-3, help="BN re-training learning rate (bn_retrained)")
    _add_probe_args(p)
    p.set_defaults(func=_cmd_eval_image)

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
        name = " ".join(n for n in (args.command, getattr(args, "data_command", None),
                                    getattr(args, "eval_command", None)) if n)
        print(f"mmv-torch {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
