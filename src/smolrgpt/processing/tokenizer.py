"""Tokenizers: the real SmolLM2 tokenizer (from a folder, hub id or GGUF) or a tiny built-in one.

The tiny tokenizer lets the `smolrgpt-tiny` preset work with no download at all. It is a byte-level BPE
trained in code on a short built-in corpus of warehouse language, with SmolLM2's conventions: ChatML
special tokens at ids 0-2, digits split one per token (so numbers are read digit by digit, as SmolLM2
does), and the three SmolRGPT tokens appended last.
"""
from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SMOLRGPT_TOKENS = ["<|image|>", "<mask_rgb>", "<mask_depth>"]
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB_SIZE = 1024

# ChatML, as SmolLM2-Instruct uses it, without a default system prompt (SmolRGPT trains without one).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Our own short corpus: the words and phrasings the warehouse questions, answers and captions use.
_CORPUS = """
user assistant image mask depth region Region [Region 0] [Region 1] [Region 12] pallet pallets buffer buffers
buffer region buffer zone buffer area transporter transporters shelf shelves rack racks box boxes floor
warehouse camera viewpoint perspective observer image left right leftmost rightmost middle closest nearest
farthest empty loaded carrying load pick up pickup automated picking optimal best suitable choice first
How far is the pallet from the pallet? What is the distance between the pallet and the buffer region?
Could you measure the distance between the transporter and the shelf? Tell me the distance. Give me the
distance from the pallet to the pallet. The pallet is 6.36 meters from the pallet. The distance is 1.64
meters. They are 9.81 meters apart from each other. The pallet is inside the buffer region, so the
distance is 0 meters. meter meters metre metres m cm feet
From this viewpoint, does the pallet appear on the right-hand side of the pallet? Is the pallet to the
left of the pallet? The pallet is on the left side. Yes, it is to the right. No, it is to the left.
How many pallets are in the buffer region closest to the shelf? Given the buffer masks and the pallet masks,
how many pallets are situated in the leftmost buffer? The buffer region is the rightmost buffer region.
The buffer region is filled with pallets. Therefore, the buffer area has two pallets. There are exactly
zero one two three four five six seven eight nine ten pallets. There are no pallets inside.
Which pallet is the best choice for an empty transporter to pick up? Among the pallets, which one is the
leftmost object from the image's perspective? Which buffer zone is nearest to the shelf? The transporter is
not transporting any boxes. The pallet is the closest to the transporter, so it is the most suitable choice.
A photo of a warehouse floor with pallets, shelves and a transporter. An aerial view of a storage area.
0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' " ( ) - the a an of to in on is are and with from this that it which what
"""


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - len(SMOLRGPT_TOKENS),
        special_tokens=CHATML_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The built-in tokenizer of the tiny preset: deterministic, offline, with the SmolRGPT tokens."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return add_smolrgpt_tokens(tokenizer)


def add_smolrgpt_tokens(tokenizer):
    """Add `<|image|>`, `<mask_rgb>`, `<mask_depth>` as special tokens (ids follow the vocabulary)."""
    missing = [t for t in SMOLRGPT_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    # SmolRGPT is trained without a system prompt; SmolLM2's own template would add a default one.
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def smolrgpt_token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids(SMOLRGPT_TOKENS)
    return {"image_token_id": ids[0], "mask_rgb_token_id": ids[1], "mask_depth_token_id": ids[2]}


@functools.lru_cache(maxsize=1)
def tiny_special_token_ids() -> dict[str, int]:
    return smolrgpt_token_ids(build_tiny_tokenizer())


@functools.lru_cache(maxsize=1)
def tiny_vocab_size() -> int:
    return len(build_tiny_tokenizer())
