"""``mmv-torch export --onnx DIR``: the video, audio and text towers with their heads as ONNX graphs with a
dynamic batch axis, for runtimes such as onnxruntime on CPUs and NPUs (``pip install "mmv-torch[onnx]"``).

``DIR`` holds ``video.onnx`` (input ``video`` ``(B, 3, T, H, W)`` RGB in [0, 1]), ``audio.onnx`` (``audio``
``(B, 1, T', F)`` log-mel), ``text.onnx`` (``ids`` ``(B, N)`` int64 and ``word_mask`` ``(B, N)`` bool: all
true for the released weights, which pool over padding) and ``onnx.json`` (inputs, outputs, the input
contract). Each graph returns the L2-normalised embeddings of its modality, one output per space (``va``,
``vt``, ``at`` as :meth:`~mmv_torch.models.mmv.MMV.encode_video` and friends return them). The spatial,
temporal and word sizes are those of the checkpoint's input contract; only the batch is dynamic.
:func:`onnx_parity` compares onnxruntime with PyTorch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch.config import Config
from mmv_torch.extras import require
from mmv_torch.fileio import atomic_folder
from mmv_torch.models.mmv import MMV

TOWERS = ("video", "audio", "text")


class ExportTower(nn.Module):
    """One modality of an MMV, tower + heads, returning its normalised embeddings as a tuple (in ``spaces``)."""

    def __init__(self, model: MMV, modality: str, spaces: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.modality, self.spaces = model, modality, spaces

    def forward(self, x: torch.Tensor, word_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        m = self.model
        if self.modality == "text":  # TextTower.forward without its data-dependent id check (not exportable)
            h = torch.relu(m.text.text_conv1(m.text.embed(x)))
            assert word_mask is not None
            emb = m._embed_text((h * word_mask.unsqueeze(-1).to(h.dtype)).amax(dim=-2))
        elif self.modality == "video":
            emb = m._embed_video(m.video(x))
        else:
            emb = m._embed_audio(m.audio(x))
        return tuple(nn.functional.normalize(emb[s], dim=-1) for s in self.spaces)


def example_inputs(cfg: Config, batch: int = 2, seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of the checkpoint's contract per tower: ``video`` ``(B, 3, T, crop, crop)``, ``audio``
    ``(B, 1, T', F)`` (T' of ``data.audio_seconds``), ``text`` ``(ids (B, N), word_mask (B, N))``."""
    from mmv_torch.data.datasets import audio_features

    d = cfg.data
    g = torch.Generator().manual_seed(seed)
    frames = audio_features(torch.zeros(round(d.audio_seconds * d.sample_rate)), d).shape
    ids = torch.randint(1, cfg.model.text.vocab_size, (batch, d.max_words), generator=g)
    mask = torch.ones(batch, d.max_words, dtype=torch.bool)
    mask[0, d.max_words // 2:] = False
    return {"video": (torch.rand(batch, 3, d.num_frames, d.eval_crop_size, d.eval_crop_size, generator=g),),
            "audio": (torch.randn(batch, *frames, generator=g),), "text": (ids, mask)}


def _spaces(model: MMV, modality: str, inputs: tuple[torch.Tensor, ...]) -> tuple[str, ...]:
    with torch.no_grad():
        kwargs = {"text": inputs[0], "word_mask": inputs[1]} if modality == "text" else {modality: inputs[0]}
        return tuple(s for s in model(**kwargs)[modality] if s != "repr")


def export_onnx(model: MMV, cfg: Config, out_dir: str | Path, towers: tuple[str, ...] = TOWERS,
                opset: int = 18) -> dict[str, Any]:
    """Export ``towers`` of ``model`` (in eval mode) to ``out_dir`` (written whole, atomically); returns
    the ``onnx.json`` record."""
    require("onnxscript", "mmv-torch export --onnx")
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise ValueError(f"towers are some of {list(TOWERS)}, got {list(towers)}")
    out = Path(out_dir)
    own = {f"{t}.onnx" for t in TOWERS} | {"onnx.json"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own) if out.is_dir() else []
    if foreign or out.is_file():
        raise ValueError(f"--onnx {out}: holds files of something else ({foreign[:3] or 'a file'}); choose a new or "
                         "empty folder (its whole content is replaced)")
    model = model.eval()
    inputs = example_inputs(cfg)
    record: dict[str, Any] = {"format": "onnx", "opset": opset, "towers": {}, "normalised": True,
                              "input_contract": {k: getattr(cfg.data, k) for k in (
                                  "num_frames", "fps", "resize_short", "eval_crop_size", "sample_rate",
                                  "audio_seconds", "num_mel_bins", "audio_frontend", "tokenizer", "max_words")}}
    with atomic_folder(out) as tmp:
        for name in towers:
            spaces = _spaces(model, name, inputs[name])
            names = ["ids", "word_mask"] if name == "text" else [name]
            batch = torch.export.Dim("batch", min=1, max=65536)
            dynamic = {"x": {0: batch}, **({"word_mask": {0: batch}} if name == "text" else {})}
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(ExportTower(model, name, spaces), inputs[name], str(tmp / f"{name}.onnx"),
                                  input_names=names, output_names=list(spaces), opset_version=opset, dynamo=True,
                                  dynamic_shapes=dynamic, external_data=False, verbose=False)
            record["towers"][name] = {"file": f"{name}.onnx", "inputs": {
                n: {"shape": ["batch", *t.shape[1:]], "dtype": str(t.dtype).replace("torch.", "")}
                for n, t in zip(names, inputs[name])}, "outputs": list(spaces)}
        (tmp / "onnx.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def onnx_parity(model: MMV, cfg: Config, out_dir: str | Path, batches: tuple[int, ...] = (1, 3), seed: int = 1
                ) -> dict[str, float]:
    """The largest relative difference (``max |onnx - torch| / max |torch|``) per tower and output between
    onnxruntime on ``out_dir``'s graphs and PyTorch, over inputs of each batch size in ``batches``."""
    ort = require("onnxruntime", "mmv-torch export --onnx (the parity check)")
    record = json.loads((Path(out_dir) / "onnx.json").read_text(encoding="utf-8"))
    worst: dict[str, float] = {}
    for name, info in record["towers"].items():
        session = ort.InferenceSession(str(Path(out_dir) / info["file"]), providers=["CPUExecutionProvider"])
        tower = ExportTower(model.eval(), name, tuple(info["outputs"]))
        for b in batches:
            inputs = example_inputs(cfg, batch=b, seed=seed + b)[name]
            got = session.run(None, {n: t.numpy() for n, t in zip(info["inputs"], inputs)})
            with torch.no_grad():
                want = tower(*inputs)
            for space, g, w in zip(info["outputs"], got, want):
                w = w.numpy()
                rel = float(np.abs(g - w).max() / max(float(np.abs(w).max()), 1e-12))
                worst[f"{name}.{space}"] = max(worst.get(f"{name}.{space}", 0.0), rel)
    return worst
