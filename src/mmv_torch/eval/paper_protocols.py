"""The paper's evaluation protocols of its video, audio and video-text benchmarks, by name.

A :class:`PaperProtocol` is a recorded set of settings (clip sampling, windows, classifier, metric,
splits), each with where its value comes from (:class:`Setting`): the ``paper`` (what its result tables
name: the task, the classifier family, the metric), the ``official code``, the ``data set``'s own
annotation files (splits, folds, captions), or ``our choice`` where neither states it. The paper's text
could not be consulted while these were written, so every numeric detail (windows per clip, MLP size,
epochs) is marked ``our choice`` until checked against it; docs/protocols.md has the table.

Names (:data:`PAPER_PROTOCOLS`): ``kinetics600-linear``, ``vggsound-linear``, ``audioset-mlp`` and
``esc50`` (``eval linear``); ``msrvtt-1ka``, ``msrvtt-full`` and ``youcook2-val`` (``eval retrieval``).
:func:`detect_protocol` picks one from what a source says it is (the ``dataset`` field that ``data
prepare`` writes on every manifest line, or the ESC-50 meta CSV), :func:`check_source` compares the
source with what the protocol expects: what makes the protocol impossible raises ``ValueError``, what
only makes the numbers incomparable with the paper's (a missing video, several captions per video of
the 1k-A split) comes back as warnings for the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from mmv_torch.data.sources import LabelledSource

PAPER, CODE, DATA, OURS = "paper", "official code", "data set", "our choice"
GIVEN = "given on the command line"
"""Sources of a setting's value."""


@dataclass(frozen=True)
class Setting:
    """One value of a protocol and where it comes from (``PAPER``, ``CODE``, ``DATA``, ``OURS``)."""

    value: Any
    source: str
    note: str = ""


@dataclass(frozen=True)
class Expected:
    """What the benchmark's source looks like when complete (counts are those of the official files)."""

    dataset: str
    """The ``data prepare`` name of the data set."""
    test_items: int | None = None
    """Test videos / segments / clips (all clips for a cross-validated set)."""
    classes: int | None = None
    captions: str | None = None
    """'one' or 'several' captions per test video (retrieval)."""
    folds: tuple[int, ...] = ()
    splits: tuple[str, ...] = ()
    windows: bool = False
    """Whether lines name a segment inside a longer file (``start``/``end``) unless the file is pre-cut."""


