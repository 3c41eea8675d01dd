"""The inference engine: cached frame features and batching give exactly the answers of the plain path."""
import numpy as np
import pytest
import torch

from smolrgpt.data.sample import Region
from smolrgpt.engine import Question, SmolRGPT, as_region
from smolrgpt.errors import SampleError

from conftest import liven, make_frame, make_sample


@pytest.fixture()
def lively_engine(tiny_model, tiny_processor):
    return SmolRGPT(liven(tiny_model), tiny_processor, batch_size=3, max_new_tokens=8)


def _plain_answer(engine, sample):
    batch = engine.processor([sample], train=False)
    tokens = engine.model.generate(**{k: v for k, v in batch.items() if k != "labels"}, max_new_tokens=8,
                                   eos_token_id=engine.processor.eos_token_id,
                                   pad_token_id=engine.processor.pad_token_id)
    return engine.processor.decode(tokens[0])


def test_engine_matches_the_plain_path_across_frames_and_batches(lively_engine):
    questions, expected = [], []
    frames = []
    for seed in range(3):
        rgb, depth = make_frame(seed)
        frames.append(lively_engine.frame(rgb, depth))
        for q, boxes in [("How far is the pallet <mask> from the pallet <mask>?", [[0, 0, 40, 30], [80, 40, 150, 85]]),
                         ("Describe the scene.", []),
                         ("Which is leftmost: <mask> <mask> <mask>?", [[0, 0, 9, 9], [50, 5, 90, 60], [100, 50, 159, 89]])]:
            sample = make_sample(f"{seed}", seed=seed, question=q, answer=None, boxes=boxes)
            expected.append(_plain_answer(lively_engine, sample))
            questions.append(Question(frames[-1], q, [Region("box", b) for b in boxes]))
    answers = lively_engine.ask_batch(questions, normalize=False)
    assert [a.text for a in answers] == expected
    assert len(set(expected)) > 3  # the outputs differ, so the comparison is meaningful


def test_frame_features_are_computed_once(lively_engine, monkeypatch):
    rgb, depth = make_frame(0)
    frame = lively_engine.frame(rgb, depth)
    calls = []
    original = lively_engine.model.encode_patches
    monkeypatch.setattr(lively_engine.model, "encode_patches", lambda x: calls.append(x.shape[0]) or original(x))
    for _ in range(3):
        lively_engine.ask(frame, "Is <mask> left of <mask>?", [[0, 0, 10, 10], [60, 20, 100, 70]], normalize=False)
    assert calls == [2]  # one pass: RGB and depth of the one frame


def test_region_forms_and_errors(lively_engine):
    rgb, depth = make_frame(0)
    frame = lively_engine.frame(rgb, depth, frame_id="f1")
    mask = np.zeros((90, 160), np.uint8)
    mask[10:20, 10:30] = 1
    assert as_region({"box": [1, 2, 3, 4]}) == Region("box", [1, 2, 3, 4])
    assert as_region([1, 2, 3, 4]).kind == "box" and as_region(mask).kind == "mask"
    with pytest.raises(SampleError, match="1 <mask> tag"):
        lively_engine.ask(frame, "Where is <mask>?", [mask, mask], normalize=False)
    no_depth = lively_engine.frame(rgb, None, frame_id="f2")
    with pytest.raises(SampleError, match="f2.*need a depth map"):
        lively_engine.ask(no_depth, "Where is <mask>?", [mask], normalize=False)


def test_precision_choices(tiny_model, tiny_processor):
    from smolrgpt.modeling.precision import Int8WeightLinear, apply_precision, resolve_precision

    assert resolve_precision("auto", "cpu") == "fp16w"  # the fastest mode the accuracy gate passed
    assert resolve_precision("auto", "meta") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="bf16 is a GPU mode here"):
        apply_precision(tiny_model, "bf16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match=r"precision int8 runs on CPUs .* use bf16 or fp32 on cuda"):
        apply_precision(tiny_model, "int8", "cuda")
    embedding_fp32 = tiny_model.get_input_embeddings().weight.detach().clone()
    quantized = apply_precision(tiny_model, "int8", "cpu")
    assert quantized.inference_precision == "int8"
    assert isinstance(quantized.language_model.lm_head, Int8WeightLinear)
    assert type(quantized.vision_tower.encoder.layers[0].mlp.fc1) is torch.nn.Linear  # vision stays fp32
    assert torch.equal(quantized.get_input_embeddings().weight, embedding_fp32)  # embeddings stay float


@pytest.mark.parametrize("mode", ["fp16w", "int8"])
def test_reduced_weight_modes_keep_the_tiny_models_answers(tiny_model, tiny_processor, mode):
    """fp16 weights (11 significant bits) keep every greedy answer of the tiny model in this test; int8
    weights (per-channel steps of max|w|/127) keep the question with regions and change the free-text
    one after a few tokens, which is why the accuracy gate measures modes on real checkpoints."""
    import copy

    from smolrgpt.modeling.precision import apply_precision

    liven(tiny_model)
    rgb, depth = make_frame(0)
    asked = [("How far is <mask> from <mask>?", [[0, 0, 40, 30], [80, 40, 150, 85]]), ("Describe the scene.", [])]

    def answers(model):
        engine = SmolRGPT(model, tiny_processor, max_new_tokens=8)
        frame = engine.frame(rgb, depth)
        return [engine.ask(frame, q, r, normalize=False).text for q, r in asked]

    reference = answers(copy.deepcopy(tiny_model))
    got = answers(apply_precision(tiny_model, mode, "cpu"))
    assert got[0] == reference[0]
    assert (got[1] == reference[1]) is (mode == "fp16w")


def test_question_accepts_every_region_form(lively_engine):
    rgb, depth = make_frame(0)
    frame = lively_engine.frame(rgb, depth)
    q = Question(frame, "Is <mask> left of <mask>?", [[0, 0, 10, 10], {"box": [20, 20, 60, 60]}])
    assert [r.kind for r in q.regions] == ["box", "box"]
    assert lively_engine.ask_batch([q], normalize=False)[0].text == lively_engine.ask(
        frame, "Is <mask> left of <mask>?", [[0, 0, 10, 10], [20, 20, 60, 60]], normalize=False).text


def test_regions_after_a_plain_question_encode_only_the_depth(lively_engine, monkeypatch):
    rgb, depth = make_frame(0)
    frame = lively_engine.frame(rgb, depth)
    calls = []
    original = lively_engine.model.encode_patches
    monkeypatch.setattr(lively_engine.model, "encode_patches", lambda x: calls.append(x.shape[0]) or original(x))
    plain = lively_engine.ask(frame, "Describe the scene.", [], normalize=False)
    with_regions = lively_engine.ask(frame, "Is <mask> left of <mask>?", [[0, 0, 10, 10], [60, 20, 100, 70]],
                                     normalize=False)
    assert calls == [1, 1]  # RGB for the first question, then the depth map alone
    fresh = SmolRGPT(lively_engine.model, lively_engine.processor, max_new_tokens=8)
    again = fresh.frame(rgb, depth)
    assert fresh.ask(again, "Describe the scene.", [], normalize=False).text == plain.text
    assert fresh.ask(again, "Is <mask> left of <mask>?", [[0, 0, 10, 10], [60, 20, 100, 70]],
                     normalize=False).text == with_regions.text
