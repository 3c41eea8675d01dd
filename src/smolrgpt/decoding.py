"""Decoding with a shared prompt prefix and a preallocated KV cache.

Every question about a frame starts with the same tokens: the chat header and the 64 image tokens. Their
keys and values are computed once per frame (`prefix_kv`) and copied into the batch's cache; only the
question (suffix) is prefilled. Rows of a batch are laid out as [prefix | padding | suffix | answer], the
padding masked out and position ids continuing from the prefix, so one batch can mix frames and question
lengths. Suffixes are prefilled in groups of similar length (`length_groups`), so a batch that mixes a
2-mask question with a 15-mask one does not compute the short rows' padding; decoding then runs all rows
together. The cache is transformers' StaticCache (allocated once for prefix + suffix + answer); the loop
keeps finished-row bookkeeping on the device and looks at it only every `sync_every` steps, so a GPU is
not stalled by a host round trip per token.

transformers' generate() cannot start rows from different cached prefixes with padding between prefix
and suffix, which is why this loop exists; the model forward itself is transformers' Llama.
"""
from __future__ import annotations

import time

import torch
from transformers import DynamicCache, StaticCache


@torch.no_grad()
def prefix_kv(language_model, prefix_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [1, kv_heads, P, head_dim] of a prefix given as embeddings [1, P, H]."""
    cache = DynamicCache(config=language_model.config)
    language_model(inputs_embeds=prefix_embeds, cache=cache, use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _sample(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probs = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1).squeeze(-1)


# A prefill group's rows are padded to its longest suffix; a row joins a group while the group's
# longest is at most this many times the row's length (padded positions cost as much as real ones).
GROUP_PADDING = 1.25


def length_groups(lengths: list[int], slack: float = GROUP_PADDING) -> list[list[int]]:
    """Row indices grouped by suffix length: sorted longest first, a new group starts when a row is
    shorter than the group's longest / slack. Equal lengths always share a group."""
    groups: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if groups and lengths[groups[-1][0]] <= slack * lengths[row]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _seeded(cache, prefixes):
    """`cache` holding the rows' prefix keys and values (all of one length P), returned."""
    for layer, per_layer in enumerate(zip(*prefixes)):
        cache.update(torch.cat([k for k, _ in per_layer]), torch.cat([v for _, v in per_layer]), layer)
    return cache


def _suffix_mask(lengths: list[int], prefix_len: int, width: int, device) -> torch.Tensor:
    """[b, width] attention mask of rows laid out as [prefix | padding | suffix]: the prefix and each
    row's suffix, right-aligned to the longest of `lengths`, set."""
    longest = max(lengths)
    mask = torch.zeros(len(lengths), width, dtype=torch.long, device=device)
    mask[:, :prefix_len] = 1
    for row, n in enumerate(lengths):
        mask[row, prefix_len + longest - n: prefix_len + longest] = 1
    return mask


def _prefill(language_model, cache, prefix_len: int, suffix_embeds, mask_len: int | None = None):
    """Prefill suffixes after the prefixes `cache` holds, each right-aligned to the longest g of them
    ([prefix | padding | suffix], padding masked out, positions continuing from the prefix). Returns (last
    logits [b, V], the attention mask [b, mask_len or P + g] with the prefix and suffix positions set, g)."""
    batch, longest = len(suffix_embeds), max(x.shape[0] for x in suffix_embeds)
    first = suffix_embeds[0]
    mask = _suffix_mask([x.shape[0] for x in suffix_embeds], prefix_len, mask_len or prefix_len + longest,
                        first.device)
    embeds = torch.zeros(batch, longest, first.shape[-1], dtype=first.dtype, device=first.device)
    positions = torch.zeros(batch, longest, dtype=torch.long, device=first.device)
    for row, suffix in enumerate(suffix_embeds):
        n = suffix.shape[0]
        embeds[row, longest - n:] = suffix
        positions[row, longest - n:] = torch.arange(prefix_len, prefix_len + n, device=first.device)
    logits = language_model(inputs_embeds=embeds, attention_mask=mask[:, :prefix_len + longest],
                            position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    return logits, mask, longest


def _prefill_in_groups(language_model, prefixes, suffix_embeds, groups, total: int):
    """Prefill each length group on its own, then lay every row's keys and values out as one batch
    prefill would have ([prefix | padding | suffix], suffixes right-aligned to the longest) in a
    StaticCache of `total` positions. Returns (last logits [B, V], that cache)."""
    batch, prefix_len = len(suffix_embeds), prefixes[0][0][0].shape[2]
    longest = max(x.shape[0] for x in suffix_embeds)
    device = suffix_embeds[0].device
    blocks, logits = None, None
    for rows in groups:
        group_cache = _seeded(DynamicCache(config=language_model.config), [prefixes[r] for r in rows])
        group_logits, _, group_longest = _prefill(language_model, group_cache, prefix_len,
                                                  [suffix_embeds[r] for r in rows])
        if blocks is None:
            blocks = [[torch.zeros(batch, t.shape[1], prefix_len + longest, t.shape[3], dtype=t.dtype, device=device)
                       for t in (layer.keys, layer.values)] for layer in group_cache.layers]
            logits = group_logits.new_zeros(batch, group_logits.shape[-1])
        index = torch.tensor(rows, device=device)
        logits[index] = group_logits
        shift = longest - group_longest  # the group's suffix columns, moved right to the batch's alignment
        for (keys, values), layer in zip(blocks, group_cache.layers):
            for block, source in ((keys, layer.keys), (values, layer.values)):
                block[index, :, :prefix_len] = source[:, :, :prefix_len]
                block[index, :, prefix_len + shift:] = source[:, :, prefix_len:]
    cache = StaticCache(config=language_model.config, max_cache_len=total)
    for layer, (keys, values) in zip(cache.layers, blocks):
        layer.update(keys, values)
    return logits, cache


@torch.no_grad()
def generate_from_prefixes(language_model, embed_tokens, prefixes: list[list[tuple[torch.Tensor, torch.Tensor]]],
                           suffix_embeds: list[torch.Tensor], max_new_tokens: int, eos_token_id: int,
                           pad_token_id: int, do_sample: bool = False, temperature: float = 1.0,
                           top_p: float = 1.0, sync_every: int = 8, timings: dict | None = None) -> torch.Tensor:
    """Greedy (or sampled) answers [B, T<=max_new_tokens]; each row stops at `eos_token_id` (included),
    then holds `pad_token_id`. `prefixes[b]` is row b's prefix KV (all of one length P), `suffix_embeds[b]`
    its question embeddings [S_b, H]. `timings` (a defaultdict(float)) receives prefill/decode seconds."""
    batch = len(suffix_embeds)
    prefix_len = prefixes[0][0][0].shape[2]
    lengths_list = [s.shape[0] for s in suffix_embeds]
    longest = max(lengths_list)
    total = prefix_len + longest + max_new_tokens
    device = suffix_embeds[0].device
    started = time.perf_counter()
    groups = length_groups(lengths_list)
    if len(groups) == 1:  # one padded prefill straight into the decoding cache
        cache = _seeded(StaticCache(config=language_model.config, max_cache_len=total), prefixes)
        logits, mask, _ = _prefill(language_model, cache, prefix_len, suffix_embeds, total)
    else:
        logits, cache = _prefill_in_groups(language_model, prefixes, suffix_embeds, groups, total)
        mask = _suffix_mask(lengths_list, prefix_len, total, device)
    lengths = torch.tensor(lengths_list, device=device)
    if timings is not None:
        timings["prefill_s"] += time.perf_counter() - started
        started = time.perf_counter()
    next_position = (prefix_len + lengths)[:, None]
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = max_new_tokens
    for step in range(max_new_tokens):
        token = _sample(logits, temperature, top_p) if do_sample else logits.argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        out[:, step] = token
        finished |= token == eos_token_id
        if step == max_new_tokens - 1 or ((step + 1) % sync_every == 0 and bool(finished.all())):
            steps = step + 1
            break
        mask[:, prefix_len + longest + step] = 1
        logits = language_model(inputs_embeds=embed_tokens(token)[:, None], attention_mask=mask,
                                position_ids=next_position, cache=cache, use_cache=True).logits[:, -1]
        next_position = next_position + 1
    if timings is not None:
        timings["decode_s"] += time.perf_counter() - started
        timings["decode_steps"] += steps
    return out[:, :steps]
