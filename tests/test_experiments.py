"""The experiments' own logic (experiments/, outside the package; their full runs are measurements, not tests)."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_region_features_code_x_and_index(tiny_model):
    oracle = _load("oracle_regions")
    masks = torch.zeros(3, 64, 64)
    masks[0, 10:20, 0:8] = 1  # frame 0, first region: centroid column 3.5
    masks[1, 30:40, 48:64] = 1  # frame 0, second region: column 55.5
    masks[2, 0:4, 16:18] = 1  # frame 1, its first region: column 16.5
    index = torch.tensor([0, 0, 1])
    rgb, depth = oracle.oracle_region_features("x+index")(tiny_model, masks, index)
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
    x_only, _ = oracle.oracle_region_features("x")(tiny_model, masks, index)
    assert not (x_only.detach() - table[tiny_model.config.mask_rgb_token_id])[:, 16:].any()


def test_oracle_geometry_only_is_the_models_code_in_place_of_pooled_vectors(tiny_model):
    from smolrgpt.modeling.extensions.geometry import geometry_code

    oracle = _load("oracle_regions")
    masks = torch.zeros(2, 64, 64)
    masks[0, 10:20, 0:8] = 1
    masks[1, 30:40, 48:64] = 1
    index = torch.tensor([0, 0])
    rgb, depth = oracle.oracle_region_features("geometry-only")(tiny_model, masks, index)
    table = tiny_model.get_input_embeddings().weight.detach()
    code = geometry_code(masks, index, tiny_model.config.text_config.hidden_size)
    assert torch.allclose(rgb.detach(), code + table[tiny_model.config.mask_rgb_token_id], atol=1e-6)
    assert torch.allclose(depth.detach(), code + table[tiny_model.config.mask_depth_token_id], atol=1e-6)


def test_accuracy_by_family_groups_by_the_scene_files_family(tmp_path, capsys):
    import json

    import pytest

    from smolrgpt.synth.dataset import SynthConfig, generate_dataset

    by_family = _load("accuracy_by_family")
    generate_dataset(SynthConfig(out=str(tmp_path), width=320, height=180, frames=(("train", 0), ("val", 2), ("test", 0))),
                     progress=False)
    records = json.loads((tmp_path / "val.json").read_text())
    families = by_family.question_families(tmp_path / "val.json")
    assert set(families) == {r["id"] for r in records}
    assert {f.split("/")[0] for f in families.values()} <= {"lr_pair", "count_buffer", "dist_pair", "dist_to_buffer",
                                                          "dist_extreme_pallet_buffer", "dist_extreme_pallets",
                                                          "dist_transporter_buffer", "mcq_extreme",
                                                          "mcq_buffer_shelf", "mcq_pickup"}
    wrong = next(r for r in records if r["category"] == "left_right")
    predictions = {r["id"]: str(r["normalized_answer"]) for r in records}
    predictions[wrong["id"]] = "right" if wrong["normalized_answer"] == "left" else "left"
    lines = "\n".join(json.dumps({"id": k, "normalized_answer": v}) for k, v in predictions.items())
    (tmp_path / "predictions.jsonl").write_text(lines + "\n")
    assert by_family.main(["--data", str(tmp_path / "val.json"), "--predictions", str(tmp_path / "predictions.jsonl")]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["families"]
    assert sum(r["questions"] for r in rows) == len(records)
    lr = next(r for r in rows if r["family"] == "lr_pair")
    assert lr["accuracy"] == pytest.approx(100 * (lr["questions"] - 1) / lr["questions"], abs=0.01)
    assert all(r["accuracy"] == 100.0 for r in rows if r["family"] != "lr_pair")
    del predictions[wrong["id"]]
    with pytest.raises(SystemExit, match=f"question {wrong['id']} has no prediction"):
        by_family.accuracy_by_family(records, predictions, families, "p.jsonl")
    with pytest.raises(SystemExit, match="no scene files"):
        by_family.question_families(tmp_path / "train.json")


def test_distance_ceiling_probes_two_region_distances_with_and_without_the_depth_scale(tmp_path, capsys):
    import json

    import pytest

    from smolrgpt.synth.dataset import SynthConfig, generate_dataset

    ceiling = _load("distance_ceiling")
    generate_dataset(SynthConfig(out=str(tmp_path), width=320, height=180, questions_per_frame=25,
                                 frames=(("train", 2), ("val", 1), ("test", 0))), progress=False)
    train, val = str(tmp_path / "train.json"), str(tmp_path / "val.json")
    samples = ceiling.distance_questions(val, None)
    scene = json.loads((tmp_path / "val" / "scenes" / "000000.json").read_text())
    assert ceiling.scene_scale(samples[0]) == [scene["depth_png"]["near_m"], scene["depth_png"]["far_m"],
                                               scene["camera"]["hfov_deg"]]
    assert ceiling.within_ten_percent(np.log1p([1.0, 2.0, 0.0]), np.log1p([1.09, 2.3, 0.0])) == pytest.approx(66.67)
    assert ceiling.main(["--train", train, "--val", val, "--model", "preset:smolrgpt-tiny", "--steps", "5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["val_questions"] == len(samples)
    assert set(result["within_10_percent"]) == {"median training answer", "geometry", "geometry + depth scale",
                                                "region vectors"}
    assert all(0 <= v <= 100 for v in result["within_10_percent"].values())
    (tmp_path / "val" / "scenes" / "000000.json").unlink()
    with pytest.raises(SystemExit, match=f"question {samples[0].id}: no scene file"):
        ceiling.scene_scale(samples[0])


@pytest.mark.parametrize("oracle_name", ["geometry", "contents", "contents+comparisons"])
def test_oracle_layers_start_from_a_copy_with_the_layers_added(tmp_path, tiny_processor, oracle_name):
    from smolrgpt.modeling.checkpoint import load_checkpoint, save_checkpoint
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.extensions import EXTENSIONS
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration

    oracle = _load("oracle_regions")
    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset(
        "smolrgpt-tiny", region_extensions=[]))
    save_checkpoint(model, tiny_processor, tmp_path / "init")
    options = oracle.ADDED_LAYERS[oracle_name]
    copy = oracle.with_added_layers(tmp_path / "init", tmp_path / "copy", options)
    loaded, _ = load_checkpoint(copy)
    original = model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.state_dict().items() if k in original)
    added = set()
    assert loaded.config.region_extensions == [name for name in EXTENSIONS if name in options]
    for option in options:
        attribute = EXTENSIONS[option].attribute
        layer = getattr(loaded, attribute)
        if option != "geometry":  # the geometry code has no parameters
            assert not layer.output.weight.any()
        added |= {f"{attribute}.{name}" for name, _ in layer.named_parameters()}
    assert {k for k in loaded.state_dict() if k not in original} == added


def test_count_by_buffer_splits_the_masks_as_the_count_questions_name_them():
    import pytest

    count = _load("count_by_buffer")
    question = ("<image>\nWith the buffer zones <mask> <mask> and the pallets <mask> <mask> <mask> in view, how "
                "many pallets are within the buffer area closest to the shelf <mask>?")
    assert count.buffers_and_pallets(question, "val.json record 7") == (2, 3)
    assert count.selection_kind(question) == "shelf"
    assert count.selection_kind("Using the buffer masks <mask> and pallet masks <mask>, how many pallets are "
                                "there in the central buffer area?") == "middle"
    with pytest.raises(SystemExit, match="val.json record 7: cannot tell the buffer masks from the pallet masks"):
        count.buffers_and_pallets("How many pallets stand in <mask>?", "val.json record 7")


def test_oracle_asked_buffer_only_keeps_the_buffer_the_answer_names(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # as when the script runs: count_by_buffer sits beside it
    oracle = _load("oracle_regions")
    answer = ("The buffer region [Region 1] is the rightmost buffer region. The pallets [Region 3] [Region 5] "
              "are in the buffer region [Region 1]. Hence, there are two pallets.")
    record = {"id": "q7", "image": "000001.png", "category": "count", "normalized_answer": 2,
              "rle": ["b0", "b1", "b2", "p3", "p4", "p5", "s6"],
              "conversations": [
                  {"from": "human", "value": "<image>\nUsing the buffer masks <mask> <mask> <mask> and pallet masks "
                                             "<mask> <mask> <mask>, how many pallets are in the rightmost buffer "
                                             "near the shelf <mask>?"},
                  {"from": "gpt", "value": answer}],
              "freeform_answer": answer}
    kept = oracle.keep_asked_buffer(record, "train.json")
    assert kept["rle"] == ["b1", "p3", "p4", "p5", "s6"]
    assert kept["conversations"][0]["value"] == ("<image>\nUsing the buffer masks <mask> and pallet masks <mask> "
                                                 "<mask> <mask>, how many pallets are in the rightmost buffer near "
                                                 "the shelf <mask>?")
    renumbered = ("The buffer region [Region 0] is the rightmost buffer region. The pallets [Region 1] [Region 3] "
                  "are in the buffer region [Region 0]. Hence, there are two pallets.")
    assert kept["conversations"][1]["value"] == kept["freeform_answer"] == renumbered
    assert kept["normalized_answer"] == 2 and record["rle"][0] == "b0"  # the input record is left as it was
    last = dict(record, conversations=[record["conversations"][0], {"from": "gpt", "value": "In [Region 2]: 0."}],
                freeform_answer="In [Region 2]: 0.")
    assert oracle.keep_asked_buffer(last, "train.json")["conversations"][0]["value"].startswith(
        "<image>\nUsing the buffer masks <mask> and pallet masks <mask> <mask> <mask>,")
    two = dict(record, conversations=[record["conversations"][0], {"from": "gpt", "value": "[Region 0], [Region 2]"}])
    with pytest.raises(SystemExit, match=r"train.json record q7: the answer names buffers \[0, 2\], not one"):
        oracle.keep_asked_buffer(two, "train.json")


