"""The ``mmv-torch embed`` and ``mmv-torch eval linear|retrieval|finetune|image|zeroshot`` subcommands: their
options, and the calls into :mod:`mmv_torch.eval.pipelines` and :mod:`mmv_torch.eval.benchmarks`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mmv_torch.cli.support import (
    COUNT,
    INPUT,
    NONNEG,
    OUTPUT_FOLDER,
    OUTPUT_STEM,
    OWNED_INPUT,
    POSITIVE,
    RATE,
    REPORT,
    VALUE,
    add_device_arg,
    add_json_arg,
    classify,
    device_name,
)

LINEAR_PROTOCOLS = ("kinetics600-linear", "vggsound-linear", "audioset-mlp", "esc50")


RETRIEVAL_PROTOCOLS = ("msrvtt-1ka", "msrvtt-full", "youcook2-val")
"""Names of the paper's benchmark protocols (:data:`mmv_torch.eval.paper_protocols.PAPER_PROTOCOLS`)."""


def _load_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model in eval mode on the device, full Config with ``--set data.*`` applied, device). The weights
    come from :func:`mmv_torch.weights.resolve.resolve_checkpoint` (``args.resolved`` keeps what it chose)."""
    from mmv_torch.config import apply_overrides
    from mmv_torch.weights.resolve import resolve_checkpoint

    overrides = args.set or []
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise ValueError(f"--set changes only data.* settings of the checkpoint's config (the weights fix the "
                         f"model); got {bad}")
    device = device_name(args.device)
    resolved = resolve_checkpoint(args.checkpoint)
    print(f"checkpoint: {resolved.description}", file=sys.stderr)
    cfg = apply_overrides(resolved.config, overrides)
    args.resolved = resolved
    return resolved.load_model(device), cfg, device


def _source(args: argparse.Namespace, modality: str) -> Any:
    """The data source named by ``--data`` or the official split options."""
    from mmv_torch.data.sources import open_source

    return open_source(modality, data=args.data, ucf101_splits=getattr(args, "ucf101_splits", None),
                       hmdb51_splits=getattr(args, "hmdb51_splits", None), video_root=getattr(args, "video_root", None),
                       esc50_meta=getattr(args, "esc50_meta", None), audio_root=getattr(args, "audio_root", None),
                       split=getattr(args, "split", 1))


def _loader_options(args: argparse.Namespace) -> Any:
    from mmv_torch.data.sources import default_workers
    from mmv_torch.eval.pipelines import LoaderOptions

    workers = default_workers() if args.workers is None else args.workers
    return LoaderOptions(batch_size=args.batch_size, workers=workers, seed=args.seed)


def _word_mask(args: argparse.Namespace) -> bool:
    """Whether text is max-pooled over its real words only: ``auto`` = yes for a checkpoint with its own
    word list (trained by this library, which masks padding), no otherwise (the official model pools
    over all positions)."""
    if args.word_mask == "auto":
        return args.resolved.words is not None
    return args.word_mask == "yes"


def _tokenizer(args: argparse.Namespace, cfg: Any) -> tuple[Any, str]:
    """The tokenizer of the checkpoint's word table (``--vocab`` or its own word list) and where it came
    from (:func:`mmv_torch.weights.resolve.checkpoint_tokenizer`)."""
    from mmv_torch.weights.resolve import checkpoint_tokenizer

    return checkpoint_tokenizer(args.resolved, cfg, args.vocab)


def _probe_kwargs(args: argparse.Namespace, multilabel: bool, hidden_default: str) -> dict[str, Any]:
    """Keyword arguments of the probe chosen by ``--classifier`` / ``--multilabel`` (the torch probes run on
    the CPU: run_linear and run_image_eval take ``device`` for the feature extraction only)."""
    from mmv_torch.eval.benchmarks import parse_floats

    cs, wds = parse_floats(args.C, "--C"), parse_floats(args.weight_decay, "--weight-decay")
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


def _write(result: dict[str, Any], args: argparse.Namespace) -> int:
    from mmv_torch.eval.report import markdown_table, write_report

    result["settings"] = {"checkpoint": args.checkpoint, **result["settings"]}
    clean = write_report(result, args.json)
    print(markdown_table(clean), end="")
    if args.json:
        from pathlib import Path

        print(f"wrote {args.json} and {Path(args.json).with_suffix('.md')}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from mmv_torch import dist
    from mmv_torch.eval.pipelines import embed

    if args.modality == "image" and args.space != "repr":
        raise ValueError("image embeddings are the deflated video backbone's representation: use --space repr")
    dist.init_distributed()
    model, cfg, device = _load_checkpoint(args)
    source = _source(args, args.modality)
    info: dict[str, Any] = {"checkpoint": args.checkpoint}
    tokenizer, word_mask = None, _word_mask(args)
    if args.modality == "text":
        tokenizer, info["vocab"] = _tokenizer(args, cfg)
    out = embed(model, cfg, source, _loader_options(args), args.out, modality=args.modality, space=args.space,
                windows=args.windows, tokenizer=tokenizer, word_mask=word_mask, image_strategy=args.image_strategy,
                bn_steps=args.bn_steps, bn_lr=args.bn_lr, tsm_naive=args.tsm_naive, info=info, device=device)
    if dist.is_main():
        print(f"wrote {out['path']} {tuple(out['shape'])} and {out['index_path']}")
    return 0


def _cmd_eval_linear(args: argparse.Namespace) -> int:
    model, cfg, device = _load_checkpoint(args)
    if args.splits is None:
        return _write(_linear_result(args, model, cfg, device), args)
    from mmv_torch.eval.benchmarks import average_splits, parse_splits

    splits = parse_splits(args.splits)
    if args.esc50_meta or (args.data and "{split}" not in args.data):
        raise ValueError("--splits needs --ucf101-splits / --hmdb51-splits or a --data path with '{split}' (one "
                         "manifest per split, e.g. m/ucf101_{split}.jsonl); ESC-50's protocol already runs its 5 folds "
                         "in one evaluation (per_fold, *_mean, *_std): drop --splits")
    template, results = args.data, {}
    for k in splits:
        args.split, args.data = k, None if template is None else template.replace("{split}", str(k))
        print(f"split {k}", file=sys.stderr)
        results[k] = _linear_result(args, model, cfg, device)
    return _write(average_splits(results), args)


def _linear_result(args: argparse.Namespace, model: Any, cfg: Any, device: str) -> dict[str, Any]:
    """The result of ``eval linear`` on the source of ``args`` (one split)."""
    from mmv_torch.eval.benchmarks import linear_benchmark, linear_overrides, pick_protocol
    from mmv_torch.eval.pipelines import eval_linear

    source = _source(args, args.modality)
    paper = pick_protocol(args.protocol, source, "linear", args.modality)
    if paper is not None:
        given = linear_overrides(args.train_epochs, args.test_windows, args.classifier, args.C, args.weight_decay,
                                 args.hidden, args.probe_epochs, args.seed, args.multilabel, args.folds)
        return linear_benchmark(model, cfg, source, _loader_options(args), paper, modality=args.modality,
                                space=args.space, given=given, device=device)
    args.classifier, args.train_epochs = args.classifier or "svm", args.train_epochs or 10
    probe_kwargs = _probe_kwargs(args, args.multilabel, "512")
    if args.C is None:
        probe_kwargs.pop("cs", None)  # the protocol's C
    return eval_linear(model, cfg, source, _loader_options(args), modality=args.modality, space=args.space,
                       classifier=args.classifier, multilabel=args.multilabel, folds=args.folds,
                       train_epochs=args.train_epochs, test_windows=args.test_windows or 10, protocol=args.protocol,
                       probe_kwargs=probe_kwargs, device=device)


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from mmv_torch.eval.benchmarks import pick_protocol, retrieval_benchmark
    from mmv_torch.eval.pipelines import eval_retrieval

    model, cfg, device = _load_checkpoint(args)
    source = _source(args, "video")
    if args.pair != "text-video" and args.protocol not in ("auto", "none"):
        raise ValueError(f"--protocol {args.protocol} is a text-video protocol; --pair {args.pair} takes none")
    tokenizer, extra = None, {}
    if args.pair == "text-video":
        tokenizer, extra["vocab"] = _tokenizer(args, cfg)
    paper = None if args.pair != "text-video" and args.protocol == "auto" else pick_protocol(
        args.protocol, source, "retrieval")
    if paper is not None:
        result = retrieval_benchmark(model, cfg, source, _loader_options(args), paper, tokenizer=tokenizer,
                                     word_mask=_word_mask(args), space=args.space, windows=args.windows, device=device)
    else:
        result = eval_retrieval(model, cfg, source, _loader_options(args), pair=args.pair, space=args.space,
                           windows=args.windows or 1, tokenizer=tokenizer, word_mask=_word_mask(args), device=device)
    result["settings"].update(extra)
    return _write(result, args)


def _cmd_eval_finetune(args: argparse.Namespace) -> int:
    from mmv_torch.eval.finetune import CHECKPOINT, LOG
    from mmv_torch.eval.pipelines import eval_finetune
    from mmv_torch.runs import claim_run_dir, run_contents

    with claim_run_dir(args.out, resume=args.resume is not None, overwrite=args.overwrite,
                       command="mmv-torch eval finetune", markers=(CHECKPOINT, LOG)):
        if args.resume is not None and not run_contents(args.out, (CHECKPOINT,)):
            raise ValueError(f"--resume latest: {args.out} holds no {CHECKPOINT} to continue")
        model, cfg, device = _load_checkpoint(args)
        source = _source(args, "video")
        result = eval_finetune(model, cfg, source, _loader_options(args), args.out, epochs=args.epochs,
                                     lr=args.lr, backbone_lr=args.backbone_lr, weight_decay=args.weight_decay,
                                     warmup_steps=args.warmup_steps, test_windows=args.test_windows,
                                     resume=args.resume is not None, device=device)
    return _write(result, args)


def _cmd_eval_image(args: argparse.Namespace) -> int:
    from mmv_torch.eval.pipelines import eval_image
    from mmv_torch.models.deflate import STRATEGIES

    strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:  # checked before the model is loaded
        raise ValueError(f"--strategies takes names of {list(STRATEGIES)}, got {args.strategies!r}")
    from mmv_torch.eval.benchmarks import parse_floats

    model, cfg, device = _load_checkpoint(args)
    source = _source(args, "image")
    kwargs = (_probe_kwargs(args, args.multilabel, "") if args.protocol == "custom" else
              {"cs": parse_floats(args.C, "--C"), "weight_decays": parse_floats(args.weight_decay, "--weight-decay"),
               "seed": args.seed})
    result = eval_image(model, cfg, source, _loader_options(args), strategies, classifier=args.classifier,
                         multilabel=args.multilabel, bn_steps=args.bn_steps, bn_lr=args.bn_lr, tsm_naive=args.tsm_naive,
                         probe_kwargs=kwargs, protocol=args.protocol, device=device)
    return _write(result, args)


def _classnames_beside(data: str | None, source: Any) -> Path | None:
    """``classnames.json`` beside the manifest ``data`` (``data synthetic`` writes one) when it names a class of
    ``source``; ``None`` otherwise."""
    from mmv_torch.eval.zeroshot import read_classnames

    beside = Path(data).parent / "classnames.json" if data and Path(data).is_file() else None
    if beside is None or not beside.is_file():
        return None
    try:
        labels = set(read_classnames(beside))
    except ValueError as e:
        print(f"warning: {e}; not used", file=sys.stderr)
        return None
    known = set(getattr(source, "classes", None) or []) | {getattr(e, "label", None) for e in source.entries}
    if not labels & known:
        return None
    print(f"class words from {beside} (--classnames none: the labels themselves)", file=sys.stderr)
    return beside


def _cmd_eval_zeroshot(args: argparse.Namespace) -> int:
    from mmv_torch.api import TextTokenizer
    from mmv_torch.eval.zeroshot import eval_zeroshot, read_classnames, read_templates

    read_templates(args.templates, args.modality)  # a bad --templates fails before the model is loaded
    classnames = None if args.classnames in ("auto", "none") else args.classnames
    if classnames is not None:
        read_classnames(classnames)
    model, cfg, device = _load_checkpoint(args)
    source = _source(args, args.modality)
    if args.classnames == "auto":
        classnames = _classnames_beside(args.data, source)
    tokenizer, vocab = _tokenizer(args, cfg)
    word_mask = _word_mask(args)
    result = eval_zeroshot(model, cfg, source, _loader_options(args), TextTokenizer(tokenizer, word_mask),
                           modality=args.modality, space=args.space, templates=args.templates, windows=args.windows,
                           word_mask=word_mask, device=device, classnames=classnames)
    result["settings"]["vocab"] = vocab
    return _write(result, args)


def _add_zeroshot_parser(evals: Any) -> None:
    p = evals.add_parser("zeroshot", help="zero-shot classification: class names in prompt templates, top-1/top-5")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest with 'label' (its 'test' split, else every entry), class folders, "
                      "or official split files")
    p.add_argument("--modality", choices=["video", "audio"], default="video",
                   help="classify the videos, or their (or audio files') sound")
    p.add_argument("--space", choices=["va", "vt", "at"], default=None,
                   help="default: vt (audio: vt under the fac and shared graphs, else at)")
    p.add_argument("--templates", default="auto", metavar="auto|action|sound|FILE",
                   help="prompt templates: our action or sound set, a file with one template per line ('{}' is the "
                        "class name); auto: sound for --modality audio or a sound data set, else action")
    p.add_argument("--classnames", default="auto", metavar="auto|none|FILE",
                   help="JSON {label: phrase or [phrases]}: the words for each class in the prompts; auto: the "
                        "classnames.json beside the manifest when there is one (`data synthetic` writes it); none or "
                        "a class it lacks: the label made readable")
    p.add_argument("--windows", type=POSITIVE, default=1, help="linearly spaced windows, embeddings averaged")
    _add_text_args(p)
    add_json_arg(p)
    p.set_defaults(func=_cmd_eval_zeroshot)
    _classify(p, templates=INPUT, classnames=INPUT)


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a training run folder (its export/, else its latest checkpoint), an export or `mmv-torch "
                        "convert` folder, or a training checkpoint .pt")
    add_device_arg(p)
    p.add_argument("--batch-size", type=POSITIVE, default=8, help="items per batch (each with its windows)")
    p.add_argument("--workers", type=COUNT, default=None,
                   help="data-loading processes (0: in the main process; default: the cores less one, at most 4)")
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
    g.add_argument("--split", type=POSITIVE, default=1, help="official split (UCF101/HMDB51: 1-3) or ESC-50 test fold")


def _add_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", metavar="FILE", default=None,
                   help="vocabulary of the checkpoint's word table: a DMVR vocabulary ('idx word' lines with <pad> "
                        "<bos> <eos> <unk>; DMVR's tokenizer is then used) or a word list (line i = id i); default: "
                        "the checkpoint's own vocab.txt")
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
    p.add_argument("--probe-epochs", type=POSITIVE, default=100, help="epochs of the multi-label probe")
    add_json_arg(p)


def _add_bn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bn-steps", type=COUNT, default=200, help="BN re-training steps (bn_retrained)")
    p.add_argument("--bn-lr", type=RATE, default=1e-3, help="BN re-training learning rate (bn_retrained)")
    p.add_argument("--tsm-naive", choices=["folded", "paper"], default="folded",
                   help="deflating a TSM tower: paper = shift off (the paper's n-def); folded = shift off with its "
                        "channel order folded into the next convolution (closer to the video network)")


_COMMON_ROLES = {"checkpoint": OWNED_INPUT, "set": VALUE, "data": INPUT, "ucf101_splits": INPUT,
                 "hmdb51_splits": INPUT, "video_root": INPUT, "esc50_meta": INPUT, "audio_root": INPUT,
                 "vocab": INPUT, "json": REPORT, "C": VALUE, "weight_decay": VALUE, "hidden": VALUE}
"""Path roles of the options the evaluation commands share (:func:`~mmv_torch.cli.support.classify`)."""


def _classify(p: argparse.ArgumentParser, **extra: str) -> None:
    dests = {a.dest for a in p._actions}
    classify(p, **{k: v for k, v in _COMMON_ROLES.items() if k in dests}, **extra)


def add_eval_parsers(sub: Any) -> None:
    """Register ``embed`` and ``eval linear|retrieval|finetune|image``."""
    p = sub.add_parser("embed", help="embeddings of a manifest's videos, audio, captions or images (npy + index)")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest (video/audio/image entries; captions for text) or an image folder")
    p.add_argument("--modality", choices=["video", "audio", "text", "image"], required=True,
                   help="audio of video entries is their audio track; text: the entries' captions")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default="repr",
                   help="embedding space, or repr (the backbone representation)")
    p.add_argument("--out", required=True, metavar="FILE", help="writes FILE.npy and FILE.index.json")
    p.add_argument("--windows", type=POSITIVE, default=1, help="linearly spaced video windows, embeddings averaged")
    _add_text_args(p)
    p.add_argument("--image-strategy", choices=["naive", "bn_retrained", "inflation"], default="naive",
                   help="video network on images: deflated, deflated + BN re-trained, or static-video input")
    _add_bn_args(p)
    p.set_defaults(func=_cmd_embed)
    _classify(p, out=OUTPUT_STEM)

    evals = sub.add_parser("eval", help="downstream evaluations writing JSON + markdown reports").add_subparsers(
        dest="eval_command", required=True)
    p = evals.add_parser("linear", help="linear probe on frozen features (official SVM protocol by default)")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest with 'label' and 'split' (train/test) or 'fold' fields")
    p.add_argument("--modality", choices=["video", "audio"], default="video")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default="repr")
    p.add_argument("--train-epochs", type=POSITIVE, help="augmented passes over the training set (default 10, or the "
                   "paper protocol's)")
    p.add_argument("--test-windows", type=POSITIVE,
                   help="linearly spaced test windows, scores averaged (default 10, or the paper protocol's)")
    p.add_argument("--folds", action="store_true",
                   help="k-fold cross-validation over the 'fold' field (or the ESC-50 folds) instead of train/test")
    p.add_argument("--protocol", choices=["auto", "official-ucf101", "official-hmdb51", "official-cv", "config",
                                          *LINEAR_PROTOCOLS],
                   default="auto", help="the paper's benchmark protocols (docs/protocols.md: "
                   f"{', '.join(LINEAR_PROTOCOLS)}; auto picks one from a manifest written by `data prepare` or "
                   "--esc50-meta), or the clip sampling, probe augmentation (random crop + flip) and SVM C of a "
                   "video probe: "
                   "official-ucf101 (32 frames, stride 2 at 25 fps, crop 224, C 0.001), official-hmdb51 (stride 1 "
                   "at 10 fps, crop 200, C of the backbone), official-cv (UCF101 sampling, C by cross-validation), "
                   "config (the checkpoint's clip settings, C by cross-validation); auto: the official protocol of "
                   "--ucf101-splits / --hmdb51-splits or a prepared UCF101 / HMDB51 manifest, else official-cv")
    p.add_argument("--splits", metavar="all|K[,K...]", default=None,
                   help="evaluate several official splits (all: 1,2,3 of UCF101 / HMDB51) and report each and their "
                        "mean and std: with --ucf101-splits / --hmdb51-splits, or --data PATH with '{split}' in it")
    _add_probe_args(p)
    p.set_defaults(func=_cmd_eval_linear, classifier=None)  # None: svm, or the paper protocol's classifier
    _classify(p, splits=VALUE)

    p = evals.add_parser("retrieval", help="zero-shot text<->video (or audio<->video) retrieval, R@1/5/10")
    _add_checkpoint_args(p)
    _add_data_args(p, "JSONL manifest of videos with 'caption'/'captions' (several per video allowed)")
    p.add_argument("--pair", choices=["text-video", "audio-video"], default="text-video")
    p.add_argument("--space", choices=["va", "vt", "at", "repr"], default=None,
                   help="default: vt for text-video, va for audio-video")
    p.add_argument("--windows", type=POSITIVE, default=None,
                   help="linearly spaced video windows, embeddings averaged (default: the protocol's, else 1)")
    p.add_argument("--protocol", choices=["auto", "none", *RETRIEVAL_PROTOCOLS], default="auto",
                   help="the paper's retrieval protocol (docs/protocols.md); auto: from a manifest written by `data "
                        "prepare msrvtt|youcook2` (msrvtt-1ka when every video has one caption), else none")
    _add_text_args(p)
    add_json_arg(p)
    p.set_defaults(func=_cmd_eval_retrieval)
    _classify(p)

    p = evals.add_parser("finetune", help="fine-tune the video backbone + a linear head on a labelled set")
    _add_checkpoint_args(p)
    _add_data_args(p, "labelled JSONL manifest of videos with 'label' and 'split' fields")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="finetune.pt checkpoint and finetune_log.jsonl")
    p.add_argument("--epochs", type=POSITIVE, default=10)
    p.add_argument("--lr", type=RATE, default=1e-3, help="peak learning rate of the head")
    p.add_argument("--backbone-lr", type=RATE, default=None, help="peak learning rate of the backbone (default lr/10)")
    p.add_argument("--weight-decay", type=NONNEG, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=COUNT, default=0)
    p.add_argument("--test-windows", type=POSITIVE, default=10, help="linearly spaced test windows, logits averaged")
    p.add_argument("--resume", choices=["latest"], default=None, help="continue RUN_DIR/finetune.pt")
    p.add_argument("--overwrite", action="store_true", help="RUN_DIR holds a fine-tuning run: move it aside first")
    add_json_arg(p)
    p.set_defaults(func=_cmd_eval_finetune)
    _classify(p, out=OUTPUT_FOLDER)

    p = evals.add_parser("image", help="image probes with the video network deflated / BN-retrained / inflated")
    _add_checkpoint_args(p)
    p.add_argument("--data", required=True, metavar="ROOT_OR_MANIFEST",
                   help="image folder (ROOT/train/<class>/ + ROOT/val|test/<class>/) or a JSONL manifest of "
                        "'image' entries with 'split'")
    p.add_argument("--strategies", default="naive,bn_retrained,inflation",
                   help="comma-separated: naive, bn_retrained, inflation")
    p.add_argument("--protocol", choices=["custom", "voc2007", "imagenet-linear"], default="custom",
                   help="voc2007: a classifier per class, VOC 11-point and area mAP, difficult images excluded; "
                        "imagenet-linear: logistic regression, top-1/top-5 (docs/image_protocols.md)")
    _add_bn_args(p)
    _add_probe_args(p)
    p.set_defaults(func=_cmd_eval_image)
    _classify(p, strategies=VALUE)
    _add_zeroshot_parser(evals)
