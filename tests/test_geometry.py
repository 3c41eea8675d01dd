"""The region geometry code: exact values, slots per row, and that the model adds it identically in training
and in the inference engine."""
import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.geometry import (BOX_FREQUENCIES, CENTROID_FREQUENCIES, MAX_SLOTS, RELATION_VALUE,
                                        SLOT_VALUE, code_width, geometry_code, region_slots, relation_code)
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
    assert config.region_geometry  # the tiny preset turns it on
    model = SmolRGPTForConditionalGeneration(config).eval()
    grid, hidden, tokens = config.mask_grid, config.text_config.hidden_size, config.num_image_tokens
    frames = FrameFeatures(torch.randn(2, tokens, hidden), torch.randn(2, tokens, hidden))
    masks = (torch.rand(3, grid, grid) > 0.7).float()
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        rgb, depth = model.region_vectors(frames, masks, index)
        model.config.region_geometry = False
        plain_rgb, plain_depth = model.region_vectors(frames, masks, index)
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
    assert model.config.region_geometry and model.config.region_contents and model.region_contents is not None
    assert model.config.region_comparisons and model.region_comparisons is not None
    model, _ = build_from_backbones(preset="smolrgpt-tiny", region_geometry=False)
    assert not model.config.region_geometry
    model, _ = build_from_backbones(preset="smolrgpt-135m")  # the paper's architecture: off
    assert not model.config.region_geometry and model.region_contents is None and model.region_comparisons is None


def test_relation_code_is_the_share_of_each_mask_on_or_beside_each_other_mask_of_its_row():
    masks = torch.zeros(4, 8, 8)
    masks[0, 5:8, :] = 1.0            # a buffer's floor, row 0 slot 0
    masks[0, 5:7, 2:4] = 0.0          # ... hidden where the pallet stands
    masks[1, 4:7, 2:4] = 1.0          # a pallet in it: all 6 cells on or beside the buffer
    masks[2, 0:2, 6:8] = 1.0          # a pallet far away: none
    masks[2, 1, 6] = 0.5              # (soft weights count by weight)
    masks[3, 5:8, :] = 1.0            # the same buffer in another row: never related to row 0
    index = torch.tensor([0, 0, 0, 1])
    code = relation_code(masks, index)
    assert code.shape == (4, MAX_SLOTS)
    assert code[1, 0].item() == pytest.approx(RELATION_VALUE)  # pallet -> buffer
    assert code[2].abs().sum() == 0
    # buffer -> pallet: the buffer cells within one cell of the pallet (rows 4-7 x columns 1-4, less the
    # hidden ones), of the buffer's 24 - 4 = 20 cells: rows 5-7 x columns 1-4 = 12, minus 4 hidden = 8
    assert code[0, 1].item() == pytest.approx(RELATION_VALUE * 8 / 20)
    assert code[0, 0] == 0 and code[1, 1] == 0  # never itself
    assert code[3].abs().sum() == 0 and code[:, 3:].abs().sum() == 0
    full = geometry_code(masks, index, 128, relations=True)
    start = code_width()
    assert torch.equal(full[:, start:start + MAX_SLOTS], code) and code_width(relations=True) == start + MAX_SLOTS
    assert torch.equal(full[:, :start], geometry_code(masks, index, 128)[:, :start])  # the rest is unchanged
    assert not full[:, start + MAX_SLOTS:].any()
    with pytest.raises(ValueError, match=f"needs {code_width(relations=True)} channels, the language model has 90"):
        geometry_code(masks, index, 90, relations=True)


def test_relations_past_the_last_slot_share_it_and_empty_masks_relate_to_nothing():
    masks = torch.zeros(MAX_SLOTS + 2, 4, 4)
    masks[0, 0, 0] = 1.0
    masks[MAX_SLOTS, 0, 1] = 1.0      # beside region 0, past the last slot
    code = relation_code(masks, torch.zeros(MAX_SLOTS + 2, dtype=torch.long))
    assert code[0, MAX_SLOTS - 1] == RELATION_VALUE and code[MAX_SLOTS, 0] == RELATION_VALUE
    assert code[1].abs().sum() == 0  # empty


def test_the_model_adds_relations_when_configured_and_they_need_the_geometry_code():
    torch.manual_seed(0)
    assert not SmolRGPTConfig.from_preset("smolrgpt-tiny").region_relations  # off in every preset
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny", region_relations=True)
    model = SmolRGPTForConditionalGeneration(config).eval()
    grid, hidden, tokens = config.mask_grid, config.text_config.hidden_size, config.num_image_tokens
    frames = FrameFeatures(torch.randn(1, tokens, hidden), torch.randn(1, tokens, hidden))
    masks = torch.zeros(2, grid, grid)
    masks[0, 10:20, 10:20], masks[1, 20:24, 12:16] = 1.0, 1.0
    index = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        rgb, _ = model.region_vectors(frames, masks, index)
        model.config.region_relations = False
        plain, _ = model.region_vectors(frames, masks, index)
    added = torch.zeros(2, hidden)
    added[:, code_width():code_width(relations=True)] = relation_code(masks, index)
    assert torch.allclose(rgb - plain, added, atol=1e-5) and added[1, code_width()] > 0
    with pytest.raises(StrictDataclassClassValidationError,
                       match="region_relations=True extends the region geometry code"):
        SmolRGPTConfig.from_preset("smolrgpt-tiny", region_geometry=False, region_relations=True)
