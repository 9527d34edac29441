"""Zero-shot classification: class names in prompt templates, embedded by the text tower, against video or
audio embeddings of a labelled source; top-1 / top-5 as the other evaluations report them.

:func:`zero_shot_classifier` builds the ``(C, D)`` matrix of class embeddings: for each class every
template is filled with the class's readable name (:func:`prompt_name`), the sentences are embedded in
``space`` and L2-normalised, averaged, and normalised again. :func:`eval_zeroshot` scores each item's
embedding (averaged over ``windows`` and normalised) against it by cosine similarity.

The templates are this package's own (:data:`TEMPLATES`): ``action`` for the action benchmarks (UCF101,
HMDB51, Kinetics) and ``sound`` for the sound benchmarks (ESC-50, VGGSound, AudioSet); a file with one
template per line (``{}`` marks the class name) replaces them. The tokenizer drops stop words and unknown
words, so what reaches the text tower is mostly the class name and the templates' content words.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmv_torch.config import Config

TEMPLATES: dict[str, tuple[str, ...]] = {
    "action": (
        "{}",
        "a video of {}",
        "a video of a person {}",
        "someone is {}",
        "a person doing {}",
        "a clip of people {}",
        "a close up of {}",
        "a demonstration of {}",
        "footage of {} outdoors",
        "a tutorial showing {}",
    ),
    "sound": (
        "{}",
        "the sound of {}",
        "you can hear {}",
        "a recording of {}",
        "an audio clip of {}",
        "{} can be heard in the background",
        "a loud {} sound",
        "the noise of {}",
    ),
}
"""Prompt templates per benchmark family; ``{}`` is the class name."""

SOUND_SETS = ("esc50", "vggsound", "audioset")
"""Data sets (a manifest's ``dataset``, ``data prepare``'s name) whose classes are sounds."""


def prompt_name(label: str) -> str:
    """A class label as words: ``ApplyEyeMakeup`` -> ``apply eye makeup``, ``playing_guitar`` ->
    ``playing guitar``, ``dog-bark`` -> ``dog bark``, ``/m/09x0r`` stays as it is."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", label)
    words = re.sub(r"[_\-]+", " ", words)
    return " ".join(words.split()).lower() or label


def read_classnames(path: str | Path) -> dict[str, list[str]]:
    """A JSON object ``{label: phrase or [phrases]}``: the words that stand for each class in the prompts (a label
    missing from it keeps :func:`prompt_name`). Raises ``ValueError`` naming the file for anything else."""
    import json

    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"--classnames {p}: not a readable JSON file ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--classnames {p}: a JSON object {{label: phrase or [phrases]}} is expected")
    out = {}
    for label, v in raw.items():
        phrases = [v] if isinstance(v, str) else v
        if not isinstance(phrases, list) or not phrases or not all(isinstance(x, str) and x.strip() for x in phrases):
            raise ValueError(f"--classnames {p}: {label!r} needs a phrase or a non-empty list of phrases, got {v!r}")
        out[str(label)] = [x.strip() for x in phrases]
    return out


def class_prompts(name: str, templates: Sequence[str], phrases: dict[str, list[str]] | None = None) -> list[str]:
    """Every template filled with every phrase of class ``name`` (``phrases[name]``, else :func:`prompt_name`)."""
    names = (phrases or {}).get(name) or [prompt_name(name)]
    return [t.format(n) for t in templates for n in names]


def read_templates(spec: str | Path | Sequence[str] | None, modality: str = "video", kind: str | None = None
                   ) -> tuple[list[str], str]:
    """``(templates, name)``: a family of :data:`TEMPLATES` (``"action"``, ``"sound"``), a file with one
    template per line (blank lines and ``#`` comments skipped), a list, or ``None`` / ``"auto"``: ``sound``
    for audio or a sound data set (``kind``), else ``action``. Every template must contain ``{}`` once."""
    if spec is None or spec == "auto":
        name = "sound" if modality == "audio" or (kind or "") in SOUND_SETS else "action"
        return list(TEMPLATES[name]), name
    if isinstance(spec, str) and spec in TEMPLATES:
        return list(TEMPLATES[spec]), spec
    if isinstance(spec, (str, Path)):
        p = Path(spec)
        if not p.is_file():
            raise ValueError(f"--templates {spec}: neither one of {sorted(TEMPLATES)} nor a file")
        lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines()]
        templates, name = [x for x in lines if x and not x.startswith("#")], str(p)
    else:
        templates, name = [str(x) for x in spec], "given"
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"templates {name}: " + (f"{bad[0]!r} must contain '{{}}' (the class name) once" if bad
                                                   else "no template given"))
    return templates, name


