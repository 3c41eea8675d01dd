"""The one prompt builder: questions with `<mask>` tags -> ChatML token ids and answer-only labels.

The text it produces is exactly what the tokenizer's ChatML chat template renders for the same messages
(a test checks this); it is assembled segment by segment only to know which tokens are the answer.
"""
from __future__ import annotations

import re

from smolrgpt.data.sample import MASK_TAG

IGNORE_INDEX = -100
IMAGE_TOKEN = "<|image|>"
MASK_RGB_TOKEN = "<mask_rgb>"
MASK_DEPTH_TOKEN = "<mask_depth>"
_IMAGE_TAG = re.compile(r"<image>\s*")


def expand_question(question: str) -> str:
    """Drop LLaVA's `<image>` tag and turn each `<mask>` into `<mask_rgb><mask_depth>`."""
    return _IMAGE_TAG.sub("", question).strip().replace(MASK_TAG, MASK_RGB_TOKEN + MASK_DEPTH_TOKEN)


def build_messages(turns, num_image_tokens: int) -> list[dict]:
    """Chat messages for (question, answer) turns; the image tokens open the first user turn."""
    messages = []
    for i, (question, answer) in enumerate(turns):
        content = expand_question(question)
        if i == 0 and num_image_tokens:
            content = IMAGE_TOKEN * num_image_tokens + content
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def turn_header(role: str) -> str:
    """The ChatML text that opens a turn of `role`."""
    return f"<|im_start|>{role}\n"


def image_prefix_ids(tokenizer, image_token_id: int, num_image_tokens: int) -> list[int]:
    """The ids every prompt of a frame starts with (the first user header, then the image tokens): the part
    its questions share, so the engine can reuse its KV cache."""
    return tokenizer.encode(turn_header("user"), add_special_tokens=False) + [image_token_id] * num_image_tokens


def encode_messages(tokenizer, messages: list[dict], add_generation_prompt: bool) -> tuple[list[int], list[int]]:
    """Token ids of the ChatML rendering and labels that keep only assistant answers and their end token."""
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool):
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE_INDEX] * len(piece))

    for message in messages:
        add(turn_header(message["role"]), False)
        if message["role"] == "assistant":
            add(message["content"] + "<|im_end|>", True)
            add("\n", False)
        else:
            add(message["content"] + "<|im_end|>\n", False)
    if add_generation_prompt:
        add(turn_header("assistant"), False)
    return ids, labels


def render_text(messages: list[dict], add_generation_prompt: bool) -> str:
    """The same rendering as plain text (used to check against the tokenizer's chat template)."""
    text = "".join(f"{turn_header(m['role'])}{m['content']}<|im_end|>\n" for m in messages)
    return text + (turn_header("assistant") if add_generation_prompt else "")
