import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt.data.sample import Region
from smolrgpt.errors import SampleError
from smolrgpt.processing.images import ImageDecodeError, depth_to_unit, depth_transform, rgb_transform
from smolrgpt.processing.processor import SmolRGPTProcessor
from smolrgpt.processing.prompt import IGNORE_INDEX, build_messages, expand_question, image_prefix_ids, render_text
from smolrgpt.processing.regions import RegionDecodeError, parse_region, region_to_grid, regions_to_grid

from conftest import make_sample

# The real 100-record sample lives in the shared folder beside the checkout; SMOLRGPT_TRACK3_SAMPLE overrides.
TRAIN_SAMPLE = Path(os.environ.get("SMOLRGPT_TRACK3_SAMPLE",
                                   Path(__file__).resolve().parents[2] / "shared" / "data" / "track3" / "train_sample.json"))


def test_area_average_exact_on_integer_cells():
    mask = np.zeros((128, 128), np.uint8)
    mask[0:2, 0:1] = 1  # half of grid cell (0, 0), which covers 2x2 pixels
    mask[10:14, 20:24] = 1  # exactly cells (5..6, 10..11)
    grid = region_to_grid(Region("mask", mask), (128, 128), 64)
    assert grid[0, 0] == pytest.approx(0.5)
    np.testing.assert_allclose(grid[5:7, 10:12], 1.0)
    assert grid.sum() == pytest.approx(0.5 + 4)


def test_area_average_fractional_cells_preserves_area():
    rng = np.random.default_rng(1)
    mask = (rng.random((1080, 1920)) > 0.7).astype(np.uint8)
    grid = region_to_grid(Region("mask", mask), (1080, 1920), 64)
    cell_area = (1080 / 64) * (1920 / 64)
    assert grid.sum() * cell_area == pytest.approx(mask.sum(), rel=1e-4)


def test_single_pixel_region_never_pools_to_empty():
    for y, x in [(0, 0), (1079, 1919), (540, 17)]:
        mask = np.zeros((1080, 1920), np.uint8)
        mask[y, x] = 1
        grid = region_to_grid(Region("mask", mask), (1080, 1920), 64)
        assert grid.sum() > 0
        assert grid.sum() * (1080 / 64) * (1920 / 64) == pytest.approx(1.0, rel=1e-3)


def test_every_region_form_gives_the_same_grid():
    h, w = 60, 100
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 20:50] = 1
    rle = coco_mask.encode(np.asfortranarray(mask))
    compressed = {"size": [h, w], "counts": rle["counts"].decode()}
    runs, flat, current, n = [], mask.flatten(order="F"), 0, 0
    for value in flat:
        if value != current:
            runs.append(n)
            current, n = value, 0
        n += 1
    runs.append(n)
    uncompressed = {"size": [h, w], "counts": runs}
    polygon = [[20, 10, 50, 10, 50, 30, 20, 30]]
    expected = region_to_grid(Region("mask", mask), (h, w), 16)
    for region in (Region("rle", compressed), Region("rle", uncompressed), Region("box", [20, 10, 50, 30]),
                   Region("mask", Image.fromarray(mask * 255))):
        np.testing.assert_allclose(region_to_grid(region, (h, w), 16), expected, atol=1e-6, err_msg=region.kind)
    poly = region_to_grid(Region("polygon", polygon), (h, w), 16)
    assert abs(poly.sum() - expected.sum()) / expected.sum() < 0.1  # rasterised polygon edges differ slightly


def test_repeated_rle_regions_are_decoded_once(monkeypatch):
    """A frame's questions repeat its masks: a compressed RLE seen before is not decoded again, its map is
    shared read-only, and a bad RLE is refused every time (failures are not kept)."""
    from smolrgpt.processing import regions as regions_mod

    h, w = 60, 100
    mask = np.zeros((h, w), np.uint8)
    mask[5:25, 40:90] = 1
    counts = coco_mask.encode(np.asfortranarray(mask))["counts"].decode()
    expected = region_to_grid(Region("mask", mask), (h, w), 16)
    decoded = []
    real = regions_mod.full_resolution_mask
    monkeypatch.setattr(regions_mod, "full_resolution_mask", lambda *a: decoded.append(1) or real(*a))
    first = region_to_grid(Region("rle", {"size": [h, w], "counts": counts}), (h, w), 16)
    again = regions_to_grid([Region("rle", {"size": [h, w], "counts": counts})] * 3, (h, w), 16)
    assert len(decoded) == 1
    np.testing.assert_array_equal(again, np.stack([first] * 3))
    np.testing.assert_allclose(first, expected, atol=1e-6)
    assert not first.flags.writeable
    region_to_grid(Region("rle", {"size": [h, w], "counts": counts}), (h, w), 8)  # another grid: decoded
    assert len(decoded) == 2
    for _ in range(2):
        with pytest.raises(RegionDecodeError, match="differs from the image size"):
            region_to_grid(Region("rle", {"size": [h, w], "counts": counts}), (h + 1, w), 16)