@torch.no_grad()
def zero_shot_classifier(model: Callable[..., Any], tokenizer: Callable[[list[str]], Any], classnames: Sequence[str],
                         templates: Sequence[str] | str | None = None, space: str = "vt", word_mask: bool = True,
                         device: str | torch.device | None = None, phrases: dict[str, list[str]] | None = None
                         ) -> torch.Tensor:
    """The ``(C, D)`` class embeddings in ``space`` (rows L2-normalised; module doc), one row per class name.

    ``model`` is an MMV (or any callable ``model(text=ids (B, N), word_mask=...)`` returning
    ``emb["text"][space]``); ``tokenizer`` maps sentences to an object with ``ids`` and ``mask``
    (``mmv_torch.load``'s tokenizer, or a :class:`~mmv_torch.data.text.tokenizer.Tokenizer`);
    ``templates``: strings with ``{}``, or a :data:`TEMPLATES` family name (default ``action``).
    ``word_mask=False`` pools over padding too (the released weights' convention). A class none of whose
    prompts has a known word gets a zero row (it scores 0 against everything). ``phrases`` (:func:`read_classnames`)
    gives the words that stand for a class in the prompts (all of them averaged) instead of its readable name."""
    if not classnames:
        raise ValueError("zero_shot_classifier needs at least one class name")
    if templates is None or isinstance(templates, str):
        templates = list(TEMPLATES[templates or "action"])
    if isinstance(model, torch.nn.Module):
        model.eval()
    dev = torch.device(device) if device is not None else None
    rows = []
    for name in classnames:
        tok = tokenizer(class_prompts(name, templates, phrases))
        ids, mask = tok.ids, tok.mask if word_mask else torch.ones_like(tok.mask)
        if dev is not None:
            ids, mask = ids.to(dev), mask.to(dev)
        emb = model(text=ids, word_mask=mask)["text"]
        if space not in emb:
            raise ValueError(f"the model gives text embeddings in {sorted(emb)}, not {space!r}")
        e = torch.nn.functional.normalize(emb[space].float(), dim=-1)
        rows.append(torch.nn.functional.normalize(e.mean(0), dim=-1))
    return torch.stack(rows).cpu()


def _unknown_prompts(tokenizer: Any, classnames: Sequence[str], templates: Sequence[str],
                     phrases: dict[str, list[str]] | None = None) -> list[str]:
    """The classes none of whose prompts has a word the tokenizer knows."""
    vocab = getattr(getattr(tokenizer, "tokenizer", tokenizer), "vocab", None)
    unk = getattr(vocab, "unk_id", None)
    out = []
    for name in classnames:
        tok = tokenizer(class_prompts(name, templates, phrases))
        known = tok.mask if unk is None else tok.mask & (tok.ids != unk)
        if not bool(known.any()):
            out.append(name)
    return out


def default_space(cfg: Config, modality: str) -> str:
    """The space zero-shot classification compares in: ``vt`` for video; for audio ``vt`` when the graph
    maps audio there (``fac`` through the video head at evaluation, ``shared``), else ``at``."""
    return "vt" if modality == "video" or cfg.model.graph in ("fac", "shared") else "at"


def eval_zeroshot(model: torch.nn.Module, cfg: Config, source: Any, opts: Any, tokenizer: Any, *,
                  modality: str = "video", space: str | None = None,
                  templates: str | Path | Sequence[str] | None = None, windows: int = 1, word_mask: bool = True,
                  device: str | torch.device | None = None, classnames: str | Path | None = None
                  ) -> dict[str, Any]:
    """Zero-shot classification of a labelled source's ``test`` entries (all entries when none is marked
    test): top-1 / top-5 of the cosine similarity between each item's embedding (``windows`` linearly
    spaced windows averaged) and :func:`zero_shot_classifier`'s class embeddings. ``opts`` is a
    :class:`~mmv_torch.eval.pipelines.LoaderOptions`. ``classnames``: a file of :func:`read_classnames`.
    Returns ``{"task", "metrics", "settings"}``."""
    from mmv_torch.data.datasets import LabelledDataset
    from mmv_torch.data.sources import class_labels
    from mmv_torch.eval.features import extract_features
    from mmv_torch.eval.metrics import topk_accuracy

    space = space or default_space(cfg, modality)
    chosen, family = read_templates(templates, modality, getattr(source, "kind", None))
    phrases = read_classnames(classnames) if classnames is not None else None
    split = "test" if any(e.split == "test" for e in source.entries if e.modality == modality) else None
    ds = LabelledDataset(source.entries, cfg.data, modality, split=split, classes=source.classes,
                         num_windows=windows, seed=opts.seed)
    labels = class_labels(ds, source)
    if len(ds.classes) < 2:
        raise ValueError(f"{source.source}: {len(ds.classes)} class; zero-shot classification needs at least two")
    if phrases is not None and not set(phrases) & set(ds.classes):
        raise ValueError(f"--classnames {classnames}: none of its labels is a class of {source.source} "
                         f"(e.g. {ds.classes[0]!r})")
    unknown = _unknown_prompts(tokenizer, ds.classes, chosen, phrases)
    if unknown:
        warnings.warn(f"{source.source}: {len(unknown)} of {len(ds.classes)} classes have no prompt word in the "
                      f"vocabulary (e.g. {unknown[0]!r}); they score 0", stacklevel=2)
    classifier = zero_shot_classifier(model, tokenizer, ds.classes, chosen, space, word_mask, device, phrases)
    x, idx = extract_features(model, opts.loader(ds), modality, space, "mean", device)
    feats = torch.nn.functional.normalize(torch.from_numpy(x).float(), dim=-1)
    scores = (feats @ classifier.T).numpy()
    acc = topk_accuracy(scores, labels[idx], (1, 5))
    return {"task": f"zero-shot classification ({modality}, {space})",
            "metrics": {"test_top1": acc["top1"], "test_top5": acc["top5"]},
            "settings": {"data": source.source, "split": split or "all", "modality": modality, "space": space,
                         "classes": len(ds.classes), "items": int(len(idx)), "chance_top1": 1.0 / len(ds.classes),
                         "templates": family, "num_templates": len(chosen),
                         "classnames": str(classnames) if classnames is not None else None, "windows": windows,
                         "classes_without_known_words": len(unknown), "word_mask": word_mask, "seed": opts.seed},
            "test_scores": scores}
