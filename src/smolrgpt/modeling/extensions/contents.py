"""Region contents: an optional learned layer that adds to each region's vectors a summary of the other
masks of the question that lie on it (extension "contents"; not in the paper, on in the tiny preset).

Why it exists: count ("how many pallets are in the rightmost buffer?") needs, for the chosen buffer, the
number of pallets standing in it. Given which pallet stands in which buffer as a per-region code
(a relation code, since removed), the tiny language model still listed pallets at random after 1,500 count-only steps
(docs/research.md): it has to bind each pallet's code to the buffer the question means, across tokens.
Here the buffer's own vectors carry what stands on it, so the language model only has to pick the buffer
and read its contents.

How: a message passing step over each question's regions (a one-layer graph network). Edge (i, j) says how
much of mask j lies on or next to mask i (`geometry.overlap_shares`, through a learned soft threshold);
each member j sends a learned message from its pooled RGB and depth vectors; i receives the SUM of its
members' messages, then an MLP. The sum, not a mean or max, is what lets the result depend on how many
members there are (a mean of identical messages is the same for one pallet as for four). The edges come from
the masks, the model's own inputs, as mask pooling's weights do; which masks count as members, what they
send and what the sum means are all learned, so the answer still comes from the model.
The output layer starts at zero, so a model with the option on starts out as the same model without it.
"""
from __future__ import annotations

import torch
from torch import nn

from smolrgpt.modeling.extensions.base import RegionExtension
from smolrgpt.modeling.extensions.geometry import overlap_shares, same_row_others

# The soft threshold on an edge's overlap share starts at one half, steep: a pallet in a buffer has most of
# its weight on or beside the buffer (the share is 0.175 or more for 98.9% of the pallets inside on the
# demo's validation split), a pallet beside it a small part.
EDGE_THRESHOLD = 0.5
EDGE_SHARPNESS = 10.0


class RegionContents(RegionExtension):
    name = "contents"
    attribute = "region_contents"

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.message = nn.Linear(2 * width, hidden)
        self.receive = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, width)
        self.output.init_std = 0.0  # starts at zero (the model's _init_weights reads init_std)
        # shape [1], not scalars: FSDP's fully_shard refuses 0-d parameters
        self.edge_threshold = nn.Parameter(torch.full((1,), EDGE_THRESHOLD))
        self.edge_sharpness = nn.Parameter(torch.full((1,), EDGE_SHARPNESS))

    @classmethod
    def for_model(cls, config) -> "RegionContents":
        width = config.text_config.hidden_size
        return cls(width, width)

    @torch.no_grad()
    def init_extension(self) -> None:
        """The layer's own edge parameters (its Linear children are initialised as the model's Linears are)."""
        self.edge_threshold.fill_(EDGE_THRESHOLD)
        self.edge_sharpness.fill_(EDGE_SHARPNESS)

    def edges(self, masks: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
        """[R, R]: at (i, j) how much region j counts as lying on region i (0 across rows and for i == j)."""
        on = overlap_shares(masks, sample_index).T  # (i, j): share of j's weight on or beside i
        soft = torch.sigmoid(self.edge_sharpness * (on - self.edge_threshold))
        return torch.where(same_row_others(sample_index), soft, 0.0)

    def update(self, rgb: torch.Tensor, depth: torch.Tensor, masks: torch.Tensor,
               sample_index: torch.Tensor) -> torch.Tensor:
        """Pooled region vectors [R, C] (RGB and depth), masks [R, G, G], rows [R] -> the update [R, C] that
        is added to both of each region's vectors."""
        messages = self.message(torch.cat([rgb, depth], dim=-1))  # [R, hidden]
        received = self.edges(masks, sample_index).to(messages.dtype) @ messages
        return self.output(nn.functional.gelu(self.receive(nn.functional.gelu(received))))

    def forward(self, rgb, depth, masks, sample_index, model=None):
        update = self.update(rgb, depth, masks, sample_index)
        return rgb + update, depth + update
