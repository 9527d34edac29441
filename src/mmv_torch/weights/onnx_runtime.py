"""The towers of an ``mmv-torch export --onnx`` folder run through onnxruntime, behind the call interface of
:class:`~mmv_torch.models.mmv.MMV` (``model(video=, audio=, text=, word_mask=)`` → ``{modality: {space: (B, D)}}``)
so that the index build can embed with either runtime (``mmv-torch index build --runtime onnx``).

The graphs return L2-normalised embeddings (the callers normalise again, which changes nothing); their input sizes
are fixed but for the batch, so a folder is only usable with the input contract it was exported with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config
from mmv_torch.extras import require

CONTRACT_KEYS = ("num_frames", "eval_crop_size", "sample_rate", "audio_seconds", "num_mel_bins", "audio_frontend",
                 "max_words")


class OnnxTowers:
    """onnxruntime sessions of an ONNX export folder's towers, called like an :class:`MMV` in eval mode.

    ``threads`` (default: ``torch.get_num_threads()``, so both runtimes use the same cores) sets onnxruntime's
    intra-op threads. Inputs are CPU tensors (or moved there); outputs are CPU float32 tensors."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "the ONNX runtime (--runtime onnx)")
        self.folder = Path(folder)
        record_file = self.folder / "onnx.json"
        if not record_file.is_file():
            raise ValueError(f"{self.folder}: not an ONNX export folder (no onnx.json; write one with "
                             "`mmv-torch export --checkpoint CK --onnx DIR`)")
        self.record: dict[str, Any] = json.loads(record_file.read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.sessions = {name: ort.InferenceSession(str(self.folder / info["file"]), options,
                                                    providers=["CPUExecutionProvider"])
                         for name, info in self.record["towers"].items()}

    def check_contract(self, cfg: Config) -> None:
        """Raise ``ValueError`` when the folder was exported with another input contract than ``cfg.data``'s."""
        mine = self.record.get("input_contract", {})
        other = {k: (mine.get(k), getattr(cfg.data, k)) for k in CONTRACT_KEYS if mine.get(k) != getattr(cfg.data, k)}
        if other:
            raise ValueError(f"{self.folder}: exported with another input contract than the checkpoint's {other} "
                             "(onnx, checkpoint); export this checkpoint's towers again")

    def eval(self) -> OnnxTowers:
        """Nothing to switch (the graphs are inference graphs); for the :class:`MMV` interface."""
        return self

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if name not in self.sessions:
            raise ValueError(f"{self.folder}: no {name} tower (exported towers: {list(self.sessions)}); export it "
                             f"with `mmv-torch export --onnx {self.folder} --towers video,audio,text`")
        outputs = self.record["towers"][name]["outputs"]
        return {s: torch.from_numpy(np.asarray(v)) for s, v in zip(outputs, self.sessions[name].run(None, feeds))}

    def __call__(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None,
                 text: torch.Tensor | None = None, word_mask: torch.Tensor | None = None
                 ) -> dict[str, dict[str, torch.Tensor]]:
        """``{modality: {space: (B, D)}}`` for the modalities given: video ``(B, 3, T, H, W)``, audio
        ``(B, 1, T', F)``, text ids ``(B, N)`` with an optional ``word_mask`` ``(B, N)`` (none: every position,
        as :class:`MMV` pools without a mask)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        if video is not None:
            out["video"] = self._run("video", {"video": video.detach().float().cpu().numpy()})
        if audio is not None:
            out["audio"] = self._run("audio", {"audio": audio.detach().float().cpu().numpy()})
        if text is not None:
            mask = torch.ones_like(text, dtype=torch.bool) if word_mask is None else word_mask
            out["text"] = self._run("text", {"ids": text.detach().cpu().long().numpy(),
                                             "word_mask": mask.detach().cpu().bool().numpy()})
        return out


def check_towers_match(towers: OnnxTowers, model: Any, cfg: Config, tolerance: float = 1e-3) -> dict[str, float]:
    """The largest relative difference per exported tower between ``towers`` and the PyTorch ``model`` on one
    example input each; raises ``ValueError`` above ``tolerance`` (the folder was exported from other weights)."""
    from mmv_torch.weights.onnx_export import example_inputs

    inputs = example_inputs(cfg, batch=1, seed=7)
    worst: dict[str, float] = {}
    for name in towers.sessions:
        kwargs = ({"text": inputs["text"][0], "word_mask": inputs["text"][1]} if name == "text"
                  else {name: inputs[name][0]})
        got = towers(**kwargs)[name]
        with torch.no_grad():
            want = model(**kwargs)[name]
        for space, g in got.items():
            w = torch.nn.functional.normalize(want[space].float(), dim=-1)
            worst[f"{name}.{space}"] = float((g - w).abs().max() / w.abs().max().clamp_min(1e-12))
    bad = {k: v for k, v in worst.items() if v > tolerance}
    if bad:
        raise ValueError(f"{towers.folder}: its towers are not the checkpoint's (largest relative differences {bad}); "
                         "export this checkpoint's towers again")
    return worst


def load_onnx_towers(folder: str | Path, resolved: Any, device: str = "cpu") -> OnnxTowers:
    """The towers of the ONNX export ``folder`` for the resolved checkpoint ``resolved`` (a
    :class:`~mmv_torch.weights.resolve.ResolvedCheckpoint`), checked against it: the same input contract and the
    same outputs as its PyTorch model on one example input. onnxruntime runs here on the CPU only."""
    if str(device) != "cpu":
        raise ValueError(f"the ONNX runtime runs on the CPU here; got device {device!r} (use --device cpu)")
    towers = OnnxTowers(folder)
    towers.check_contract(resolved.config)
    check_towers_match(towers, resolved.load_model("cpu").eval(), resolved.config)
    return towers
