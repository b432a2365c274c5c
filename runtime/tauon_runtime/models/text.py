"""Text classifiers: token ids in, class logits out, padding never read.

Inputs are what the text-classification task prepares: `[N, L, 1, 1]` float32 token ids, id 0
padding after each text (the model zoo's one input layout). Each model turns them back into
int64 ids and a mask of the real tokens:

- `lstm` and `gru` read each text left to right and classify from the hidden state at its
  last real token: padding comes after it, so it never influences that state (the result equals
  packing the sequences, and it exports to ONNX, which packed sequences do not).
- `transformer` is a `torch.nn.TransformerEncoder` with learned positions; attention gets a key
  padding mask (no position attends to padding) and the text's vector is the mean over its
  real tokens only.

A text with no known token (all padding) is read as one unknown token, so no division by zero
and no empty sequence.
"""

from __future__ import annotations

import torch
from torch import nn

PAD_ID, UNK_ID = 0, 1


def token_ids(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, L, 1, 1] float ids -> (ids [N, L] int64, mask [N, L] bool of real tokens)."""
    ids = x.flatten(1).round().long()
    empty = (ids == PAD_ID).all(dim=1, keepdim=True)
    first = torch.zeros_like(ids, dtype=torch.bool)
    first[:, 0] = True
    ids = torch.where(empty & first, torch.full_like(ids, UNK_ID), ids)
    return ids, ids != PAD_ID


class RecurrentClassifier(nn.Module):
    def __init__(
        self,
        seq_len: int,
        num_classes: int,
        _image_size: int = 1,
        *,
        vocab_size: int,
        cell: str = "lstm",
        embed_dim: int = 64,
        hidden_size: int = 128,
        layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(
            embed_dim,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = token_ids(x)
        out, _ = self.rnn(self.embed(ids))  # [N, L, H]
        # The state after each text's last real token (texts are padded at the end).
        last = (mask.long().sum(dim=1) - 1).clamp(min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, out.size(2))
        return self.head(self.drop(out.gather(1, index).squeeze(1)))


class TransformerClassifier(nn.Module):
    def __init__(
        self,
        seq_len: int,
        num_classes: int,
        _image_size: int = 1,
        *,
        vocab_size: int,
        embed_dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embedDim {embed_dim} must be a multiple of heads {heads}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.position = nn.Parameter(torch.zeros(1, seq_len, embed_dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim, heads, ff_dim, dropout, batch_first=True, norm_first=True
        )
        # No nested-tensor fast path: it drops masked positions, which ONNX cannot express.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = token_ids(x)
        h = self.embed(ids) + self.position[:, : ids.size(1)]
        h = self.encoder(h, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1)
        return self.head(self.norm(pooled))


def lstm(seq_len: int, num_classes: int, image_size: int = 1, **kw) -> nn.Module:
    return RecurrentClassifier(seq_len, num_classes, image_size, cell="lstm", **kw)


def gru(seq_len: int, num_classes: int, image_size: int = 1, **kw) -> nn.Module:
    return RecurrentClassifier(seq_len, num_classes, image_size, cell="gru", **kw)


def transformer(seq_len: int, num_classes: int, image_size: int = 1, **kw) -> nn.Module:
    return TransformerClassifier(seq_len, num_classes, image_size, **kw)
