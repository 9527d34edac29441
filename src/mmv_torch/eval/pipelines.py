"""Evaluation pipelines: a model, a :class:`~mmv_torch.data.sources.LabelledSource` and options in,
a result dict out.

These are what ``mmv-torch embed`` and ``mmv-torch eval linear|retrieval|finetune|image`` run, and
what the demo and experiments call: each builds the data sets of its protocol, extracts features or
trains, and returns ``{"task", "metrics", "settings"}`` (reports are written by the caller with
:func:`mmv_torch.eval.report.write_report`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config
from mmv_torch.data.captions import CaptionDataset, caption_rows
from mmv_torch.data.datasets import LabelledDataset
from mmv_torch.data.sources import (
    EpochLoader,
    LabelledSource,
    class_labels,
    make_loader,
    multilabel_targets,
)
from mmv_torch.data.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class LoaderOptions:
    """How evaluation data are loaded: items per batch, loader processes, augmentation seed."""

    batch_size: int = 8
    workers: int = 0
    seed: int = 0

    def loader(self, ds: Any, shuffle: bool = False, distributed: bool = False, batch_size: int | None = None
               ) -> Any:
        """A DataLoader over ``ds`` with these options."""
        return make_loader(ds, batch_size or self.batch_size, self.workers, shuffle=shuffle, distributed=distributed)


@dataclass
class CaptionSet:
    """The captions of a source's entries, tokenised: the data set, the caption strings and, per caption,
    the row of its entry (``owner``)."""

    dataset: CaptionDataset
    captions: list[str]
    owner: np.ndarray

    def stats(self) -> dict[str, Any]:
        """What reports show about the captions: count, unknown words, empty captions, captions without
        any known word (empty ones included), masking."""
        ds = self.dataset
        return {"captions": len(self.captions), "word_mask": ds.word_mask, "oov_words": int(ds.num_oov.sum()),
                "empty_captions": int((ds.num_words == 0).sum()),
                "captions_without_known_words": int((ds.num_known == 0).sum())}

    def warn_uninformative(self, source: str, consequence: str) -> int:
        """Warn about captions with no known word (they all embed to one vector); returns how many."""
        n = int((self.dataset.num_known == 0).sum())
        if n:
            first = self.captions[int(np.flatnonzero(self.dataset.num_known.numpy() == 0)[0])]
            warnings.warn(f"{source}: {n} of {len(self.captions)} captions are empty or have no word in the "
                          f"vocabulary (e.g. {first!r}); {consequence}", stacklevel=2)
        return n


def caption_set(entries: list[Any], tokenizer: Tokenizer, word_mask: bool, source: str) -> CaptionSet:
    """Every caption of ``entries`` tokenised; a source without captions is an error naming it."""
    captions, owner = caption_rows(entries)
    if not captions:
        raise ValueError(f"{source}: no entry has a 'caption' or 'captions' field")
    return CaptionSet(CaptionDataset(captions, tokenizer, word_mask), captions, owner)


def eval_linear(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions, *,
                 modality: str = "video", space: str = "repr", classifier: str = "svm", multilabel: bool = False,
                 folds: bool = False, train_epochs: int = 10, test_windows: int = 10, protocol: str = "auto",
                 probe_kwargs: dict[str, Any] | None = None, device: str | torch.device | None = None
                 ) -> dict[str, Any]:
    """Linear probe on frozen features: train/test splits of ``source`` (``train_epochs`` augmented passes;
    ``test_windows`` linearly spaced test windows), or k-fold cross-validation over the entries' folds
    (``folds``). ``protocol`` (:mod:`mmv_torch.data.probe_sampling`: ``auto``, ``official-ucf101``,
    ``official-hmdb51``, ``official-cv``, ``config``) fixes the video clip sampling, the probe augmentation
    (random crop + flip only) and the SVM's C (one value, or a grid chosen by cross-validation on the
    training split); ``auto`` takes the official protocol of a UCF101 or HMDB51 split source and
    ``official-cv`` otherwise. ``probe_kwargs`` go to the classifier (a ``cs`` there overrides the
    protocol's C; weight decays, seed, ...). The settings record the protocol."""
    from mmv_torch.data.probe_sampling import resolve_protocol
    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.linear_probe import cross_validate, run_linear

    proto = resolve_protocol(protocol, getattr(source, "kind", None), cfg.data, cfg.model.video)
    kwargs = dict(probe_kwargs or {})
    proto_settings: dict[str, Any] = {"name": proto.name, "requested": protocol}
    if classifier == "svm" and not multilabel:
        proto_settings["C"] = proto.c_choice if "cs" not in kwargs else "given (--C)"
        kwargs.setdefault("cs", proto.cs)
    if modality == "video":
        proto_settings.update({k: v for k, v in proto.settings().items() if k not in ("name", "cs", "c_choice")})
    else:
        proto_settings.update(audio_seconds=cfg.data.audio_seconds, train_augmentation="random window",
                              test_windows="one centred window" if test_windows == 1 else
                              f"{test_windows} linearly spaced windows")
    classes, hot = multilabel_targets(source) if multilabel else (source.classes, None)

    def dataset(split: str | None, train: bool) -> LabelledDataset:
        return LabelledDataset(source.entries, cfg.data, modality, split=split, classes=classes, train=train,
                               num_windows=1 if train else test_windows, seed=opts.seed, protocol=proto)

    def labels(ds: LabelledDataset) -> np.ndarray:
        return hot[source.rows(ds)] if hot is not None else class_labels(ds, source)

    if folds:
        if multilabel:
            raise ValueError("--folds runs single-label cross-validation; it cannot be combined with --multilabel")
        ds = dataset(None, False)
        per_entry = source.folds if source.folds is not None else [rec.get("fold") for rec in source.records]
        fold = [per_entry[r] for r in source.rows(ds)]
        if any(f is None for f in fold):
            raise ValueError(f"{source.source}: --folds needs a 'fold' field on every {modality} entry")
        x, idx = extract_features(model, opts.loader(ds), modality, space, "none", device)
        if classifier == "logistic":
            kwargs["device"] = device
        res = cross_validate(x, labels(ds)[idx], np.asarray(fold)[idx], classifier, **kwargs)
        res["settings"].update(modality=modality, space=space)
        result = {"task": f"linear probe, {len(res['per_fold'])}-fold cross-validation ({modality}, {space})", **res}
        n_classes = len(ds.classes)
    else:
        train_ds, test_ds = dataset("train", True), dataset("test", False)
        if hot is None:  # checked before any feature is extracted
            present = sorted({e.label for e in train_ds.entries})
            if len(present) < 2:
                raise ValueError(f"{source.source}: the training split has {len(present)} class ({present}); a "
                                 "linear probe needs at least two")
        result = run_linear(model, opts.loader(train_ds), opts.loader(test_ds), labels(train_ds), labels(test_ds),
                            modality, space, train_epochs, classifier, multilabel, device, None, **kwargs)
        n_classes = len(train_ds.classes)
    result["settings"].update(data=source.source, seed=opts.seed, classes=n_classes, protocol=proto_settings)
    return result


def _unlabelled_videos(source: LabelledSource, cfg: Config, windows: int, seed: int) -> LabelledDataset:
    """The source's videos for retrieval, which uses no labels (any ``label`` field is ignored)."""
    entries = [replace(e, label="") for e in source.entries]
    return LabelledDataset(entries, cfg.data, "video", classes=[""], num_windows=windows, seed=seed)


def text_video_embeddings(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                          tokenizer: Tokenizer, word_mask: bool, *, space: str = "vt", windows: int = 1,
                          text_batch_size: int | None = None, device: str | torch.device | None = None
                          ) -> tuple[np.ndarray, np.ndarray, LabelledDataset, CaptionSet]:
    """Video embeddings (``windows`` averaged) of the source's videos and text embeddings of their
    captions in ``space``: ``(video_emb (V, D), text_emb (C, D), videos, captions)``."""
    from mmv_torch.eval.retrieval import embed_text_video

    videos = _unlabelled_videos(source, cfg, windows, opts.seed)
    texts = caption_set(videos.entries, tokenizer, word_mask, source.source)
    text_loader = make_loader(texts.dataset, text_batch_size or opts.batch_size,
                              0 if text_batch_size else opts.workers)
    video_emb, text_emb = embed_text_video(model, opts.loader(videos), text_loader, space, device)
    return video_emb, text_emb, videos, texts


def eval_retrieval(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions, *,
              pair: str = "text-video", space: str | None = None, windows: int = 1,
              tokenizer: Tokenizer | None = None, word_mask: bool = True,
              device: str | torch.device | None = None) -> dict[str, Any]:
    """Zero-shot retrieval on ``source``: text<->video (every caption a query; ``tokenizer`` needed) or
    audio<->video, R@1/5/10 and ranks. Labels of the entries are not used."""
    from mmv_torch.eval.retrieval import run_retrieval, text_video_retrieval

    space = space or ("vt" if pair == "text-video" else "va")
    settings: dict[str, Any] = {"data": source.source, "windows": windows}
    if pair == "audio-video":
        videos = _unlabelled_videos(source, cfg, windows, opts.seed)
        loader = opts.loader(videos)
        result = run_retrieval(model, loader, loader, "audio", "video", space, device=device)
    elif pair == "text-video":
        if tokenizer is None:
            raise ValueError("text-video retrieval needs a tokenizer (the checkpoint's vocabulary)")
        video_emb, text_emb, videos, texts = text_video_embeddings(model, cfg, source, opts, tokenizer, word_mask,
                                                                   space=space, windows=windows, device=device)
        excluded = texts.warn_uninformative(source.source, "they are left out of R@K")
        keep = (texts.dataset.num_known > 0).numpy()
        if not keep.any():
            raise ValueError(f"{source.source}: no caption has a word of the vocabulary; nothing to retrieve with")
        r = text_video_retrieval(video_emb, text_emb[keep], texts.owner[keep], device=device)
        result = {"task": f"zero-shot retrieval text<->video ({space})",
                  "metrics": {"text2video": r["t2v"], "video2text": r["v2t"]},
                  "settings": {"space": space, "normalize": True, "videos": len(videos), **texts.stats(),
                               "excluded_captions": excluded,
                               "video2text": "rank of the best-ranked caption of the video"}}
    else:
        raise ValueError(f"pair must be 'text-video' or 'audio-video', got {pair!r}")
    result["settings"].update(settings)
    return result


def eval_finetune(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                        out_dir: str | Path, *, epochs: int = 10, lr: float = 1e-3, backbone_lr: float | None = None,
                        weight_decay: float = 1e-4, warmup_steps: int = 0, test_windows: int = 10,
                        resume: bool = False, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Fine-tune the video backbone with a linear head on the source's train split, test on its test
    split (``test_windows`` windows, logits averaged); checkpoint and log in ``out_dir``. ``resume``
    continues ``out_dir``'s fine-tuning checkpoint when there is one."""
    from mmv_torch.eval.finetune import CHECKPOINT, finetune

    def dataset(split: str, train: bool) -> LabelledDataset:
        return LabelledDataset(source.entries, cfg.data, "video", split=split, classes=source.classes, train=train,
                               num_windows=1 if train else test_windows, seed=opts.seed, augmentation="pretraining")

    train_ds, test_ds = dataset("train", True), dataset("test", False)
    class_labels(train_ds, source)
    class_labels(test_ds, source)
    ckpt = Path(out_dir) / CHECKPOINT
    start = 0
    if resume and ckpt.is_file():
        start = int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1
    train_loader = EpochLoader(opts.loader(train_ds, shuffle=True), train_ds, start)
    result = finetune(model.video, train_loader, opts.loader(test_ds), len(train_ds.classes), out_dir, epochs, lr,
                      backbone_lr, weight_decay, warmup_steps, resume=resume, device=device, seed=opts.seed)
    result.pop("model")
    settings = result["settings"]
    settings["finetune_checkpoint"] = settings.pop("checkpoint")
    settings.update(data=source.source, test_windows=test_windows, batch_size=opts.batch_size, seed=opts.seed)
    return result


def _image_protocol(protocol: str, source: LabelledSource, classifier: str, multilabel: bool,
                    probe_kwargs: dict[str, Any]) -> tuple[list[str] | None, Any, Any, str | None]:
    """(classes, per-entry targets or None for single labels, probe or None, task) of ``eval image
    --protocol``: ``voc2007`` targets are 1 / -1 / 0 (difficult) over the 20 VOC classes."""
    from mmv_torch.eval.image import IMAGE_PROTOCOLS, imagenet_linear_probe, voc2007_probe

    if protocol not in IMAGE_PROTOCOLS:
        raise ValueError(f"image protocol is one of {list(IMAGE_PROTOCOLS)}, got {protocol!r}")
    if protocol == "custom":
        classes, hot = multilabel_targets(source) if multilabel else (source.classes, None)
        return classes, hot, None, None
    kwargs = {k: v for k, v in probe_kwargs.items() if v is not None}
    if protocol == "voc2007":
        from mmv_torch.data.prepare.voc2007 import VOC_CLASSES
        from mmv_torch.data.sources import difficult_targets

        if "weight_decays" in kwargs:
            raise ValueError("the voc2007 protocol's classifiers are regularised by --C, not --weight-decay")
        classes, hot = multilabel_targets(source, VOC_CLASSES)
        targets = np.where(hot > 0, 1, np.where(difficult_targets(source, classes), 0, -1)).astype(np.int8)
        probe = partial(voc2007_probe, classes=classes, classifier=classifier, **kwargs)
        return classes, targets, probe, "PASCAL VOC 2007 classification (mAP, difficult excluded)"
    if multilabel or "cs" in kwargs:
        raise ValueError("the imagenet-linear protocol is single-label logistic regression: no --multilabel, "
                         "no --C (its grid is --weight-decay)")
    return source.classes, None, partial(imagenet_linear_probe, **kwargs), "ImageNet linear (top-1/top-5)"


def eval_image(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                strategies: list[str], *, classifier: str = "svm", multilabel: bool = False, bn_steps: int = 200,
                bn_lr: float = 1e-3, tsm_naive: str = "folded", probe_kwargs: dict[str, Any] | None = None,
                protocol: str = "custom", device: str | torch.device = "cpu") -> dict[str, Any]:
    """Image probes with the video network turned into an image network by each of ``strategies``
    (naive deflation, BN re-trained, inflation), on the source's train/test images. ``protocol``
    (:mod:`mmv_torch.eval.image`): ``custom`` (``classifier`` / ``multilabel`` as given),
    ``voc2007`` (per-class classifiers, VOC APs; ``probe_kwargs``: ``cs``, ``seed``) or
    ``imagenet-linear`` (``probe_kwargs``: ``weight_decays``, ``seed``)."""
    from mmv_torch.eval.image import run_image_eval
    from mmv_torch.models.deflate import STRATEGIES

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies are names of {list(STRATEGIES)}, got {strategies}")
    classes, hot, probe, task = _image_protocol(protocol, source, classifier, multilabel, dict(probe_kwargs or {}))
    train_ds, test_ds = (LabelledDataset(source.entries, cfg.data, "image", split=s, classes=classes, seed=opts.seed)
                         for s in ("train", "test"))
    if not len(train_ds) or not len(test_ds):
        raise ValueError(f"{source.source}: {len(train_ds)} train and {len(test_ds)} test images; an image probe "
                         "needs both splits")

    def labels(ds: LabelledDataset) -> np.ndarray:
        return hot[source.rows(ds)] if hot is not None else class_labels(ds, source)

    train_loader = opts.loader(train_ds)
    result = run_image_eval(model.video, strategies, cfg.data.num_frames, train_loader, labels(train_ds),
                            opts.loader(test_ds), labels(test_ds), multilabel, classifier, bn_images=train_loader,
                            bn_steps=bn_steps, bn_lr=bn_lr, device=device, tsm_naive=tsm_naive, probe=probe,
                            **({} if probe is not None else probe_kwargs or {}))
    if task is not None:
        result["task"] = task
    result["settings"] = {**result["settings"], "data": source.source, "train_images": len(train_ds),
                          "test_images": len(test_ds), "seed": opts.seed, "protocol": protocol,
                          "image_size": {"resize_short": cfg.data.resize_short, "centre_crop": cfg.data.eval_crop_size}}
    return result


def embed(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions, out: str | Path, *,
          modality: str, space: str = "repr", windows: int = 1, tokenizer: Tokenizer | None = None,
          word_mask: bool = True, image_strategy: str = "naive", bn_steps: int = 200, bn_lr: float = 1e-3,
          tsm_naive: str = "folded", info: dict[str, Any] | None = None, device: str | torch.device = "cpu"
          ) -> dict[str, Any]:
    """Embeddings of the source's entries (``modality`` video/audio/image, or text: their captions) in
    ``space``, written to ``out`` (``.npy`` + ``.index.json``); runs across ranks under torchrun.
    Returns what :func:`mmv_torch.eval.features.run_embed` returns."""
    from mmv_torch.eval.features import run_embed

    if modality == "image" and space != "repr":
        raise ValueError("image embeddings are the deflated video backbone's representation: use --space repr")
    info = dict(info or {}, data=source.source)
    ds: Any
    if modality == "text":
        if tokenizer is None:
            raise ValueError("text embeddings need a tokenizer (the checkpoint's vocabulary)")
        texts = caption_set(source.entries, tokenizer, word_mask, source.source)
        ds = texts.dataset
        records = [{"caption": c, "entry": int(o), "path": source.entries[o].path}
                   for c, o in zip(texts.captions, texts.owner)]
        texts.warn_uninformative(source.source, "their embeddings are identical (see the index's known_words)")
        for rec, n in zip(records, texts.dataset.num_known.tolist()):
            rec["known_words"] = int(n)
        info.update({k: v for k, v in texts.stats().items() if k != "captions"})
    else:
        ds = LabelledDataset(source.entries, cfg.data, modality, classes=source.classes, num_windows=windows,
                             seed=opts.seed)
        records = [source.records[r] for r in source.rows(ds)]
        info.update(windows=windows)
    loader = opts.loader(ds, distributed=True)
    if modality == "image":
        from mmv_torch.models.deflate import image_encoder

        # BN re-training sees the whole set on every rank (same data and seed), so ranks agree.
        model, settings = image_encoder(model.video, image_strategy, cfg.data.num_frames, bn_images=opts.loader(ds),
                                        bn_steps=bn_steps, bn_lr=bn_lr, device=device, tsm_naive=tsm_naive)
        info.update(image=settings)
    return run_embed(model, loader, modality, space, out, records, device, info)
