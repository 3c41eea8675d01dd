"""The RGB and depth connectors: pixel shuffle, then one bias-free linear projection (no activation)."""
from __future__ import annotations

import torch
from torch import nn


def pixel_shuffle(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H*W, D] -> [B, (H/f)*(W/f), D*f*f]: each f x f block of patch tokens becomes one token.

    Channel order inside a folded token is (row in block, column in block, feature), which is the order
    the authors' released connector weights expect.
    """
    batch, seq, dim = tokens.shape
    side = int(round(seq**0.5))
    if side * side != seq or side % factor:
        raise ValueError(f"cannot pixel-shuffle {seq} tokens by a factor of {factor}")
    out = side // factor
    x = tokens.reshape(batch, out, factor, out, factor, dim)
    x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, out * out, dim * factor * factor)


class Connector(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int, factor: int):
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(vision_hidden * factor * factor, text_hidden, bias=False)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_shuffle(patch_tokens, self.factor))
