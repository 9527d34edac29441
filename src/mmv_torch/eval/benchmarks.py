"""The paper's named benchmark protocols (:mod:`mmv_torch.eval.paper_protocols`) run through the evaluation
pipelines of :mod:`mmv_torch.eval.pipelines`.

:func:`linear_benchmark` runs ``kinetics600-linear``, ``vggsound-linear``, ``esc50`` and ``audioset-mlp``,
:func:`retrieval_benchmark` runs ``msrvtt-1ka``, ``msrvtt-full`` and ``youcook2-val``. Each checks the
source against the protocol first (a source the protocol cannot run on is a ``ValueError`` before any
feature is extracted; differences from the official files become warnings), then runs with the protocol's
settings, except those given explicitly, and writes the protocol into ``settings["paper_protocol"]``: every
setting with its value and source, and the warnings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config
from mmv_torch.data.datasets import LabelledDataset
from mmv_torch.data.sources import LabelledSource, multilabel_targets
from mmv_torch.data.text.tokenizer import Tokenizer
from mmv_torch.eval.paper_protocols import PaperProtocol, check_source, detect_protocol, get_protocol
from mmv_torch.eval.pipelines import LoaderOptions, eval_linear, eval_retrieval


@dataclass
class LinearOverrides:
    """Settings of a linear protocol given explicitly (None: the protocol's value)."""

    train_epochs: int | None = None
    test_windows: int | None = None
    classifier: str | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    """Classifier keywords: ``cs`` or ``weight_decays`` (single-label), ``hidden``, ``epochs``, ``weight_decay``
    (multi-label), ``seed``."""
    multilabel: bool = False
    """``--multilabel`` was given (an error for a single-label protocol)."""
    folds: bool = False
    """``--folds`` was given (an error for a protocol with train/test splits)."""


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """An option's comma-separated numbers (None when the option was not given); ``ValueError`` names it."""
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def linear_overrides(train_epochs: int | None, test_windows: int | None, classifier: str | None, cs: str | None,
                     weight_decay: str | None, hidden: str | None, probe_epochs: int | None, seed: int,
                     multilabel: bool = False, folds: bool = False) -> LinearOverrides:
    """:class:`LinearOverrides` from ``eval linear``'s options (None where not given; ``--C`` and
    ``--weight-decay`` comma-separated, ``--hidden`` comma-separated sizes, ``--probe-epochs`` 100 = default)."""

    probe: dict[str, Any] = {"seed": seed}
    c, wd = parse_floats(cs, "--C"), parse_floats(weight_decay, "--weight-decay")
    if c is not None:
        probe["cs"] = c
    if wd is not None:
        probe["weight_decays"] = wd
    if hidden is not None:
        probe["hidden"] = tuple(int(h) for h in hidden.split(",") if h.strip())
    if probe_epochs is not None and probe_epochs != 100:
        probe["epochs"] = probe_epochs
    return LinearOverrides(train_epochs, test_windows, classifier, probe, multilabel, folds)


def pick_protocol(name: str, source: LabelledSource, task: str, modality: str = "video") -> PaperProtocol | None:
    """The paper protocol that ``--protocol name`` names: a paper protocol's name, or ``auto`` with a source that
    says which benchmark it is (:func:`~mmv_torch.eval.paper_protocols.detect_protocol`); None otherwise."""
    if name == "auto":
        return detect_protocol(source, task, modality)
    if name in ("none", "config") or name.startswith("official-"):
        return None
    return get_protocol(name, task)


def _warn(proto: PaperProtocol, found: list[str]) -> None:
    for w in found:
        warnings.warn(f"{proto.name}: {w}", stacklevel=3)


def linear_benchmark(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                     proto: PaperProtocol, *, modality: str = "video", space: str = "repr",
                     given: LinearOverrides | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """Run the linear protocol ``proto`` on ``source`` (module doc); ``given`` replaces protocol settings."""
    given = given or LinearOverrides()
    if given.multilabel and not proto.multilabel:
        raise ValueError(f"protocol {proto.name} is single-label; --multilabel does not apply")
    if given.folds and not proto.folds:
        raise ValueError(f"protocol {proto.name} has train/test splits; --folds does not apply")
    found = check_source(proto, source, modality)
    _warn(proto, found)
    if proto.multilabel:
        result, used = _audioset(model, cfg, source, opts, proto, space, given, device)
    else:
        result, used = _single_label(model, cfg, source, opts, proto, modality, space, given, device)
    result["settings"]["paper_protocol"] = proto.record(used, found)
    return result


def _single_label(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                  proto: PaperProtocol, modality: str, space: str, given: LinearOverrides,
                  device: str | torch.device | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """kinetics600-linear, vggsound-linear (train/test) and esc50 (folds) through :func:`eval_linear`."""
    classifier = given.classifier or proto.value("classifier")
    wrong = {"hidden": "--hidden", "epochs": "--probe-epochs", **({"weight_decays": "--weight-decay"} if classifier ==
             "svm" else {"cs": "--C"})}
    bad = [option for key, option in wrong.items() if key in given.probe]
    if bad:
        raise ValueError(f"{', '.join(bad)} do not apply to protocol {proto.name} with --classifier {classifier}")
    kwargs: dict[str, Any] = {"seed": opts.seed}
    default = proto.value("probe") if "probe" in proto.settings else {}
    if classifier == proto.value("classifier"):
        kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in default.items()})
    kwargs.update(given.probe)
    test_windows = given.test_windows or proto.value("test_windows")
    used: dict[str, Any] = {"classifier": classifier, "test_windows": test_windows}
    if proto.folds:
        result = eval_linear(model, cfg, source, opts, modality=modality, space=space, classifier=classifier,
                              folds=True, test_windows=test_windows, protocol="official-cv", probe_kwargs=kwargs,
                              device=device)
    else:
        train_epochs = given.train_epochs or proto.value("train_epochs")
        used["train_epochs"] = train_epochs
        result = eval_linear(model, cfg, source, opts, modality=modality, space=space, classifier=classifier,
                              train_epochs=train_epochs, test_windows=test_windows,
                              protocol=proto.value("clip_protocol"), probe_kwargs=kwargs, device=device)
    if "probe" in proto.settings:
        used["probe"] = ({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if k in default}
                         if classifier == proto.value("classifier") else f"not used (--classifier {classifier})")
    result["task"] = f"{proto.name}: {result['task']}"
    return result, used


def _audioset(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions, proto: PaperProtocol,
              space: str, given: LinearOverrides, device: str | torch.device | None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """audioset-mlp: segment embeddings (mean over linearly spaced windows inside the segment, training and test
    alike), an MLP probe, mAP, mean AUC and d-prime."""
    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.linear_probe import multilabel_probe
    from mmv_torch.eval.metrics import mean_auc

    if given.classifier is not None:
        raise ValueError(f"protocol {proto.name} trains an MLP; --classifier does not apply")
    if "cs" in given.probe or len(given.probe.get("weight_decays", (0,))) != 1:
        raise ValueError(f"protocol {proto.name} trains an MLP: --C does not apply and --weight-decay takes one value")
    windows = given.test_windows or proto.value("segment_windows")
    mine = {("weight_decay" if k == "weight_decays" else k): (v[0] if k == "weight_decays" else v)
            for k, v in given.probe.items()}
    probe = {**proto.value("probe"), "hidden": tuple(proto.value("hidden")), "seed": opts.seed, **mine}
    classes, hot = multilabel_targets(source)

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = LabelledDataset(source.entries, cfg.data, "audio", split=split, classes=classes, train=False,
                             num_windows=windows, seed=opts.seed)
        x, idx = extract_features(model, opts.loader(ds), "audio", space, "mean", device)
        return x, hot[source.rows(ds)][idx]

    (xtr, ytr), (xte, yte) = features("train"), features("test")
    res = multilabel_probe(xtr, ytr, xte, yte, **probe)
    extra = mean_auc(res["test_scores"], yte)
    metrics = {**res["metrics"], "test_AUC": extra["AUC"], "test_d_prime": extra["d_prime"],
               "test_AUC_classes": extra["classes"]}
    settings = {**res["settings"], "modality": "audio", "space": space, "segment_windows": windows,
                "window_seconds": cfg.data.audio_seconds, "train_segments": int(xtr.shape[0]),
                "test_segments": int(xte.shape[0]), "data": source.source, "seed": opts.seed, "classes": len(classes),
                "score_averaging": "none: one embedding per segment (mean over its windows)"}
    used = {"segment_windows": windows, "hidden": list(probe["hidden"]),
            "probe": {k: probe[k] for k in ("epochs", "lr", "weight_decay", "batch_size")}}
    return {"task": f"{proto.name}: multi-label MLP probe (audio, {space})", "metrics": metrics,
            "settings": settings}, used


def retrieval_benchmark(model: torch.nn.Module, cfg: Config, source: LabelledSource, opts: LoaderOptions,
                        proto: PaperProtocol, *, tokenizer: Tokenizer | None, word_mask: bool = True,
                        space: str | None = None, windows: int | None = None,
                        device: str | torch.device | None = None) -> dict[str, Any]:
    """Run the text-video retrieval protocol ``proto`` on ``source`` (module doc); ``space`` and ``windows``
    replace the protocol's when given."""
    found = check_source(proto, source, "video")
    _warn(proto, found)
    space = space or proto.value("space")
    windows = windows or proto.value("windows")
    result = eval_retrieval(model, cfg, source, opts, pair="text-video", space=space, windows=windows,
                       tokenizer=tokenizer, word_mask=word_mask, device=device)
    segments = sum(1 for e in source.entries if e.window is not None)
    result["task"] = f"{proto.name}: {result['task']}"
    result["settings"].update(video_windows_inside="the line's start/end segment" if segments else "the whole file",
                              segments=segments)
    result["settings"]["paper_protocol"] = proto.record({"space": space, "windows": windows}, found)
    return result


# ---------------------------------------------------------------------------------------------
# Several official splits in one report


def parse_splits(text: str) -> list[int]:
    """``--splits``: ``all`` (UCF101 / HMDB51's official splits 1, 2, 3) or comma-separated split numbers."""
    if text.strip() == "all":
        return [1, 2, 3]
    try:
        splits = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--splits: expected 'all' or comma-separated split numbers, got {text!r}") from None
    if not splits or min(splits) < 1 or len(set(splits)) != len(splits):
        raise ValueError(f"--splits: expected distinct split numbers >= 1, got {text!r}")
    return splits


def average_splits(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One report of an evaluation run on several splits: ``metrics`` holds ``split_K`` (each split's metrics),
    ``mean`` and ``std`` (population standard deviation over the splits, as the ESC-50 folds report it) of every
    numeric metric, and ``mean_std`` (``"mean ± std"`` strings, in percent for metrics in [0, 1]); ``per_split``
    keeps each split's whole result and ``settings`` the first split's settings with ``splits`` added."""
    from mmv_torch.eval.report import flatten

    if not results:
        raise ValueError("average_splits needs at least one split's result")
    flat = {k: {m: v for m, v in flatten(r["metrics"]).items() if isinstance(v, (int, float)) and not
                isinstance(v, bool)} for k, r in results.items()}
    names = [m for m in next(iter(flat.values())) if all(m in f for f in flat.values())]
    mean = {m: float(np.mean([f[m] for f in flat.values()])) for m in names}
    std = {m: float(np.std([f[m] for f in flat.values()])) for m in names}
    pct = {m: all(0.0 <= f[m] <= 1.0 for f in flat.values()) for m in names}
    mean_std = {m: f"{100 * mean[m]:.1f} ± {100 * std[m]:.1f}" if pct[m] else f"{mean[m]:.4g} ± {std[m]:.2g}"
                for m in names}
    first = next(iter(results.values()))
    return {"task": f"{first.get('task', 'evaluation')}, splits {', '.join(map(str, results))}",
            "metrics": {"mean_std": mean_std, "mean": mean, "std": std,
                        **{f"split_{k}": flat[k] for k in results}},
            "per_split": {str(k): r for k, r in results.items()},
            "settings": {**first.get("settings", {}), "splits": list(results)}}