def test_mask_image_file(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:10] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    grid = region_to_grid(Region("mask", str(tmp_path / "m.png")), (40, 40), 8)
    assert grid.sum() * 25 == pytest.approx(25)


@pytest.mark.parametrize("region, message", [
    (Region("mask", np.zeros((10, 10))), "empty"),
    (Region("mask", np.ones((12, 10))), "differs from the image size"),
    (Region("rle", {"size": [20, 10], "counts": "abc"}), "differs from the image size"),
    (Region("rle", {"size": [10, 10], "counts": [5, 5]}), "do not add up"),
    (Region("box", [5, 5, 5, 9]), "empty"),
    (Region("polygon", [[1, 2, 3]]), "at least 3"),
])
def test_bad_regions_raise(region, message):
    with pytest.raises(RegionDecodeError, match=message):
        regions_to_grid([region], (10, 10), 4)


def test_real_train_sample_masks_all_pool_non_empty():
    records = json.loads(TRAIN_SAMPLE.read_text())
    assert len(records) == 100
    record = records[0]
    grid = regions_to_grid([Region("rle", r) for r in record["rle"]], (1080, 1920), 64)
    assert grid.shape == (len(record["rle"]), 64, 64)
    for r, g in zip(record["rle"], grid):
        area = coco_mask.area({"size": r["size"], "counts": r["counts"].encode()})
        assert g.sum() * (1080 / 64) * (1920 / 64) == pytest.approx(area, rel=1e-3)


def test_rgb_transform_range_and_squash():
    rgb = np.zeros((90, 160, 3), np.uint8)
    rgb[:, :80] = 255
    out = rgb_transform(rgb, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert out[:, :, 0].min() == pytest.approx(1.0) and out[:, :, -1].max() == pytest.approx(-1.0)


def test_depth_transform_dtypes_and_polarity():
    ramp8 = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    np.testing.assert_allclose(depth_to_unit(ramp8), ramp8 / 255.0, atol=1e-7)
    ramp16 = (np.tile(np.arange(256, dtype=np.uint16), (4, 1)) * 100 + 1000).astype(np.uint16)
    np.testing.assert_allclose(depth_to_unit(ramp16), ramp8 / 255.0, atol=1e-6)
    ramp_f = ramp16.astype(np.float32) / 1000.0
    ramp_f[0, 0] = np.nan
    unit = depth_to_unit(ramp_f)
    assert unit[0, 0] == 1.0 and unit[1, 0] == 0.0
    np.testing.assert_allclose(depth_to_unit(ramp8, "near_bright"), 1 - ramp8 / 255.0, atol=1e-7)
    out = depth_transform(ramp8, 16)
    assert out.shape == (3, 16, 16) and np.array_equal(out[0], out[2])
    assert -1.0 <= out.min() < -0.9 and 0.9 < out.max() <= 1.0


def test_depth_16bit_png_file(tmp_path):
    arr = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 10).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    unit = depth_to_unit(tmp_path / "d.png")
    assert unit.min() == 0.0 and unit.max() == 1.0


def test_prompt_matches_chat_template(tiny_processor):
    turns = [("<image>\nHow far is <mask> from <mask>?", "It is 2 meters."), ("And <mask>?", "Left.")]
    messages = build_messages(turns, 3)
    assert messages[0]["content"] == "<|image|>" * 3 + "How far is <mask_rgb><mask_depth> from <mask_rgb><mask_depth>?"
    assert expand_question("<image>\nA <mask>") == "A <mask_rgb><mask_depth>"
    template = tiny_processor.tokenizer.apply_chat_template(messages, tokenize=False)
    assert render_text(messages, False) == template
    template = tiny_processor.tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert render_text(messages[:1], True) == template


