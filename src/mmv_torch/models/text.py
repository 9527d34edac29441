"""The text tower: frozen word vectors -> per-word linear -> ReLU -> max over words.

Official ``TextModule``: ``embed`` is a ``[V, word_dim]`` table that never receives a gradient
(``stop_gradient`` in the official code; here ``requires_grad=False``), ``text_conv1`` is a
kernel-1 Conv1D, i.e. a per-word ``Linear(word_dim, hidden_dim)`` with bias. The official model
takes the max over ALL word positions, padding included; ``mask_padding=True`` (or an explicit
``word_mask``) excludes padding instead.
"""

from __future__ import annotations

import torch
from torch import nn

from mmv_torch.config import TextConfig


class TextTower(nn.Module):
    """Sentence encoder. ``forward(ids (B,N) or (B,K,N)) -> (B, hidden) or (B, K, hidden)``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.word_dim)
        self.embed.weight.requires_grad_(False)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.text_conv1 = nn.Linear(cfg.word_dim, cfg.hidden_dim)
        self.out_dim = cfg.hidden_dim

    @torch.no_grad()
    def load_word_vectors(self, vectors: torch.Tensor) -> None:
        """Copy a ``[V, word_dim]`` matrix into the frozen table (row ``padding_id`` is usually zeros)."""
        if tuple(vectors.shape) != tuple(self.embed.weight.shape):
            raise ValueError(f"word vectors of shape {tuple(vectors.shape)} do not fit the text tower's "
                             f"table {tuple(self.embed.weight.shape)} (text.vocab_size, text.word_dim)")
        self.embed.weight.copy_(vectors)

    def forward(self, ids: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids ``(..., N)`` int -> ``(..., hidden)``.

        ``word_mask`` ``(..., N)`` bool marks real words; without it and with ``cfg.mask_padding``
        the mask is ``ids != padding_id``. Masked positions never win the max; a sentence with no
        word at all gives zeros. Ids outside ``[0, V)`` raise ``ValueError`` (JAX would clamp them).
        """
        if ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"text ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            raise ValueError(f"text ids must lie in [0, {self.cfg.vocab_size}); got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        words = self.embed(ids.long()).detach()  # (..., N, word_dim), frozen
        h = torch.relu(self.text_conv1(words))  # (..., N, hidden)
        if word_mask is None and self.cfg.mask_padding:
            word_mask = ids != self.cfg.padding_id
        if word_mask is None:
            return h.amax(dim=-2)
        if word_mask.shape != ids.shape:
            raise ValueError(f"word_mask shape {tuple(word_mask.shape)} != ids shape {tuple(ids.shape)}")
        # After ReLU every value is >= 0, so zeroing masked positions keeps the max of the real words
        # and gives 0 for an empty sentence.
        return (h * word_mask.unsqueeze(-1).to(h.dtype)).amax(dim=-2)
