"""Inference precision: column-major fp32 weights (same values and answers, tied weights stay tied, the
automatic layout follows the measured speed), fp16 and int8 weight-only layers against plain references,
and which mode `auto` picks."""
import pytest
import torch

from smolrgpt.engine import SmolRGPT
from smolrgpt.modeling import precision
from smolrgpt.modeling.precision import apply_precision, linear_shapes, to_column_major

from conftest import liven, make_frame


def _tie_head(model):
    lm = model.language_model
    lm.lm_head.weight = lm.get_input_embeddings().weight
    return model


def test_column_major_keeps_values_names_and_ties(tiny_model):
    model = _tie_head(tiny_model)
    before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    to_column_major(model.language_model)
    after = model.language_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lm = model.language_model
    up = lm.model.layers[0].mlp.up_proj.weight
    assert up.stride() == (1, up.shape[0]) and up.requires_grad  # the flag is kept
    assert lm.lm_head.weight is lm.get_input_embeddings().weight  # still one tensor
    assert lm.lm_head.weight.stride() == (1, lm.lm_head.weight.shape[0])
    assert linear_shapes(lm).count(tuple(lm.lm_head.weight.shape)) == 1


def test_column_major_engine_gives_the_same_answers(tiny_model, tiny_processor):
    liven(_tie_head(tiny_model))
    rgb, depth = make_frame(0)
    question, regions = "How far is <mask> from <mask>?", [[0, 0, 40, 30], [80, 40, 150, 85]]
    engine = SmolRGPT(tiny_model, tiny_processor, max_new_tokens=8)
    frame = engine.frame(rgb, depth)
    ids = torch.tensor([[5, 9, 11, 4]])
    logits_row = tiny_model.language_model(ids).logits
    row = [engine.ask(frame, question, regions, normalize=False).text,
           engine.ask(frame, "Describe the scene.", [], normalize=False).text]
    apply_precision(tiny_model, "fp32", "cpu", weight_layout="column")
    assert tiny_model.language_model.model.layers[0].self_attn.q_proj.weight.stride()[0] == 1
    torch.testing.assert_close(tiny_model.language_model(ids).logits, logits_row, rtol=1e-5, atol=1e-5)
    frame = engine.frame(rgb, depth)
    assert [engine.ask(frame, question, regions, normalize=False).text,
            engine.ask(frame, "Describe the scene.", [], normalize=False).text] == row


@pytest.mark.parametrize("speedup, min_bytes, converted", [(1.5, 0, True), (1.02, 0, False), (1.5, 2**40, False)])
def test_auto_layout_follows_the_measurement(tiny_model, monkeypatch, speedup, min_bytes, converted):
    calls = []
    monkeypatch.setattr(precision, "column_major_speedup", lambda mix: calls.append(mix) or speedup)
    monkeypatch.setattr(precision, "LAYOUT_MIN_BYTES", min_bytes)
    apply_precision(tiny_model, "fp32", "cpu")
    weight = tiny_model.language_model.model.layers[0].mlp.down_proj.weight
    assert (weight.stride()[0] == 1) is converted
    if min_bytes == 0:  # the probe sees each weight shape with its count
        lm_shapes = linear_shapes(tiny_model.language_model)
        assert calls == [tuple(sorted((s, lm_shapes.count(s)) for s in set(lm_shapes)))]
    assert tiny_model.vision_tower.encoder.layers[0].mlp.fc1.weight.is_contiguous()


def test_layout_errors(tiny_model):
    with pytest.raises(ValueError, match="weight_layout must be one of"):
        apply_precision(tiny_model, "fp32", "cpu", weight_layout="diagonal")
    with pytest.raises(ValueError, match="CPU fp32 option; this is int8 on cpu"):
        apply_precision(tiny_model, "int8", "cpu", weight_layout="column")


def test_speedup_probe_measures_both_layouts():
    precision.column_major_speedup.cache_clear()
    ratio = precision.column_major_speedup((((64, 32), 3), ((32, 64), 1)), probe_bytes=2**20)
    assert 0.1 < ratio < 10
    assert precision.column_major_speedup.cache_info().currsize == 1


def _reference_int8(weight, bias, x):
    """Weight-only int8 as stated: per output channel, scale = max |w| / 127, q = round(w / scale) in
    [-127, 127], y = x @ (q * scale).T + b, all in fp32."""
    scale = weight.abs().max(dim=1).values / 127
    q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127)
    return x @ (q * scale[:, None]).T + bias, q, scale


@pytest.mark.parametrize("rows", [1, 3, 16, 40])  # the int8 kernel up to 16 rows, the dequantised weight above
def test_int8_weight_only_matches_a_plain_reference(rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(2, rows, 96)
    expected, q, scale = _reference_int8(linear.weight.detach(), linear.bias.detach(), x)
    layer = precision.Int8WeightLinear(linear)
    assert layer.weight_int8.dtype == torch.int8 and torch.equal(layer.weight_int8.float(), q)
    torch.testing.assert_close(layer.scales, scale)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    error = (layer(x) - linear(x)).abs().max()
    assert 0 < error < 0.05  # int8 is not fp32: the weights really are rounded


def test_fp16_weights_match_a_plain_reference():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(3, 5, 96)
    expected = x @ linear.weight.detach().half().float().T + linear.bias.detach()  # fp16 weights, fp32 math
    layer = precision.Fp16WeightLinear(linear)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert (layer(x) - linear(x)).abs().max() > 0


def test_auto_picks_only_accuracy_preserving_modes(monkeypatch):
    assert precision.resolve_precision("auto", "cpu") == "fp16w"
    monkeypatch.setitem(precision.ACCURACY_PRESERVING, "fp16w", False)
    monkeypatch.setitem(precision.ACCURACY_PRESERVING, "int8", True)
    assert precision.resolve_precision("auto", "cpu") == "fp32"  # int8 passes but is slower than fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve_precision("auto", "cuda") == "fp32"  # bf16 not yet measured on a GPU
    monkeypatch.setitem(precision.ACCURACY_PRESERVING, "bf16", True)
    assert precision.resolve_precision("auto", "cuda") == "bf16"


def test_auto_keeps_fp32_for_weights_that_fit_in_the_caches(tiny_model, monkeypatch):
    import copy

    small = apply_precision(copy.deepcopy(tiny_model), "auto", "cpu")
    assert small.inference_precision == "fp32"
    assert type(small.language_model.lm_head) is torch.nn.Linear
    monkeypatch.setattr(precision, "LAYOUT_MIN_BYTES", 0)  # as if the weights were large
    large = apply_precision(tiny_model, "auto", "cpu")
    assert large.inference_precision == "fp16w"
    assert isinstance(large.language_model.lm_head, precision.Fp16WeightLinear)


def test_reduced_modes_convert_only_the_language_model(tiny_model):
    _tie_head(tiny_model)
    apply_precision(tiny_model, "fp16w", "cpu")
    lm = tiny_model.language_model
    assert tiny_model.inference_precision == "fp16w"
    assert not any(isinstance(m, torch.nn.Linear) for m in lm.modules())
    assert isinstance(lm.get_input_embeddings().weight, torch.nn.Parameter)  # the tied table stays
    kept = [m for name in ("vision_tower", "rgb_connector", "depth_connector")
            for m in getattr(tiny_model, name).modules() if isinstance(m, torch.nn.Linear)]
    assert kept and all(m.weight.dtype == torch.float32 for m in kept)  # vision and connectors stay fp32