def test_labels_cover_answers_and_end_token_only(tiny_processor):
    sample = make_sample()
    p = tiny_processor.prepare(sample, train=True)
    tok = tiny_processor.tokenizer
    assert tok.decode(p.input_ids) == render_text(build_messages(sample.turns, 64), False)
    learned = [int(t) for t, l in zip(p.input_ids, p.labels) if l != IGNORE_INDEX]
    assert tok.decode(learned) == sample.answer + "<|im_end|>"
    assert (p.input_ids == tiny_processor.tokenizer.convert_tokens_to_ids("<|image|>")).sum() == 64
    inference = tiny_processor.prepare(sample, train=False)
    assert tok.decode(inference.input_ids).endswith("<|im_start|>assistant\n")
    assert (inference.labels == IGNORE_INDEX).all()


def test_image_prefix_is_how_every_inference_prompt_starts(tiny_processor):
    image_id = tiny_processor.tokenizer.convert_tokens_to_ids("<|image|>")
    prefix = image_prefix_ids(tiny_processor.tokenizer, image_id, 64)
    assert tiny_processor.tokenizer.decode(prefix) == "<|im_start|>user\n" + "<|image|>" * 64
    for question, regions in (("How far is <mask> from <mask>?", 2), ("Is it left?", 0)):
        ids, _ = tiny_processor.prompt_arrays([(question, None)], regions, train=False)
        assert ids[:len(prefix)].tolist() == prefix


def test_collate_dynamic_padding_both_sides(tiny_processor):
    a = tiny_processor.prepare(make_sample("a", question="Short <mask>?", answer="Yes."))
    b = tiny_processor.prepare(make_sample("b"))
    right = tiny_processor.collate([a, b], "right")
    longest = max(len(a.input_ids), len(b.input_ids))
    assert right["input_ids"].shape == (2, longest) and longest < 512
    assert right["attention_mask"][0].tolist() == [1] * len(a.input_ids) + [0] * (longest - len(a.input_ids))
    left = tiny_processor.collate([a, b], "left")
    assert left["attention_mask"][0].tolist() == [0] * (longest - len(a.input_ids)) + [1] * len(a.input_ids)
    assert right["region_sample_index"].tolist() == [0, 1, 1]
    assert right["region_masks"].shape == (3, 64, 64)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.regions.pop(), "2 <mask> tag"),
    (lambda s: s.regions.append(Region("box", [0, 0, 5, 5])), "3 region"),
    (lambda s: setattr(s, "depth", np.zeros((45, 80), np.uint8)), "but depth is 45x80"),
    (lambda s: setattr(s, "image", "/nonexistent/frame.png"), "not found"),
    (lambda s: setattr(s, "depth", None), "needs a depth map"),
    (lambda s: setattr(s, "regions", [Region("mask", np.zeros((90, 160))), s.regions[1]]), "region 0 .*empty"),
    (lambda s: setattr(s, "regions", [Region("mask", np.ones((80, 160))), s.regions[1]]), "mask size 80x160"),
])
def test_bad_samples_name_the_sample(tiny_processor, mutate, message):
    sample = make_sample("rec-7")
    sample.source = "val.json#record 7"
    mutate(sample)
    with pytest.raises(SampleError, match=message) as info:
        tiny_processor.prepare(sample)
    assert "rec-7" in str(info.value) and "val.json#record 7" in str(info.value)


