"""Shared fixtures: a tiny model and processor built in memory (no download, a few MB)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from smolrgpt.data.sample import Region, Sample
from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
from smolrgpt.processing.processor import SmolRGPTProcessor
from smolrgpt.processing.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_config():
    return SmolRGPTConfig.from_preset("smolrgpt-tiny")


@pytest.fixture(scope="session")
def tiny_processor(tiny_config):
    return SmolRGPTProcessor.for_model(build_tiny_tokenizer(), tiny_config)


@pytest.fixture()
def tiny_model(tiny_config):
    """The tiny preset as shipped: the paper's architecture plus its region extensions."""
    torch.manual_seed(0)
    # a copy: a test that switches a model option must not switch it for the session's other tests
    return SmolRGPTForConditionalGeneration.from_scratch(copy.deepcopy(tiny_config)).eval()


@pytest.fixture()
def paper_model():
    """The tiny preset's sizes with the paper's architecture only (no region extension)."""
    torch.manual_seed(0)
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny", region_extensions=[])
    return SmolRGPTForConditionalGeneration.from_scratch(config).eval()


def liven(model):
    """Give the random language model large weights, so greedy decoding varies from prompt to prompt
    (a mix-up between batch rows then shows in the answers); returns the model."""
    with torch.no_grad():
        for p in model.language_model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def make_frame(seed: int = 0, size=(90, 160)):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    depth = rng.integers(0, 256, size, dtype=np.uint8)
    return rgb, depth


def make_sample(sample_id="s0", seed=0, question="How far is the pallet <mask> from the pallet <mask>?",
                answer="The pallet [Region 0] is 3.25 meters from the pallet [Region 1].", boxes=None):
    rgb, depth = make_frame(seed)
    boxes = boxes if boxes is not None else [[0, 0, 40, 30], [80, 40, 150, 85]][: question.count("<mask>")]
    return Sample(sample_id, rgb, [(question, answer)], [Region("box", b) for b in boxes], depth=depth,
                  source="test")


def write_track3_split(root, split="val", frames=3, questions_per_frame=3, size=(90, 160), with_answers=True):
    """A tiny split in the real Track 3 layout (PNG frames and depth maps, RLE masks) made here."""
    import json
    from pathlib import Path

    from PIL import Image
    from pycocotools import mask as coco_mask

    root = Path(root)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "depths").mkdir(parents=True, exist_ok=True)
    h, w = size
    templates = [
        ("distance", "How far is the pallet <mask> from the pallet <mask>?", 2,
         "The pallet [Region 0] is 2.50 meters from the pallet [Region 1].", 2.5),
        ("left_right", "Is the pallet <mask> to the left of the pallet <mask>?", 2,
         "The pallet [Region 0] is to the left of the pallet [Region 1].", "left"),
        ("count", "Given the buffer <mask> and the pallets <mask> <mask> <mask>, how many pallets are in the buffer?",
         4, "There are two pallets in the buffer region [Region 0].", 2),
        ("mcq", "Which of the pallets <mask> <mask> <mask> is the leftmost?", 3,
         "The pallet [Region 1] is the leftmost.", "1"),
    ]
    records = []
    for f in range(frames):
        rgb, depth = make_frame(f, size)
        name = f"{f:06d}.png"
        Image.fromarray(rgb).save(root / split / "images" / name)
        Image.fromarray(depth).save(root / split / "depths" / f"{f:06d}_depth.png")
        for q in range(questions_per_frame):
            category, question, n, answer, normalized = templates[(f + q) % len(templates)]
            rles = []
            for k in range(n):
                m = np.zeros((h, w), np.uint8)
                x = (k * 37 + f * 11) % (w - 20)
                m[10 + k * 5: 30 + k * 5, x: x + 20] = 1
                enc = coco_mask.encode(np.asfortranarray(m))
                rles.append({"size": [h, w], "counts": enc["counts"].decode()})
            record = {"id": f"{f:03d}{q:03d}" + "0" * 26, "image": name,
                      "conversations": [{"from": "human", "value": "<image>\n" + question}], "rle": rles}
            if with_answers:
                record["conversations"].append({"from": "gpt", "value": answer})
                record.update(category=category, normalized_answer=normalized, freeform_answer=answer)
            records.append(record)
    (root / f"{split}.json").write_text(json.dumps(records))
    return root / f"{split}.json"
