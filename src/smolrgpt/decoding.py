"""Decoding with a shared prompt prefix and a preallocated KV cache.

Every question about a frame starts with the same tokens: the chat header and the 64 image tokens. Their
keys and values are computed once per frame (`prefix_kv`) and copied into the batch's cache; only the
question (suffix) is prefilled. Rows of a batch are laid out as [prefix | padding | suffix | answer], the
padding masked out and position ids continuing from the prefix, so one batch can mix frames and question
lengths. The cache is transformers' StaticCache (allocated once for prefix + suffix + answer); the loop
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
    longest = max(s.shape[0] for s in suffix_embeds)
    total = prefix_len + longest + max_new_tokens
    first = suffix_embeds[0]
    device, dtype = first.device, first.dtype
    cache = StaticCache(config=language_model.config, max_cache_len=total)
    for layer, per_layer in zip(cache.layers, zip(*prefixes)):
        layer.update(torch.cat([k for k, _ in per_layer]), torch.cat([v for _, v in per_layer]))
    embeds = torch.zeros(batch, longest, first.shape[-1], dtype=dtype, device=device)
    mask = torch.zeros(batch, total, dtype=torch.long, device=device)
    mask[:, :prefix_len] = 1
    positions = torch.zeros(batch, longest, dtype=torch.long, device=device)
    lengths = torch.tensor([s.shape[0] for s in suffix_embeds], device=device)
    for row, suffix in enumerate(suffix_embeds):
        n = suffix.shape[0]
        embeds[row, longest - n:] = suffix
        mask[row, prefix_len + longest - n: prefix_len + longest] = 1
        positions[row, longest - n:] = torch.arange(prefix_len, prefix_len + n, device=device)
    started = time.perf_counter()
    logits = language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                            cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
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
