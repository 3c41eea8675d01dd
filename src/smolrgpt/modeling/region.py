"""Region features: the refiner (token grid -> dense feature map) and parameter-free mask pooling."""
from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of a [B, C, H, W] map."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Refiner(nn.Module):
    """Upsamples the 8x8 connector tokens to a 64x64 map: (ConvT 2x2/2 -> LayerNorm2d -> GELU) twice, then
    ConvT 2x2/2 -> GELU. Width is the LM's hidden size. Module indices (0, 1, 3, 4, 6 hold weights) match
    the authors' checkpoint layout so their weights import by name."""

    def __init__(self, width: int, num_layers: int, eps: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
            if i < num_layers - 1:
                layers.append(LayerNorm2d(width, eps))
            layers.append(nn.GELU())
        self.refiner = nn.Sequential(*layers)
        self.scale = 2**num_layers  # output pixels per token side

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, S*S, C] tokens (row-major grid) -> [B, C, S*2^n, S*2^n] feature map."""
        batch, seq, width = tokens.shape
        side = int(round(seq**0.5))
        grid = tokens.transpose(1, 2).reshape(batch, width, side, side)
        return self.refiner(grid)


def is_non_decreasing(index: torch.Tensor) -> bool:
    """Whether a 1-D index never goes down (regions grouped by frame or row, rows by frame)."""
    return not bool((index[1:] < index[:-1]).any())


def mask_pool(features: torch.Tensor, masks: torch.Tensor, sample_index: torch.Tensor, eps: float) -> torch.Tensor:
    """Weighted mean of each region's feature map: sum(feat * mask) / (sum(mask) + eps).

    features: [B, C, G, G]; masks: [R, G, G] weights in [0, 1]; sample_index: [R] frame of each region.
    Returns [R, C]. One matrix product per frame, so region count never multiplies feature-map memory.
    """
    if masks.shape[-2:] != features.shape[-2:]:
        raise ValueError(f"region masks are {tuple(masks.shape[-2:])}, feature maps {tuple(features.shape[-2:])}")
    flat = features.flatten(2)  # [B, C, G*G]
    weights = masks.flatten(1).to(flat.dtype)  # [R, G*G]
    pooled = torch.empty(masks.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    for b in torch.unique(sample_index).tolist():
        rows = (sample_index == b).nonzero(as_tuple=True)[0]
        w = weights[rows]
        pooled[rows] = (w @ flat[b].T) / (w.sum(dim=1, keepdim=True) + eps)
    return pooled


def token_weights(masks: torch.Tensor, side: int, scale: int) -> torch.Tensor:
    """[R, G, G] masks -> [R, side*side, scale*scale]: each mask's weights under each connector token's
    scale x scale block of the refined map, tokens in row-major grid order."""
    regions = masks.shape[0]
    if tuple(masks.shape[-2:]) != (side * scale, side * scale):
        raise ValueError(f"region masks are {tuple(masks.shape[-2:])}, refined feature maps "
                         f"{(side * scale, side * scale)}")
    weights = masks.reshape(regions, side, scale, side, scale).permute(0, 1, 3, 2, 4)
    return weights.reshape(regions, side * side, scale * scale)


def pool_blocks(weights: torch.Tensor, blocks: torch.Tensor, eps: float) -> torch.Tensor:
    """Weighted mean over refined blocks: weights [R, M, kk] of R regions over M tokens' blocks
    [M, C, kk] -> [R, C], normalised by each region's total weight (as `mask_pool`)."""
    return torch.einsum("rnp,ncp->rc", weights, blocks) / (weights.sum(dim=(1, 2))[:, None] + eps)


def pool_refined(refiner: Refiner, tokens: torch.Tensor, masks: torch.Tensor, sample_index: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """`mask_pool(refiner(tokens), masks, sample_index, eps)`, refining only the tokens under some mask.

    Each refiner layer is a 2x2 stride-2 transposed convolution followed by per-pixel LayerNorm/GELU, so
    output pixel (y, x) depends on connector token (y // k, x // k) alone (k = 2**layers). Regions cover a
    fraction of a frame, and in training the full maps' GELU/convolution backward passes were most of a
    tiny-model step. tokens: [B, N, C]; masks: [R, G, G]; sample_index: [R], non-decreasing. Returns [R, C];
    gradients flow to the refiner and the tokens as through the full map.
    """
    batch, count, width = tokens.shape
    if not is_non_decreasing(sample_index):
        raise ValueError("regions must be ordered by frame (sample_index non-decreasing)")
    weights = token_weights(masks, int(round(count ** 0.5)), refiner.scale).to(tokens.dtype)  # [R, N, kk]
    covered = (weights > 0).any(dim=2).to(torch.int32)  # [R, N]
    need = torch.zeros(batch, count, dtype=torch.int32, device=tokens.device).index_add_(0, sample_index, covered) > 0
    frame, token = need.nonzero(as_tuple=True)  # row-major: grouped by frame
    blocks = refiner.refiner(tokens[frame, token].reshape(-1, width, 1, 1)).flatten(2)  # [M, C, kk]
    # split (not per-frame indexing) keeps the backward pass a concatenation instead of one full-size
    # zero-filled gradient per frame
    block_groups = blocks.split(need.sum(dim=1).tolist())
    regions_by_frame = weights.split(torch.bincount(sample_index, minlength=batch).tolist())
    pooled = []
    for b, w in enumerate(regions_by_frame):
        if len(w):
            pooled.append(pool_blocks(w[:, need[b]], block_groups[b], eps))
    return torch.cat(pooled) if pooled else blocks.new_zeros(0, width)


class LazyRefinedMap:
    """The refined feature map of one frame, computed only where region masks fall, and kept.

    Each refiner layer is a 2x2 stride-2 transposed convolution followed by per-pixel LayerNorm/GELU, so
    output pixel (y, x) depends on connector token (y // k, x // k) alone (k = 2**layers): the map can
    be built token by token. A question whose masks cover a few tokens refines those tokens only; later
    questions about the same frame reuse every token already refined. Pooled vectors equal
    `mask_pool(refiner(tokens), masks)` up to float summation order.
    """

    def __init__(self, refiner: Refiner, tokens: torch.Tensor):
        if tokens.shape[0] != 1:
            raise ValueError("a LazyRefinedMap holds one frame")
        self.refiner = refiner
        self.tokens = tokens[0]  # [N, C]
        self.side = int(round(self.tokens.shape[0] ** 0.5))
        self.blocks: torch.Tensor | None = None  # [N, C, k*k]
        self.done = torch.zeros(self.tokens.shape[0], dtype=torch.bool, device=tokens.device)

    def pool(self, masks: torch.Tensor, eps: float) -> torch.Tensor:
        """masks [R, G, G] -> pooled [R, C]."""
        weights = token_weights(masks, self.side, self.refiner.scale).to(self.tokens.dtype)
        need = (weights > 0).any(dim=2).any(dim=0)
        todo = need & ~self.done
        if bool(todo.any()):
            index = todo.nonzero().flatten()
            fresh = self.refiner.refiner(self.tokens[index].reshape(-1, self.tokens.shape[1], 1, 1))
            if self.blocks is None:
                self.blocks = torch.zeros(self.tokens.shape[0], fresh.shape[1], weights.shape[2],
                                          dtype=fresh.dtype, device=fresh.device)
            self.blocks[index] = fresh.flatten(2)
            self.done |= todo
        index = need.nonzero().flatten()
        return pool_blocks(weights[:, index], self.blocks[index], eps)
