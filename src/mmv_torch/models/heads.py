"""Projection heads into the joint embedding spaces (official ``EmbeddingModule``).

A head is ``[Linear -> BN? -> ReLU] * len(hidden)`` followed by ``final_projection`` and an optional
BN. Bias rules of the official code: hidden linears always have a bias; ``final_projection`` has a
bias except in an MLP head with ``bn_after_proj`` (a linear head keeps its bias even then).

Submodules: ``final_projection_inner.{i}`` (hidden linears), ``inner_bn.{i}``, ``final_projection``,
``final_bn`` (only with ``bn_after_proj``).
"""

from __future__ import annotations

import torch
from torch import nn

from mmv_torch.config import BatchNormConfig, HeadConfig


class ProjectionHead(nn.Module):
    """``(B, in_dim) -> (B, out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig, bn: BatchNormConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.final_projection_inner = nn.ModuleList()
        self.inner_bn = nn.ModuleList()
        d = in_dim
        for h in cfg.hidden:
            self.final_projection_inner.append(nn.Linear(d, h))
            self.inner_bn.append(nn.BatchNorm1d(h, eps=bn.eps, momentum=bn.momentum) if cfg.inner_bn
                                 else nn.Identity())
            d = h
        final_bias = not (cfg.bn_after_proj and len(cfg.hidden) > 0)
        self.final_projection = nn.Linear(d, out_dim, bias=final_bias)
        self.final_bn = nn.BatchNorm1d(out_dim, eps=bn.eps, momentum=bn.momentum) if cfg.bn_after_proj else None
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.final_projection_inner, self.inner_bn):
            x = torch.relu(norm(linear(x)))
        x = self.final_projection(x)
        if self.final_bn is not None:
            x = self.final_bn(x)
        return x
