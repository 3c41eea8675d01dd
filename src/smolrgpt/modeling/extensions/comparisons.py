"""Region comparisons: an optional learned layer that adds to each region's vectors what it sees of the
other regions of its question, where they lie relative to it (extension "comparisons"; not in the paper,
on in the tiny preset).

Why it exists: superlatives. "How many pallets are in the leftmost buffer?" and "which of these pallets is
the rightmost?" pick one region among 2 to 4 by comparing all their places. The geometry code tells the
language model where each mask lies, and left/right between two masks reaches 97-99%, but with only that
the tiny model picked the buffer of a count question about as well as a random pick (docs/research.md)
and mcq stayed near chance at the default budget. A comparison the language model would have to make
across several mask tokens, this layer makes inside each region's vectors: region i receives, from every
other region j of its question, a message built from j's pooled vectors (what j is: a buffer, a pallet, a
shelf) and from where j lies relative to i; the messages are SUMMED, so the result can say how many buffers
lie to i's left, which is zero for the leftmost buffer.

How: a one-layer graph network over each question's regions with relative-position edge features, computed
only for pairs of the same question. The places come from the masks (`geometry.mask_places`), the model's
own inputs; which regions matter, what relative place means and what the sum says are learned, so the
answer still comes from the model. The output layer starts at zero, so a model with the option on starts
out as the same model without it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from smolrgpt.modeling.extensions.base import RegionExtension
from smolrgpt.modeling.extensions.geometry import mask_places, same_row_others

# Each pair's features: j's place minus i's (centroid x and y, box left, right, top, bottom), raw and through
# a steep tanh: "left of" is a step in the difference that a GELU of a small linear map does not make sharp
# from raw differences of a few hundredths.
PAIR_SHARPNESS = 16.0
PAIR_FEATURES = 12
def pair_features(places: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor) -> torch.Tensor:
    """places [R, 6], pair indices [P] -> [P, PAIR_FEATURES]."""
    offset = places[senders] - places[receivers]
    return torch.cat([offset, torch.tanh(PAIR_SHARPNESS * offset)], dim=1)


class RegionComparisons(RegionExtension):
    name = "comparisons"
    attribute = "region_comparisons"

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.sender = nn.Linear(2 * width, hidden)
        self.relation = nn.Linear(PAIR_FEATURES, hidden)
        # unit-scale pair features need weights of their own scale to move the GELU off its linear part
        self.relation.init_std = PAIR_FEATURES ** -0.5  # (the model's _init_weights reads init_std)
        self.receive = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, width)
        self.output.init_std = 0.0  # starts at zero

    @classmethod
    def for_model(cls, config) -> "RegionComparisons":
        width = config.text_config.hidden_size
        return cls(width, width)

    def update(self, rgb: torch.Tensor, depth: torch.Tensor, masks: torch.Tensor,
               sample_index: torch.Tensor) -> torch.Tensor:
        """Region vectors [R, C] (RGB and depth), masks [R, G, G], rows [R] -> the update [R, C] that is added
        to both of each region's vectors."""
        places, present = mask_places(masks)
        # only pairs of the same question, and no empty masks (they have no place)
        pairs = same_row_others(sample_index) & present[:, None] & present[None, :]
        receivers, senders = pairs.nonzero(as_tuple=True)
        sent = self.sender(torch.cat([rgb, depth], dim=-1))  # [R, hidden]
        relation = self.relation(pair_features(places, receivers, senders).to(sent.dtype))
        messages = F.gelu(sent[senders] + relation)  # [P, hidden]
        received = torch.zeros_like(sent).index_add_(0, receivers, messages)
        return self.output(F.gelu(self.receive(received)))

    def forward(self, rgb, depth, masks, sample_index, model=None):
        update = self.update(rgb, depth, masks, sample_index)
        return rgb + update, depth + update
