"""The region geometry code: exact values, slots per row, and that the model adds it identically in training
and in the inference engine."""
import math

import pytest
import torch

from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.extensions.geometry import (BOX_FREQUENCIES, CENTROID_FREQUENCIES, MAX_SLOTS, SLOT_VALUE,
                                                   code_width, geometry_code, region_slots)
from smolrgpt.modeling.model import FrameFeatures, SmolRGPTForConditionalGeneration


def test_slots_restart_on_each_row():
    index = torch.tensor([0, 0, 0, 2, 2, 3])
    assert region_slots(index).tolist() == [0, 1, 2, 0, 1, 0]
    assert region_slots(torch.zeros(0, dtype=torch.long)).tolist() == []


def test_code_of_a_box_mask_has_exact_values():
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:4, 4:8] = 1.0  # rows 2-3, columns 4-7
    index = torch.tensor([5, 5])  # second mask empty
    code = geometry_code(masks, index, 128)
    assert code.shape == (2, 128)

    def sincos(v, k):
        return [math.sin(f * math.pi * v) for f in range(1, k + 1)] + [math.cos(f * math.pi * v) for f in range(1, k + 1)]

    # pixel centres: column c sits at (c + 0.5) / 8
    cx, cy = 6.0 / 8, 3.0 / 8
    left, right, top, bottom = 4.5 / 8, 7.5 / 8, 2.5 / 8, 3.5 / 8
    expected = (sincos(cx, CENTROID_FREQUENCIES) + sincos(cy, CENTROID_FREQUENCIES)
                + sum((sincos(v, BOX_FREQUENCIES) for v in (left, right, top, bottom)), []))
    place = len(expected)
    assert torch.allclose(code[0, :place], torch.tensor(expected), atol=1e-5)
    slot0 = torch.zeros(MAX_SLOTS)
    slot0[0] = SLOT_VALUE
    assert torch.equal(code[0, place:place + MAX_SLOTS], slot0)
    assert place + MAX_SLOTS == code_width() and not code[:, code_width():].any()
    # the empty mask: no place, slot 1 only
    assert not code[1, :place].any() and code[1, place + 1] == SLOT_VALUE and code[1].sum() == SLOT_VALUE


def test_soft_weights_move_the_centroid_and_slots_past_the_last_share_it():
    masks = torch.zeros(MAX_SLOTS + 2, 4, 4)
    masks[:, 0, 0] = 1.0
    masks[:, 0, 3] = 0.5
    code = geometry_code(masks, torch.zeros(MAX_SLOTS + 2, dtype=torch.long), code_width())
    cx = (0.5 / 4 * 1.0 + 3.5 / 4 * 0.5) / 1.5
    assert code[0, 0].item() == pytest.approx(math.sin(math.pi * cx), abs=1e-6)
    slot_start = code_width() - MAX_SLOTS
    assert code[-1, slot_start + MAX_SLOTS - 1] == SLOT_VALUE and code[-2, slot_start + MAX_SLOTS - 1] == SLOT_VALUE


def test_a_language_model_narrower_than_the_code_is_refused():
    with pytest.raises(ValueError, match=f"needs {code_width()} channels, the language model has 64"):
        geometry_code(torch.ones(1, 4, 4), torch.zeros(1, dtype=torch.long), 64)


def test_model_adds_the_code_only_when_configured():
    torch.manual_seed(0)
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny")
    assert "geometry" in config.region_extensions  # the tiny preset turns it on
    model = SmolRGPTForConditionalGeneration(config).eval()
    # the same weights without the extension (it has no parameters of its own: the state dicts match)
    plain = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-tiny",
                                                                        region_extensions=["contents", "comparisons"]))
    plain.load_state_dict(model.state_dict(), strict=True)
    grid, hidden, tokens = config.mask_grid, config.text_config.hidden_size, config.num_image_tokens
    frames = FrameFeatures(torch.randn(2, tokens, hidden), torch.randn(2, tokens, hidden))
    masks = (torch.rand(3, grid, grid) > 0.7).float()
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        rgb, depth = model.get_region_features(masks, index, frames)
        plain_rgb, plain_depth = plain.eval().get_region_features(masks, index, frames)
    code = geometry_code(masks, index, hidden)
    table = model.get_input_embeddings().weight.detach()
    assert torch.allclose(rgb - plain_rgb, code + table[config.mask_rgb_token_id], atol=1e-5)
    assert torch.allclose(depth - plain_depth, code + table[config.mask_depth_token_id], atol=1e-5)
    assert code[1, code_width() - MAX_SLOTS] == SLOT_VALUE and code[2, code_width() - MAX_SLOTS + 1] == SLOT_VALUE


def test_models_built_for_training_keep_the_presets_options():
    # training and the demo start from `model.init=preset:NAME` through build_from_backbones: the tiny
    # preset's region geometry code must be on there too, and an explicit override still wins
    from smolrgpt.modeling.weights import build_from_backbones
    from smolrgpt.training.config import ModelSection
    from smolrgpt.training.trainer import build_initial_model

    model, _ = build_initial_model(ModelSection(init="preset:smolrgpt-tiny"), max_length=128)
    assert model.config.region_extensions == ["contents", "comparisons", "geometry"]
    assert model.region_extension_attributes == ("region_contents", "region_comparisons", "region_geometry")
    model, _ = build_from_backbones(preset="smolrgpt-tiny", region_extensions=["contents"])
    assert model.config.region_extensions == ["contents"] and not hasattr(model, "region_geometry")
    model, _ = build_from_backbones(preset="smolrgpt-135m")  # the paper's architecture: none
    assert model.config.region_extensions == [] and model.region_extension_attributes == ()
    assert not any(name.startswith("region_") for name, _ in model.named_children())
