"""Shared fixtures: a tiny model and processor built in memory (no download, a few MB)."""
from __future__ import annotations

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
    torch.manual_seed(0)
    return SmolRGPTForConditionalGeneration(tiny_config).eval()


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
