"""Model cards: the ``README.md`` of a fetched folder or a Hub-ready export, with YAML metadata (licence,
library, tags, the input contract, metrics from evaluation JSONs) and the facts a user needs (origin,
checksum, licence, input contract, how to load it, what to cite)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mmv_torch.config import Config

LICENCE_IDS = {"CC BY-NC 4.0": "cc-by-nc-4.0", "Apache-2.0": "apache-2.0", "MIT": "mit"}
"""Licence names as written in this package -> the Hub's licence identifiers (others become ``other``)."""

CITATION = """@inproceedings{alayrac2020self,
  title={{S}elf-{S}upervised {M}ulti{M}odal {V}ersatile {N}etworks},
  author={Alayrac, Jean-Baptiste and Recasens, Adri{\\`a} and Schneider, Rosalia and Arandjelovi{\\'c}, Relja and
          Ramapuram, Jason and De Fauw, Jeffrey and Smaira, Lucas and Dieleman, Sander and Zisserman, Andrew},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2020}
}"""


def input_contract(cfg: Config) -> dict[str, Any]:
    """What a checkpoint's inputs must be (its ``data`` config): frames, fps, crops, audio, tokenizer."""
    d = cfg.data
    return {"num_frames": d.num_frames, "fps": d.fps, "resize_short": d.resize_short, "crop_size": d.eval_crop_size,
            "sample_rate": d.sample_rate, "audio_seconds": d.audio_seconds, "num_mel_bins": d.num_mel_bins,
            "audio_frontend": d.audio_frontend, "tokenizer": d.tokenizer, "max_words": d.max_words}


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A small YAML writer for mappings, lists and scalars (scalars as JSON, which YAML reads)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
        return lines
    if isinstance(value, list):
        for v in value:
            sub = _yaml(v, indent + 2)
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}- {sub[0].strip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
        return lines
    return [f"{pad}{json.dumps(value)}"]


def _numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested metrics, by dotted name (``{"t2v": {"R@1": 5.0}}`` -> ``{"t2v.R@1": 5.0}``)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def _task_type(result: Mapping[str, Any]) -> str:
    task = str(result.get("task", ""))
    if "retrieval" in task:
        return "retrieval"
    return "audio-classification" if "audio" in task else "video-classification"


def model_index(name: str, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` of evaluation results (``{"task", "metrics", "settings"}`` as the
    evaluations write them): one entry per result, its numeric metrics flattened to dotted names."""
    entries = []
    for r in results:
        metrics = [{"type": k, "name": k, "value": v} for k, v in _numbers(r.get("metrics", {})).items()]
        data = str(r.get("settings", {}).get("data", "unknown"))
        entries.append({"task": {"type": _task_type(r), "name": str(r.get("task", "evaluation"))},
                        "dataset": {"name": data, "type": data}, "metrics": metrics})
    return [{"name": name, "results": entries}] if entries else []


def model_card(cfg: Config, name: str, licence: str, origin: Mapping[str, Any] | None = None,
               results: Sequence[Mapping[str, Any]] = (), has_vocab: bool = False, hub_id: str | None = None) -> str:
    """The ``README.md`` of a weights folder: YAML metadata, then origin, licence, input contract, use."""
    meta: dict[str, Any] = {"license": LICENCE_IDS.get(licence, "other"), "library_name": "mmv-torch",
                            "tags": ["mmv", "video", "audio", "text", "multimodal", "self-supervised",
                                     "zero-shot-classification", "feature-extraction"],
                            "pipeline_tag": "feature-extraction", "mmv_input_contract": input_contract(cfg)}
    if LICENCE_IDS.get(licence) is None:
        meta["license_name"] = licence
    index = model_index(name, results)
    if index:
        meta["model-index"] = index
    m = cfg.model
    lines = ["---", *_yaml(meta), "---", "", f"# {name}", "",
             f"MMV network (video tower `{m.video.backbone}`, graph `{m.graph}`) for "
             "[mmv-torch](https://arxiv.org/abs/2006.16228): video, audio and text in shared embedding spaces "
             "(Alayrac et al., Self-Supervised MultiModal Versatile Networks, NeurIPS 2020).", ""]
    lines += ["## Origin and licence", "", f"- licence of the weights: **{licence}**"]
    for key, label in (("url", "downloaded from"), ("sha256", "sha256 of the downloaded file"),
                       ("file", "file"), ("converted_by", "converted by"), ("source", "source")):
        if origin and origin.get(key):
            lines.append(f"- {label}: `{origin[key]}`")
    if origin and origin.get("licence_url"):
        lines.append(f"- licence text: {origin['licence_url']}")
    lines += ["", "## Input contract", "", "| input | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in input_contract(cfg).items()]
    where = f"hf-hub:{hub_id}" if hub_id else "THIS_FOLDER"
    lines += ["", "## Use", "", "```python", "import mmv_torch", "",
              f"model, preprocess, tokenizer = mmv_torch.load({where!r})"
              + ("" if has_vocab else "  # text needs vocab=FILE (`mmv-torch vocab match`)"),
              "v = model.encode_video(preprocess.video(\"clip.mp4\"))   # {space: (1, D)}",
              "a = model.encode_audio(preprocess.audio(\"sound.wav\"))",
              "t = model.encode_text(tokenizer([\"someone chops an onion\"]))",
              "print(v[\"vt\"] @ t[\"vt\"].T, v[\"va\"] @ a[\"va\"].T)", "```", ""]
    if results:
        lines += ["## Evaluation", "", "| evaluation | data | metric | value |", "|---|---|---|---|"]
        for entry in index[0]["results"]:
            for metric in entry["metrics"]:
                lines.append(f"| {entry['task']['name']} | {entry['dataset']['name']} | {metric['name']} | "
                             f"{metric['value']} |")
        lines.append("")
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)
