"""Inference precision: oneDNN-run fp32 linear layers (F.linear's values and the same answers, tied
weights, the automatic layout follows the measured speed), fp16 and int8 weight-only layers against plain
references, and which mode `auto` picks."""
import pytest
import torch

from smolrgpt.engine import SmolRGPT
from smolrgpt.modeling import precision
from smolrgpt.modeling.precision import OneDnnLinear, apply_precision, linear_shapes

from conftest import liven, make_frame

needs_onednn = pytest.mark.skipif(not precision.onednn_available(), reason="this torch build has no oneDNN")


def _tie_head(model):
    lm = model.language_model
    lm.lm_head.weight = lm.get_input_embeddings().weight
    return model


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 8, 64])
def test_onednn_linear_matches_f_linear(rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(2, rows, 96)
    layer = OneDnnLinear(linear)
    out = layer(x)
    assert out.shape == (2, rows, 40) and out.dtype == torch.float32
    torch.testing.assert_close(out, linear(x), rtol=1e-5, atol=1e-5)  # fp32: only the order of the sums differs
    no_bias = OneDnnLinear(torch.nn.Linear(96, 40, bias=False))
    assert no_bias.bias is None and "bias=False" in repr(no_bias)
    torch.testing.assert_close(layer(x[:, ::2]), linear(x[:, ::2]), rtol=1e-5, atol=1e-5)  # strided input


@needs_onednn
def test_onednn_layout_keeps_answers_and_the_tied_table(tiny_model, tiny_processor):
    liven(_tie_head(tiny_model))
    rgb, depth = make_frame(0)
    question, regions = "How far is <mask> from <mask>?", [[0, 0, 40, 30], [80, 40, 150, 85]]
    engine = SmolRGPT(tiny_model, tiny_processor, max_new_tokens=8)
    frame = engine.frame(rgb, depth)
    ids = torch.tensor([[5, 9, 11, 4]])
    logits_row = tiny_model.language_model(ids).logits
    row = [engine.ask(frame, question, regions, normalize=False).text,
           engine.ask(frame, "Describe the scene.", [], normalize=False).text]
    table = tiny_model.language_model.get_input_embeddings().weight
    apply_precision(tiny_model, "fp32", "cpu", weight_layout="onednn")
    assert tiny_model.weight_layout == "onednn"
    assert not any(isinstance(m, torch.nn.Linear) for m in tiny_model.modules())  # vision, connectors, LM
    lm = tiny_model.language_model
    assert isinstance(lm.lm_head, OneDnnLinear) and lm.get_input_embeddings().weight is table
    torch.testing.assert_close(lm(ids).logits, logits_row, rtol=1e-5, atol=1e-5)
    frame = engine.frame(rgb, depth)
    assert [engine.ask(frame, question, regions, normalize=False).text,
            engine.ask(frame, "Describe the scene.", [], normalize=False).text] == row


@pytest.mark.parametrize("speedup, min_bytes, converted", [(1.5, 0, True), (1.02, 0, False), (1.5, 2**40, False)])
def test_auto_layout_follows_the_measurement(tiny_model, monkeypatch, speedup, min_bytes, converted):
    calls = []
    monkeypatch.setattr(precision, "onednn_available", lambda: True)
    monkeypatch.setattr(precision, "onednn_speedup", lambda mix: calls.append(mix) or speedup)
    monkeypatch.setattr(precision, "LAYOUT_MIN_BYTES", min_bytes)
    shapes = linear_shapes(tiny_model)
    apply_precision(tiny_model, "fp32", "cpu")
    assert (tiny_model.weight_layout == "onednn") is converted
    assert isinstance(tiny_model.vision_tower.encoder.layers[0].mlp.fc1, OneDnnLinear) is converted
    assert isinstance(tiny_model.language_model.model.layers[0].mlp.down_proj, OneDnnLinear) is converted
    if min_bytes == 0:  # the probe sees each weight shape of the whole model with its count
        assert calls == [tuple(sorted((s, shapes.count(s)) for s in set(shapes)))]


@needs_onednn
def test_reduced_modes_run_the_rest_through_onednn(tiny_model):
    apply_precision(tiny_model, "fp16w", "cpu", weight_layout="onednn")
    assert isinstance(tiny_model.language_model.lm_head, precision.Fp16WeightLinear)
    assert isinstance(tiny_model.vision_tower.encoder.layers[0].mlp.fc1, OneDnnLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in tiny_model.modules())


def test_layout_errors(tiny_model):
    with pytest.raises(ValueError, match="weight_layout must be one of"):
        apply_precision(tiny_model, "fp32", "cpu", weight_layout="column")
    with pytest.raises(ValueError, match="weight_layout='onednn' runs fp32 layers on CPUs with oneDNN; this is fp32 on cuda"):
        apply_precision(tiny_model, "fp32", "cuda", weight_layout="onednn")
    with pytest.raises(ValueError, match="bf16 is a GPU mode here"):
        apply_precision(tiny_model, "bf16", "cpu")


@needs_onednn
def test_speedup_probe_measures_both_kinds():
    precision.onednn_speedup.cache_clear()
    ratio = precision.onednn_speedup((((64, 32), 3), ((32, 64), 1)), probe_bytes=2**20)
    assert 0.05 < ratio < 20
    assert precision.onednn_speedup.cache_info().currsize == 1


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
