"""Region comparisons: an optional learned layer that adds to each region's vectors what it sees of the
other regions of its question, where they lie relative to it (`region_comparisons: true`; not in the paper,
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

Mask groups (`region_groups: true`): a question lists its masks in groups, one per kind of object ("the buffer
masks <mask> <mask> and pallet masks <mask> <mask> <mask>"), and a superlative picks within a group: the
rightmost BUFFER, not the rightmost mask. Without groups, a buffer's sum mixes buffers and pallets, and the
tiny model's choice of buffer in count questions stayed about as good as a random pick (docs/research.md). With them, each region also receives, through a Linear of its own, the sum of the messages from its
own group alone. Groups come from the prompt's token ids: consecutive masks separated by at most
MAX_GROUP_GAP tokens (with the tiny tokenizer " ", ", " or " and ") belong to one group; any other words
between them start a new one. So the grouping is read from the question's layout, never from what the
masks are, and a question that names each mask on its own ("the pallet <mask> and the pallet <mask>") has
groups of one. It did not improve the choice of buffer in 1,500 count-only steps (docs/research.md), so
it is off in every preset.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from smolrgpt.modeling.geometry import mask_places, same_row_others

# Each pair's features: j's place minus i's (centroid x and y, box left, right, top, bottom), raw and through
# a steep tanh: "left of" is a step in the difference that a GELU of a small linear map does not make sharp
# from raw differences of a few hundredths.
PAIR_SHARPNESS = 16.0
PAIR_FEATURES = 12
# Tokens allowed between one mask's <mask_depth> and the next mask's <mask_rgb> within a group (with the tiny
# tokenizer " ", ", " and " and " are one or two tokens; words such as " the pallet " are more).
MAX_GROUP_GAP = 2


def mask_groups(input_ids: torch.Tensor, mask_rgb_token_id: int) -> torch.Tensor:
    """input_ids [B, T] -> [R]: the group number of each region, regions in row order (the k-th <mask_rgb>
    of each row), numbers unique across rows. Each mask is <mask_rgb><mask_depth>, so the next mask's
    <mask_rgb> is 2 + (tokens between) positions on."""
    rows, columns = (input_ids == mask_rgb_token_id).nonzero(as_tuple=True)  # row-major: region order
    new = torch.ones_like(rows, dtype=torch.bool)
    new[1:] = (rows[1:] != rows[:-1]) | (columns[1:] - columns[:-1] - 2 > MAX_GROUP_GAP)
    return torch.cumsum(new.to(torch.long), 0) - 1


def pair_features(places: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor) -> torch.Tensor:
    """places [R, 6], pair indices [P] -> [P, PAIR_FEATURES]."""
    offset = places[senders] - places[receivers]
    return torch.cat([offset, torch.tanh(PAIR_SHARPNESS * offset)], dim=1)


class RegionComparisons(nn.Module):
    def __init__(self, width: int, hidden: int, groups: bool = False):
        super().__init__()
        self.sender = nn.Linear(2 * width, hidden)
        self.relation = nn.Linear(PAIR_FEATURES, hidden)
        # unit-scale pair features need weights of their own scale to move the GELU off its linear part
        self.relation.init_std = PAIR_FEATURES ** -0.5  # (the model's _init_weights reads init_std)
        self.receive = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, width)
        self.output.init_std = 0.0  # starts at zero
        # the same-group sum's own path; at zero, so switching groups on for a trained layer starts from it
        self.group_receive = nn.Linear(hidden, hidden, bias=False) if groups else None
        if groups:
            self.group_receive.init_std = 0.0

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, masks: torch.Tensor,
                sample_index: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Region vectors [R, C] (RGB and depth), masks [R, G, G], rows [R] (and with `region_groups` the mask
        groups [R], `mask_groups`) -> the update [R, C] that is added to both of each region's vectors."""
        places, present = mask_places(masks)
        # only pairs of the same question, and no empty masks (they have no place)
        pairs = same_row_others(sample_index) & present[:, None] & present[None, :]
        receivers, senders = pairs.nonzero(as_tuple=True)
        sent = self.sender(torch.cat([rgb, depth], dim=-1))  # [R, hidden]
        relation = self.relation(pair_features(places, receivers, senders).to(sent.dtype))
        messages = F.gelu(sent[senders] + relation)  # [P, hidden]
        received = torch.zeros_like(sent).index_add_(0, receivers, messages)
        hidden = self.receive(received)
        if self.group_receive is not None:
            if groups is None or groups.shape != sample_index.shape:
                raise ValueError(f"region_groups needs the group of each of the {len(sample_index)} regions, got "
                                 f"{None if groups is None else tuple(groups.shape)}")
            same = groups[receivers] == groups[senders]
            own_group = torch.zeros_like(sent).index_add_(0, receivers[same], messages[same])
            hidden = hidden + self.group_receive(own_group)
        return self.output(F.gelu(hidden))
