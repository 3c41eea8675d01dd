"""The diagnostic benchmarks' own logic (their full runs are measurements, not tests)."""
import importlib.util
import math
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_region_vectors_code_x_and_index(tiny_model):
    oracle = _load("oracle_regions")
    masks = torch.zeros(3, 64, 64)
    masks[0, 10:20, 0:8] = 1  # frame 0, first region: centroid column 3.5
    masks[1, 30:40, 48:64] = 1  # frame 0, second region: column 55.5
    masks[2, 0:4, 16:18] = 1  # frame 1, its first region: column 16.5
    index = torch.tensor([0, 0, 1])
    rgb, depth = oracle.oracle_region_vectors("x+index")(tiny_model, None, masks, index)
    table = tiny_model.get_input_embeddings().weight.detach()
    code_rgb = rgb.detach() - table[tiny_model.config.mask_rgb_token_id]
    code_depth = depth.detach() - table[tiny_model.config.mask_depth_token_id]
    assert torch.allclose(code_rgb, code_depth, atol=1e-6)
    for row, column in enumerate((3.5, 55.5, 16.5)):
        x = column / 64
        expected = [math.sin(x * f * math.pi) for f in range(1, 9)] + [math.cos(x * f * math.pi) for f in range(1, 9)]
        assert torch.allclose(code_rgb[row, :16], torch.tensor(expected), atol=1e-5)
    # 0-based index within each question (frame): 0, 1, then 0 again for the next frame
    assert code_rgb[:, 16:32].argmax(1).tolist() == [0, 1, 0]
    assert torch.count_nonzero(code_rgb[:, 16:32]).item() == 3 and not code_rgb[:, 32:].any()
    x_only, _ = oracle.oracle_region_vectors("x")(tiny_model, None, masks, index)
    assert not (x_only.detach() - table[tiny_model.config.mask_rgb_token_id])[:, 16:].any()


def test_oracle_geometry_only_is_the_models_code_in_place_of_pooled_vectors(tiny_model):
    from smolrgpt.modeling.geometry import geometry_code

    oracle = _load("oracle_regions")
    masks = torch.zeros(2, 64, 64)
    masks[0, 10:20, 0:8] = 1
    masks[1, 30:40, 48:64] = 1
    index = torch.tensor([0, 0])
    rgb, depth = oracle.oracle_region_vectors("geometry-only")(tiny_model, None, masks, index)
    table = tiny_model.get_input_embeddings().weight.detach()
    code = geometry_code(masks, index, tiny_model.config.text_config.hidden_size)
    assert torch.allclose(rgb.detach(), code + table[tiny_model.config.mask_rgb_token_id], atol=1e-6)
    assert torch.allclose(depth.detach(), code + table[tiny_model.config.mask_depth_token_id], atol=1e-6)