def test_unreadable_image_file(tiny_processor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    sample = make_sample()
    sample.image = bad
    with pytest.raises(SampleError, match="unreadable image"):
        tiny_processor.prepare(sample)


def test_processor_round_trip(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    loaded = SmolRGPTProcessor.from_pretrained(tmp_path)
    assert (loaded.image_size, loaded.num_image_tokens, loaded.mask_grid_size, loaded.max_length) == (256, 64, 64, 512)
    sample = make_sample()
    a, b = tiny_processor.prepare(sample), loaded.prepare(sample)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.region_masks, b.region_masks)


def test_rgba_mask_arrays_follow_the_mask_file_rule(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 255  # fully opaque everywhere: alpha must not make the whole image a region
    rgba[5:10, 5:10, :3] = 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    from_array = region_to_grid(Region("mask", rgba), (20, 20), 4)
    from_file = region_to_grid(Region("mask", str(tmp_path / "m.png")), (20, 20), 4)
    np.testing.assert_array_equal(from_array, from_file)
    assert from_array.sum() * 25 == pytest.approx(25)


# -- the authors' preprocessing modes (the settings an imported checkpoint keeps) ----------------------------
def _interpolate_reference(mask: np.ndarray, grid: int) -> np.ndarray:
    """From the facts: F.interpolate of the full-resolution binary mask, bilinear, align_corners False."""
    import torch
    import torch.nn.functional as F

    full = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(full, size=(grid, grid), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_bilinear_reduction_is_the_authors_interpolate_and_can_lose_a_small_region():
    h, w = 1080, 1920
    blob = np.zeros((h, w), np.uint8)
    blob[300:420, 500:800] = 1
    rle = coco_mask.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode()
    got = region_to_grid(Region("rle", rle), (h, w), 64, "bilinear")
    np.testing.assert_array_equal(got, _interpolate_reference(blob, 64))
    assert not np.array_equal(got, region_to_grid(Region("rle", rle), (h, w), 64))  # "area" is another reduction
    # Each output cell of a 1080x1920 -> 64x64 bilinear resize reads the 2x2 pixels around its centre only,
    # so a 4x4 region between the centres pools to nothing (a zero region vector): kept, as the authors had it.
    small = np.zeros((h, w), np.uint8)
    small[0:4, 0:4] = 1
    assert region_to_grid(Region("mask", small), (h, w), 64, "bilinear").sum() == 0.0
    assert region_to_grid(Region("mask", small), (h, w), 64, "area").sum() > 0.0
    box = region_to_grid(Region("box", [500, 300, 800, 420]), (h, w), 64, "bilinear")
    np.testing.assert_array_equal(box, _interpolate_reference(blob, 64))  # a box is rasterised first


def _grey_depth_file(tmp_path):
    yy, xx = np.mgrid[:45, :70]
    Image.fromarray(((xx * 3 + yy * 2) % 256).astype(np.uint8)).save(tmp_path / "depth.png")
    return tmp_path / "depth.png"


def test_depth_transform_modes_follow_the_authors_code(tmp_path):
    path = _grey_depth_file(tmp_path)
    rgb = Image.open(path).convert("RGB")
    training = np.asarray(rgb.resize((32, 32), Image.Resampling.NEAREST), np.float32).transpose(2, 0, 1) / 255
    submission = (np.asarray(rgb.resize((32, 32), Image.Resampling.BILINEAR), np.float32).transpose(2, 0, 1)
                  / 255 - 0.5) / 0.5
    np.testing.assert_array_equal(depth_transform(path, 32, mode="authors-training"), training)
    np.testing.assert_allclose(depth_transform(path, 32, mode="authors-submission"), submission, atol=1e-6)
    np.testing.assert_array_equal(depth_transform(path, 32, mode="authors-submission"), rgb_transform(path, 32))
    assert depth_transform(path, 32).min() < -0.9  # ours: [-1, 1]
    # The authors' modes read the file as it is: no polarity flip.
    np.testing.assert_array_equal(depth_transform(path, 32, "near_bright", "authors-training"), training)
    # PIL's convert("RGB") would saturate a 16-bit map to 255: refused rather than silently wrong.
    Image.fromarray(np.full((45, 70), 3000, np.uint16)).save(tmp_path / "d16.png")
    for mode in ("authors-training", "authors-submission"):
        with pytest.raises(ImageDecodeError, match=r"the authors' depth transforms read 8-bit depth maps; got a "
                                                   r"I;16 image \(use depth_transform 'smolrgpt'"):
            depth_transform(tmp_path / "d16.png", 32, mode=mode)


def test_processor_modes_round_trip_and_old_configs_load_with_ours(tiny_processor, tmp_path):
    from smolrgpt.errors import CheckpointError

    tiny_processor.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "processor_config.json").read_text())
    assert (config["mask_reduction"], config["depth_transform"]) == ("area", "smolrgpt")
    del config["mask_reduction"], config["depth_transform"]  # as written before the settings existed
    (tmp_path / "old" / "processor_config.json").write_text(json.dumps(config))
    old = SmolRGPTProcessor.from_pretrained(tmp_path / "old")
    assert (old.mask_reduction, old.depth_transform) == ("area", "smolrgpt")

    authors = SmolRGPTProcessor(tiny_processor.tokenizer, mask_reduction="bilinear", depth_transform="authors-training")
    authors.save_pretrained(tmp_path / "authors")
    loaded = SmolRGPTProcessor.from_pretrained(tmp_path / "authors")
    assert (loaded.mask_reduction, loaded.depth_transform) == ("bilinear", "authors-training")
    sample = make_sample()
    a, b = loaded.prepare(sample), tiny_processor.prepare(sample)
    assert not np.allclose(a.region_masks, b.region_masks)
    assert a.depth_values.min() >= 0.0 and b.depth_values.min() < 0.0

    for key, value, message in (("depth_transform", "nearest", "unknown depth transform 'nearest'; choose one of "
                                 "smolrgpt, authors-training, authors-submission"),
                                ("mask_reduction", "Bilinear", "unknown mask reduction 'Bilinear'; choose one of "
                                 "area, bilinear")):
        bad = json.loads((tmp_path / "authors" / "processor_config.json").read_text())
        bad[key] = value
        (tmp_path / "authors" / "processor_config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError) as info:
            SmolRGPTProcessor.from_pretrained(tmp_path / "authors")
        assert str(info.value) == f"{tmp_path / 'authors'}/processor_config.json: {message}"


def test_preprocessing_cache_follows_the_processor_modes(tmp_path, tiny_processor):
    from smolrgpt.data import open_dataset
    from smolrgpt.processing.cache import CacheError, PreparedCache, build_cache

    from conftest import write_track3_split

    split = write_track3_split(tmp_path / "data", frames=2, questions_per_frame=2)
    samples = list(open_dataset(split))
    authors = SmolRGPTProcessor(tiny_processor.tokenizer, mask_reduction="bilinear",
                                depth_transform="authors-submission")
    build_cache(samples, split, authors, tmp_path / "cache", progress=False)
    cache = PreparedCache(tmp_path / "cache", authors, source=split)
    for sample in samples:
        direct, cached = authors.prepare(sample), cache.prepare(sample)
        np.testing.assert_allclose(direct.depth_values, cached.depth_values, atol=1e-6)  # uint8 stored exactly
        np.testing.assert_allclose(direct.region_masks, cached.region_masks, atol=1e-3)  # float16 masks
    with pytest.raises(CacheError):  # a cache of the authors' preprocessing is not one of ours
        PreparedCache(tmp_path / "cache", tiny_processor, source=split)


def test_one_region_parser_forms_and_messages():
    rle = {"size": [4, 6], "counts": [3, 2, 19]}
    mask = np.ones((4, 6), np.uint8)
    assert parse_region([1, 2, 3, 4]) == Region("box", [1.0, 2.0, 3.0, 4.0])
    assert parse_region({"box": (1, 2, 3, 4)}) == Region("box", [1.0, 2.0, 3.0, 4.0])
    assert parse_region(rle) == parse_region({"rle": rle}) == Region("rle", rle)
    assert parse_region({"rle": {"size": [4, 6], "counts": b"12"}}).data["counts"] == b"12"
    assert parse_region({"polygon": [0, 0, 4, 0, 4, 3]}) == Region("polygon", [[0.0, 0.0, 4.0, 0.0, 4.0, 3.0]])
    assert parse_region(mask).data is mask and parse_region("m.png") == Region("mask", "m.png")
    region = Region("box", [0, 0, 1, 1])
    assert parse_region(region) is region
    cases = [([1, 2, float("nan"), 4], "r: a list region must be a box [x1, y1, x2, y2] of 4 numbers"),
             (3, 'r: a region must be an object such as {"box": [x1, y1, x2, y2]}, got int'),
             ({"box": [1, 2, 3, 4], "label": "x"}, "r: a region needs exactly one key of rle, box, polygon, mask; "
                                                  "got ['box', 'label']"),
             ({"box": [1, 2, 3]}, "r (box): a box must be [x1, y1, x2, y2], 4 numbers"),
             ({"rle": {"size": [4, 6]}}, "r (rle): RLE must be an object with exactly 'size' and 'counts'"),
             ({"rle": {"size": [4, True], "counts": []}}, "r (rle): size must be [height, width]"),
             ({"rle": {"size": [4, 6], "counts": "é"}}, "r (rle): compressed counts must be an ASCII string"),
             ({"rle": {"size": [4, 6], "counts": [1.5]}},
              "r (rle): counts must be a compressed string or a list of run lengths"),
             ({"polygon": [0, 0, 1, 1]}, "r (polygon): a polygon is a flat list [x0, y0, x1, y1, ...] of at least "
                                         "3 points (or a list of such lists)"),
             ({"circle": 3}, "r: unknown region kind 'circle'; use one of rle, box, polygon, mask")]
    for spec, message in cases:
        with pytest.raises(RegionDecodeError) as info:
            parse_region(spec, "r")
        assert str(info.value) == message
    # a caller that reads masks itself (the HTTP service) gets every other key, and bare paths are refused
    assert parse_region({"mask_file": 0}, masks=lambda kind, data: Region("mask", [kind, data])).data == ["mask_file", 0]
    with pytest.raises(RegionDecodeError, match="got str"):
        parse_region("/etc/passwd", masks=lambda kind, data: None)