@dataclass(frozen=True)
class PaperProtocol:
    """A named benchmark protocol (module doc)."""

    name: str
    task: str
    """'linear' (``eval linear``) or 'retrieval' (``eval retrieval``)."""
    modalities: tuple[str, ...]
    description: str
    settings: dict[str, Setting]
    expected: Expected
    multilabel: bool = False
    folds: bool = False

    def value(self, key: str) -> Any:
        """The protocol's value of ``key``."""
        return self.settings[key].value

    def record(self, given: dict[str, Any] | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
        """What the report shows: every setting with its source (``given`` values replace the protocol's and
        are marked as given on the command line), and the manifest's warnings."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(given) - set(self.settings))
        if unknown:
            raise ValueError(f"protocol {self.name} has no setting {unknown}")
        out: dict[str, Any] = {}
        for k, s in self.settings.items():
            if k in given and given[k] != s.value:
                out[k] = {"value": given[k], "source": GIVEN, "protocol_value": s.value}
            else:
                out[k] = {"value": s.value, "source": s.source, **({"note": s.note} if s.note else {})}
        return {"name": self.name, "task": self.task, "description": self.description, "settings": out,
                "warnings": list(warnings or [])}


def _linear(name: str, modalities: tuple[str, ...], description: str, expected: Expected, settings: dict[str, Setting],
            multilabel: bool = False, folds: bool = False) -> PaperProtocol:
    return PaperProtocol(name, "linear", modalities, description, settings, expected, multilabel, folds)


_LOGISTIC = {
    "classifier": Setting("logistic", OURS, "softmax regression trained with Adam on mini-batches: LinearSVC does not "
                                            "scale to hundreds of thousands of clips"),
    "probe": Setting({"optimizer": "adam", "max_iter": 30, "batch_size": 4096,
                      "weight_decays": [0.0, 1e-4, 1e-3, 1e-2]}, OURS,
                     "max_iter = epochs; the weight decay is chosen on 20% of the training videos held out"),
}

PAPER_PROTOCOLS: dict[str, PaperProtocol] = {p.name: p for p in (
    _linear("kinetics600-linear", ("video",), "Kinetics-600: linear classifier on frozen video features, trained on "
            "the train split, top-1 (and top-5) on the validate split",
            Expected("kinetics", test_items=30000, classes=600, splits=("train", "test"), windows=True), {
                "train_split": Setting("train", DATA, "train.csv"),
                "test_split": Setting("test", DATA, "validate.csv (data prepare writes split 'test')"),
                "clip_protocol": Setting("official-cv", OURS, "32 frames at stride 2 of 25-fps video, crop 224: the "
                                         "official UCF101 script's sampling"),
                "train_epochs": Setting(1, OURS, "augmented passes over the training clips"),
                "test_windows": Setting(10, OURS, "linearly spaced clips per video, scores averaged"),
                **_LOGISTIC,
                "metric": Setting("top-1 and top-5 accuracy on the validate split", PAPER, "the paper reports top-1"),
            }),
    _linear("vggsound-linear", ("audio", "video"), "VGGSound: linear classifier on frozen audio or video features, "
            "train/test from the CSV's split column, top-1 and top-5 on test",
            Expected("vggsound", test_items=15446, classes=309, splits=("train", "test"), windows=True), {
                "train_split": Setting("train", DATA, "vggsound.csv split column"),
                "test_split": Setting("test", DATA, "vggsound.csv split column"),
                "clip_protocol": Setting("official-cv", OURS, "video: the official UCF101 script's sampling"),
                "train_epochs": Setting(1, OURS),
                "test_windows": Setting(10, OURS, "linearly spaced clips or audio windows inside the 10-s segment, "
                                        "scores averaged"),
                **_LOGISTIC,
                "metric": Setting("top-1 and top-5 accuracy on the test split", OURS,
                                  "VGGSound is not among the paper's tables"),
            }),
    _linear("audioset-mlp", ("audio",), "AudioSet: MLP on frozen segment embeddings (each the mean over linearly "
            "spaced audio windows inside the 10-s segment), mAP over classes on the eval segments",
            Expected("audioset", test_items=20371, classes=527, splits=("train", "test"), windows=True), {
                "train_split": Setting("train", DATA, "balanced_train_segments.csv (or unbalanced)"),
                "test_split": Setting("test", DATA, "eval_segments.csv"),
                "segment": Setting("the manifest's start/end window (10 s), or the whole pre-cut file", DATA),
                "segment_windows": Setting(10, OURS, "linearly spaced audio windows of data.audio_seconds inside the "
                                           "segment, embeddings averaged (training and test alike)"),
                "classifier": Setting("MLP", PAPER, "the paper's AudioSet row is an MLP on frozen features"),
                "hidden": Setting([512], OURS, "one hidden layer (Linear, BatchNorm, ReLU)"),
                "probe": Setting({"epochs": 100, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256}, OURS,
                                 "Adam, sigmoid cross-entropy"),
                "metric": Setting("mAP over classes with a test positive", PAPER),
                "extra_metrics": Setting("mean AUC and d-prime (sqrt(2) * inverse normal CDF of the mean AUC)", OURS,
                                         "AudioSet's usual companions of mAP"),
            }, multilabel=True),
    _linear("esc50", ("audio",), "ESC-50: linear classifier on frozen audio features, five-fold cross-validation "
            "over the official folds, scores averaged over linearly spaced windows per clip",
            Expected("esc50", test_items=2000, classes=50, folds=(1, 2, 3, 4, 5)), {
                "folds": Setting([1, 2, 3, 4, 5], DATA, "meta/esc50.csv fold column; each fold tested once"),
                "test_windows": Setting(10, OURS, "linearly spaced audio windows of data.audio_seconds per 5-s clip; "
                                        "every window of a training clip is a training row, test scores averaged"),
                "classifier": Setting("svm", OURS, "StandardScaler + LinearSVC, as the official UCF101 script"),
                "C": Setting("cross-validation on the training folds", OURS),
                "metric": Setting("accuracy, mean over the five folds (per-fold numbers kept)", PAPER),
            }, folds=True),
    PaperProtocol("msrvtt-1ka", "retrieval", ("video",), "MSR-VTT 1k-A: zero-shot text-to-video retrieval, 1,000 "
                  "test videos with one caption each", {
                      "queries": Setting("one caption per video (MSRVTT_JSFUSION_test.csv)", DATA),
                      "space": Setting("vt", CODE, "the released FAC model's video-text space"),
                      "windows": Setting(10, OURS, "linearly spaced clips of the checkpoint's clip settings per "
                                         "video, embeddings averaged"),
                      "metric": Setting("R@1/5/10 and median rank, text to video", PAPER),
                  }, Expected("msrvtt", test_items=1000, captions="one")),
    PaperProtocol("msrvtt-full", "retrieval", ("video",), "MSR-VTT full test split: every caption of the 2,990 test "
                  "videos is a query (R@K over all captions, median rank)", {
                      "queries": Setting("every caption of every test video (MSRVTT_data.json, split test)", DATA),
                      "space": Setting("vt", CODE),
                      "windows": Setting(10, OURS),
                      "metric": Setting("R@1/5/10 and median rank over all caption queries", OURS,
                                        "the full split is not among the paper's tables"),
                  }, Expected("msrvtt", test_items=2990, captions="several")),
    PaperProtocol("youcook2-val", "retrieval", ("video",), "YouCook2 validation: zero-shot text-to-video retrieval, "
                  "one query per validation segment, the video side being the segment's window", {
                      "queries": Setting("one sentence per validation segment", DATA,
                                         "youcookii_annotations_trainval.json or MIL-NCE's validation_youcook.csv"),
                      "video_side": Setting("the segment's start/end window of the full video", DATA),
                      "space": Setting("vt", CODE),
                      "windows": Setting(10, OURS, "linearly spaced clips inside the segment, embeddings averaged"),
                      "metric": Setting("R@1/5/10 and median rank, text to video", PAPER),
                  }, Expected("youcook2", test_items=3350, captions="one", windows=True)),
)}
"""Every protocol by name."""

LINEAR_NAMES = tuple(n for n, p in PAPER_PROTOCOLS.items() if p.task == "linear")
RETRIEVAL_NAMES = tuple(n for n, p in PAPER_PROTOCOLS.items() if p.task == "retrieval")

_BY_DATASET = {"kinetics": "kinetics600-linear", "vggsound": "vggsound-linear", "audioset": "audioset-mlp",
               "esc50": "esc50", "youcook2": "youcook2-val"}


def source_dataset(source: LabelledSource) -> str | None:
    """The data set the source says it is: its ``kind``, else the one ``dataset`` field all its lines share."""
    if source.kind:
        return source.kind
    names = {rec.get("dataset") for rec in source.records}
    return names.pop() if len(names) == 1 and None not in names else None


def detect_protocol(source: LabelledSource, task: str, modality: str = "video") -> PaperProtocol | None:
    """The paper protocol of ``task`` for the source's data set (MSR-VTT: ``msrvtt-1ka`` when every video has
    one caption, else ``msrvtt-full``), or None (unknown data set, another task, or a modality the protocol
    does not take)."""
    ds = source_dataset(source)
    if ds == "msrvtt":
        name = "msrvtt-1ka" if all(len(e.captions) == 1 for e in source.entries) else "msrvtt-full"
    else:
        name = _BY_DATASET.get(ds or "")
    proto = PAPER_PROTOCOLS.get(name or "")
    if proto is None or proto.task != task or modality not in proto.modalities:
        return None
    return proto


def get_protocol(name: str, task: str) -> PaperProtocol:
    """The protocol called ``name``, which must belong to ``task``."""
    proto = PAPER_PROTOCOLS.get(name)
    if proto is None or proto.task != task:
        names = LINEAR_NAMES if task == "linear" else RETRIEVAL_NAMES
        raise ValueError(f"{name!r} is not a paper protocol of eval {task}; one of {list(names)}")
    return proto


def _count_warning(what: str, n: int, want: int | None, name: str) -> list[str]:
    if want is None or n == want:
        return []
    return [f"{n} {what} where {name} has {want:,}: the numbers are not comparable with the paper's"]


def _check_linear(proto: PaperProtocol, source: LabelledSource, entries: list[Any]) -> list[str]:
    exp, out = proto.expected, []
    if proto.folds:
        folds = source.folds if source.folds is not None else [rec.get("fold") for rec in source.records]
        if any(f is None for f in folds):
            raise ValueError(f"{source.source}: protocol {proto.name} needs a 'fold' on every line (data prepare esc50 "
                             "writes it)")
        found = sorted({int(f) for f in folds})
        if exp.folds and found != list(exp.folds):
            out.append(f"folds {found} where {proto.name} has {list(exp.folds)}")
        out += _count_warning("clips", len(entries), exp.test_items, proto.name)
    else:
        splits = Counter(e.split for e in entries)
        missing = [s for s in exp.splits if not splits.get(s)]
        if missing:
            raise ValueError(f"{source.source}: protocol {proto.name} needs lines of split {missing} (found "
                             f"{dict(splits)}); concatenate the train and test manifests")
        out += _count_warning("test items", splits.get("test", 0), exp.test_items, proto.name)
    if proto.multilabel:
        bad = [i for i, rec in enumerate(source.records) if not isinstance(rec.get("labels"), list)]
        if bad:
            raise ValueError(f"{source.source}: protocol {proto.name} needs 'labels' (a list of class names) on every "
                             f"line; line {bad[0] + 1} has none")
        classes = {c for rec in source.records for c in rec["labels"]}
    else:
        unlabelled = [e.path for e in entries if not e.label]
        if unlabelled:
            raise ValueError(f"{source.source}: protocol {proto.name} needs a 'label' on every line; "
                             f"{len(unlabelled)} have none, e.g. {unlabelled[0]}")
        classes = {e.label for e in entries}
    out += _count_warning("classes", len(classes), exp.classes, proto.name)
    return out


def _check_retrieval(proto: PaperProtocol, source: LabelledSource, entries: list[Any]) -> list[str]:
    exp, out = proto.expected, []
    bare = [e.path for e in entries if not e.captions]
    if bare:
        raise ValueError(f"{source.source}: protocol {proto.name} needs a 'caption' or 'captions' on every line; "
                         f"{len(bare)} have none, e.g. {bare[0]}")
    out += _count_warning("videos" if exp.dataset == "msrvtt" else "segments", len(entries), exp.test_items, proto.name)
    counts = Counter(len(e.captions) for e in entries)
    if exp.captions == "one" and set(counts) != {1}:
        several = sum(v for k, v in counts.items() if k > 1)
        out.append(f"{several} of {len(entries)} videos have several captions where {proto.name} has one per video; "
                   "every caption is a query")
    if exp.captions == "several" and counts.get(1):
        out.append(f"{counts[1]} of {len(entries)} videos have a single caption where {proto.name} has every caption "
                   "of each test video (20 per video): is this the 1k-A file?")
    return out


def check_source(proto: PaperProtocol, source: LabelledSource, modality: str) -> list[str]:
    """Check ``source`` against ``proto``: raise ``ValueError`` where the protocol cannot run on it (a modality it
    does not take, no test split, no folds, no labels or captions), return warnings where the source differs
    from the benchmark's official files (another data set, counts, captions per video, missing windows)."""
    if modality not in proto.modalities:
        raise ValueError(f"protocol {proto.name} takes --modality {' or '.join(proto.modalities)}, not {modality}")
    entries = [e for e in source.entries if e.modality == modality]
    if not entries:
        raise ValueError(f"{source.source}: no {modality} lines for protocol {proto.name}")
    out = []
    ds = source_dataset(source)
    if ds is not None and ds != proto.expected.dataset:
        out.append(f"the manifest was prepared from {ds!r}, while {proto.name} is a protocol of "
                   f"{proto.expected.dataset!r}")
    check = _check_linear if proto.task == "linear" else _check_retrieval
    out += check(proto, source, entries)
    if proto.expected.windows:
        whole = sum(1 for e in entries if e.window is None)
        if whole:
            out.append(f"{whole} of {len(entries)} lines have no start/end window: the whole file is taken as the "
                       "segment (right for pre-cut clips only)")
    return out

