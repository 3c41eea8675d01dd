"""Region geometry code: an optional, parameter-free description of where each mask lies in the frame and
which `<mask>` of the question it is, added to both of the region's vectors (extension "geometry",
together with the mask tokens' own trainable embeddings, which the spliced vectors otherwise replace).

Why it exists: mask pooling averages the refined map under a mask, so a region's place in the frame is only
a small part of its pooled vector (about 1% of the norm after stage 3 on the tiny model), and which
`<mask>` it is (the `[Region k]` an answer must name) is only implied by token order. A from-scratch
language model did not learn left/right from pooled vectors within 2,000 steps, but did reach 96-99% when a
sine-cosine code of the mask's x and a one-hot of its slot were on the mask positions, and 97% with this
code (`experiments/oracle_regions.py`). This module computes that code from the model's own inputs (the masks
and their order), so the answer still comes from the model. It is not part of the paper's architecture
and is off by default; the tiny preset turns it on.

Layout of the code ([R, width], zero beyond `code_width()`):
- centroid x and y: sin/cos(k * pi * v), k = 1..CENTROID_FREQUENCIES (v in [0, 1] over the mask grid);
- box left, right, top, bottom: sin/cos(k * pi * v), k = 1..BOX_FREQUENCIES;
- slot: SLOT_VALUE at the region's 0-based index among its row's masks (the last slot also takes any beyond).
An empty mask gets the slot alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from smolrgpt.modeling.extensions.base import RegionExtension

CENTROID_FREQUENCIES = 8
BOX_FREQUENCIES = 4
MAX_SLOTS = 16
# The slot one-hot's value. At 1.0 the slot is 1/33 of the code's energy and a from-scratch language model
# stayed at chance on left/right for 2,000 steps (a code of x, y and slot alone did too, for 1,750); at 4.0
# it reached 97% (experiments/oracle_regions.py --oracle geometry-only): telling the masks apart comes first.
SLOT_VALUE = 4.0


def code_width() -> int:
    return 2 * 2 * CENTROID_FREQUENCIES + 4 * 2 * BOX_FREQUENCIES + MAX_SLOTS


def region_slots(sample_index: torch.Tensor) -> torch.Tensor:
    """0-based index of each region among the regions of its row (sample_index non-decreasing)."""
    positions = torch.arange(len(sample_index), device=sample_index.device)
    starts = torch.ones_like(sample_index, dtype=torch.bool)
    starts[1:] = sample_index[1:] != sample_index[:-1]
    return positions - torch.cummax(torch.where(starts, positions, 0), 0).values


def _sincos(values: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[R, V] values in [0, 1] -> [R, V * 2 * frequencies]."""
    angles = values[..., None] * torch.arange(1, frequencies + 1, dtype=values.dtype, device=values.device) * math.pi
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


def same_row_others(sample_index: torch.Tensor) -> torch.Tensor:
    """[R, R] True where regions i and j belong to the same row (question) and i != j."""
    regions = len(sample_index)
    return (sample_index[:, None] == sample_index[None, :]) & ~torch.eye(regions, dtype=torch.bool,
                                                                         device=sample_index.device)


def overlap_shares(masks: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """masks [R, G, G] and their rows [R] -> [R, R]: at (i, j) the share of region i's weight that lies on or
    within one cell of region j's support; 0 for i == j and across rows."""
    weights = masks.to(torch.float32).flatten(1)
    support = (masks > 0).to(torch.float32)[:, None]
    near = F.max_pool2d(support, kernel_size=3, stride=1, padding=1).flatten(1)  # [R, G*G]
    share = (weights @ near.T) / weights.sum(1).clamp_min(1e-12)[:, None]  # [R, R]
    return torch.where(same_row_others(sample_index), share, 0.0)


def mask_places(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """masks [R, G, G] (weights in [0, 1]) -> places [R, 6] (centroid x, centroid y, box left, right, top,
    bottom, each in [0, 1] over the grid) and present [R] (False for an empty mask, whose place is junk)."""
    grid = masks.shape[-1]
    weights = masks.to(torch.float32)
    area = weights.sum(dim=(1, 2))
    coords = (torch.arange(grid, dtype=torch.float32, device=masks.device) + 0.5) / grid
    centroid_x = (weights.sum(1) * coords).sum(1) / area.clamp_min(1e-12)
    centroid_y = (weights.sum(2) * coords).sum(1) / area.clamp_min(1e-12)
    columns, rows = weights.amax(1) > 0, weights.amax(2) > 0  # [R, G] occupied columns / rows
    first = lambda occupied: torch.where(occupied, coords, 2.0).amin(1)  # noqa: E731
    last = lambda occupied: torch.where(occupied, coords, -1.0).amax(1)  # noqa: E731
    places = torch.stack([centroid_x, centroid_y, first(columns), last(columns), first(rows), last(rows)], dim=1)
    return places, area > 0


def geometry_code(masks: torch.Tensor, sample_index: torch.Tensor, width: int) -> torch.Tensor:
    """masks [R, G, G] (weights in [0, 1]) and their rows [R] -> codes [R, width]."""
    needed = code_width()
    if width < needed:
        raise ValueError(f"the region geometry code needs {needed} channels, the language model has {width}")
    regions = masks.shape[0]
    places, present = mask_places(masks)
    place = torch.cat([_sincos(places[:, :2], CENTROID_FREQUENCIES), _sincos(places[:, 2:], BOX_FREQUENCIES)],
                      dim=1)
    place = place * present[:, None]
    code = torch.zeros(regions, width, dtype=torch.float32, device=masks.device)
    code[:, :place.shape[1]] = place
    slots = region_slots(sample_index).clamp_max(MAX_SLOTS - 1)
    code[torch.arange(regions, device=masks.device), place.shape[1] + slots] = SLOT_VALUE
    return code


class RegionGeometry(RegionExtension):
    """Adds the geometry code and the mask tags' own (trainable) embeddings, which the spliced vectors
    otherwise replace, so the positions stay marked as regions. No parameters of its own."""

    name = "geometry"
    attribute = "region_geometry"
    family = None  # nothing to train
    stages = ()

    def forward(self, rgb, depth, masks, sample_index, model):
        code = geometry_code(masks, sample_index, rgb.shape[-1]).to(rgb.dtype)
        table = model.get_input_embeddings().weight
        return (rgb + code + table[model.config.mask_rgb_token_id].to(rgb.dtype),
                depth + code + table[model.config.mask_depth_token_id].to(rgb.dtype))
