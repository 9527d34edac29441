"""The MMV network: three towers, the projection heads and the embedding graph.

Graphs (paper §3, official ``mm_embedding_graph``):

- ``shared``: one space S_vat; each modality has one head (``<modality>_vat``) and the same
  embedding is returned under every space key.
- ``disjoint``: S_va and S_vt (and S_at), each head applied to the backbone representation.
- ``fac`` (fine and coarse): video enters the fine space S_va first and the coarse space S_vat
  from there: ``v_vt = head_video_vt(act(v_va))``. Audio lives in S_va, text in S_vat. At
  evaluation audio is also mapped to S_vat through the VIDEO's vt head, ``a_vt = head_video_vt(act(a_va))``,
  exactly as the official eval path (its BN statistics come from video). In training mode that path is
  not computed (it would feed audio batches through the video head's BatchNorm); the official
  training path uses the separate ``audio_at`` head instead.

Heads (``heads`` ModuleDict; official names in brackets): ``video_va`` [vid2audio_embd],
``video_vt`` [vis_embd], ``audio_va`` [audio_embd], ``audio_at`` [audio2txt_embd],
``text_vt`` [txt_embd], ``text_at`` [txt2audio_embd].

Output of ``forward``: ``emb[modality][space]`` with modality in ``video|audio|text`` and space in
``va|vt|at`` plus ``repr`` (the backbone representation). Text may come with K candidates per clip:
ids ``(B,K,N)`` give embeddings ``(B,K,D)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmv_torch.config import (
    AudioConfig,
    BatchNormConfig,
    ModelConfig,
    VideoConfig,
)
from mmv_torch.models.audio_resnet import AudioResNet
from mmv_torch.models.heads import ProjectionHead
from mmv_torch.models.r2plus1d import R2Plus1D
from mmv_torch.models.s3d import S3D
from mmv_torch.models.text import TextTower
from mmv_torch.models.tsm_resnet import TSMResNet

Embeddings = dict[str, dict[str, torch.Tensor]]


def build_video_backbone(cfg: VideoConfig, bn: BatchNormConfig) -> nn.Module:
    """The video tower named by ``cfg.backbone``; it has an ``out_dim`` attribute."""
    if cfg.backbone == "s3d":
        return S3D(cfg, bn)
    if cfg.backbone == "tsm_resnet":
        return TSMResNet(cfg, bn)
    if cfg.backbone == "r2plus1d":
        return R2Plus1D(cfg, bn)
    raise ValueError(f"unknown video backbone {cfg.backbone!r}")


def build_audio_backbone(cfg: AudioConfig, bn: BatchNormConfig) -> nn.Module:
    """The audio ResNetV2; it has an ``out_dim`` attribute."""
    return AudioResNet(cfg, bn)


class MMV(nn.Module):
    """Video, audio and text towers with projection heads into the joint spaces."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.video = build_video_backbone(cfg.video, cfg.bn)
        self.audio = build_audio_backbone(cfg.audio, cfg.bn)
        self.text = TextTower(cfg.text)
        dv, da, dt = self.video.out_dim, self.audio.out_dim, self.text.out_dim
        sp = cfg.spaces
        heads: dict[str, nn.Module] = {}
        if cfg.graph == "shared":
            d = sp["va"].dim
            heads["video_vat"] = ProjectionHead(dv, d, sp["va"].first, cfg.bn)
            heads["audio_vat"] = ProjectionHead(da, d, sp["va"].second, cfg.bn)
            heads["text_vat"] = ProjectionHead(dt, d, sp["vt"].second, cfg.bn)
        else:
            heads["video_va"] = ProjectionHead(dv, sp["va"].dim, sp["va"].first, cfg.bn)
            video_vt_in = sp["va"].dim if cfg.graph == "fac" else dv
            heads["video_vt"] = ProjectionHead(video_vt_in, sp["vt"].dim, sp["vt"].first, cfg.bn)
            heads["audio_va"] = ProjectionHead(da, sp["va"].dim, sp["va"].second, cfg.bn)
            heads["audio_at"] = ProjectionHead(da, sp["at"].dim, sp["at"].first, cfg.bn)
            heads["text_vt"] = ProjectionHead(dt, sp["vt"].dim, sp["vt"].second, cfg.bn)
            heads["text_at"] = ProjectionHead(dt, sp["at"].dim, sp["at"].second, cfg.bn)
        self.heads = nn.ModuleDict(heads)
        self.fac_bn = (nn.BatchNorm1d(sp["va"].dim, eps=cfg.bn.eps, momentum=cfg.bn.momentum)
                       if cfg.graph == "fac" and cfg.fac_activation == "bnrelu" else None)

    def _fac_act(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.fac_activation == "none":
            return x
        if self.fac_bn is not None:
            x = self.fac_bn(x)
        return torch.relu(x)

    def _embed_video(self, rep: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.graph == "shared":
            e = self.heads["video_vat"](rep)
            return {"va": e, "vt": e, "at": e}
        va = self.heads["video_va"](rep)
        vt_in = self._fac_act(va) if self.cfg.graph == "fac" else rep
        return {"va": va, "vt": self.heads["video_vt"](vt_in)}

    def _embed_audio(self, rep: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.graph == "shared":
            e = self.heads["audio_vat"](rep)
            return {"va": e, "vt": e, "at": e}
        out = {"va": self.heads["audio_va"](rep), "at": self.heads["audio_at"](rep)}
        if self.cfg.graph == "fac" and not self.training:
            out["vt"] = self.heads["video_vt"](self._fac_act(out["va"]))
        return out

    def _embed_text(self, rep: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.graph == "shared":
            e = self.heads["text_vat"](rep)
            return {"va": e, "vt": e, "at": e}
        return {"vt": self.heads["text_vt"](rep), "at": self.heads["text_at"](rep)}

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None,
                text: torch.Tensor | None = None, word_mask: torch.Tensor | None = None) -> Embeddings:
        """Embed any subset of the modalities.

        video ``(B,3,T,H,W)`` RGB in [0,1] (S3D with the space-to-depth stem also takes the official
        24-channel input); audio ``(B,1,T,F)`` log-mel; text ids ``(B,N)`` or ``(B,K,N)`` with an
        optional ``word_mask`` of the same shape. Returns ``emb[modality][space]`` (``(B,D)``, text
        ``(B,D)`` or ``(B,K,D)``) with ``emb[modality]["repr"]`` the backbone representation.
        """
        emb: Embeddings = {}
        if video is not None:
            if video.dim() != 5:
                raise ValueError(f"video must be (B,C,T,H,W), got shape {tuple(video.shape)}")
            rep = self.video(video)
            emb["video"] = {"repr": rep, **self._embed_video(rep)}
        if audio is not None:
            if audio.dim() != 4 or audio.shape[1] != 1:
                raise ValueError(f"audio must be a (B,1,T,F) spectrogram, got shape {tuple(audio.shape)}")
            rep = self.audio(audio)
            emb["audio"] = {"repr": rep, **self._embed_audio(rep)}
        if text is not None:
            if text.dim() not in (2, 3):
                raise ValueError(f"text ids must be (B,N) or (B,K,N), got shape {tuple(text.shape)}")
            lead = text.shape[:-1]
            flat_mask = None if word_mask is None else word_mask.reshape(-1, text.shape[-1])
            rep = self.text(text.reshape(-1, text.shape[-1]), flat_mask)
            out = {"repr": rep, **self._embed_text(rep)}
            emb["text"] = {k: v.reshape(*lead, v.shape[-1]) for k, v in out.items()}
        if not emb:
            raise ValueError("MMV.forward needs at least one of video, audio, text")
        return emb

    def _spaces(self, emb: dict[str, torch.Tensor], normalize: bool) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in emb.items() if k != "repr"}
        return {k: nn.functional.normalize(v, dim=-1) for k, v in out.items()} if normalize else out

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.parameters())
        return x.to(p.device, p.dtype if x.is_floating_point() else x.dtype)

    def encode_video(self, video: torch.Tensor, normalize: bool = True) -> dict[str, torch.Tensor]:
        """Video ``(B, 3, T, H, W)`` RGB in [0, 1] (e.g. ``preprocess.video(path)``) -> ``{space: (B, D)}``:
        ``va`` and ``vt`` (all three under the shared graph), L2-normalised unless ``normalize=False``.
        The input is moved to the model's device and dtype."""
        return self._spaces(self(video=self._on_device(video))["video"], normalize)

    def encode_audio(self, audio: torch.Tensor, normalize: bool = True) -> dict[str, torch.Tensor]:
        """Log-mel ``(B, 1, T, F)`` (e.g. ``preprocess.audio(path)``) -> ``{space: (B, D)}``: ``va`` and
        ``at`` (and ``vt`` under FAC in eval mode), L2-normalised unless ``normalize=False``."""
        return self._spaces(self(audio=self._on_device(audio))["audio"], normalize)

    def encode_text(self, text: torch.Tensor | Any, word_mask: torch.Tensor | None = None,
                    normalize: bool = True) -> dict[str, torch.Tensor]:
        """Word ids ``(B, N)`` (or ``(B, K, N)``), or a tokenizer's output with ``.ids`` and ``.mask`` (e.g.
        ``tokenizer(["a sentence"])``, whose mask is then the word mask) -> ``{space: (B, D)}``: ``vt``
        and ``at``, L2-normalised unless ``normalize=False``."""
        if not isinstance(text, torch.Tensor):
            ids = getattr(text, "ids", None)
            if not isinstance(ids, torch.Tensor):
                raise ValueError("encode_text takes word ids (B, N) or a tokenizer's output, got "
                                 f"{type(text).__name__}")
            text, word_mask = ids, text.mask if word_mask is None else word_mask
        mask = None if word_mask is None else word_mask.to(next(self.parameters()).device)
        return self._spaces(self(text=self._on_device(text), word_mask=mask)["text"], normalize)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: ``video``, ``audio``, ``text`` (frozen table included), ``heads``, ``total``."""
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters())
                  for name in ("video", "audio", "text", "heads")}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts
