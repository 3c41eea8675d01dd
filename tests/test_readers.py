"""Readers: the real Track 3 sample, and fixtures in every other format written here from their schemas."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt.data import detect_format, open_dataset
from smolrgpt.data.jsonarray import MalformedJSONError, first_element, iter_json_array
from smolrgpt.data.llava import iter_llava
from smolrgpt.data.osd import iter_osd
from smolrgpt.data.parquet import iter_parquet
from smolrgpt.data.sample import Region, Sample
from smolrgpt.data.track3 import iter_track3
from smolrgpt.errors import SampleError
from smolrgpt.processing.regions import full_resolution_mask, regions_to_grid

# The real 100-record sample lives in the shared folder beside the checkout; SMOLRGPT_TRACK3_SAMPLE overrides.
TRAIN_SAMPLE = Path(os.environ.get("SMOLRGPT_TRACK3_SAMPLE",
                                   Path(__file__).resolve().parents[2] / "shared" / "data" / "track3" / "train_sample.json"))


def rle_of(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def box_mask(h: int, w: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return path


# ------------------------------------------------------------------------------------------ Track 3
@pytest.fixture(scope="module")
def train_records():
    if not TRAIN_SAMPLE.exists():
        pytest.skip(f"{TRAIN_SAMPLE} not found (set SMOLRGPT_TRACK3_SAMPLE)")
    return json.loads(TRAIN_SAMPLE.read_text())


def test_train_sample_parses_with_masks_tags_and_answer_types(train_records):
    samples = list(iter_track3(TRAIN_SAMPLE))
    assert len(samples) == len(train_records) == 100
    for sample, record in zip(samples, train_records):
        assert sample.id == record["id"]
        assert sample.image == TRAIN_SAMPLE.parent / "train_sample" / "images" / record["image"]
        assert sample.depth == TRAIN_SAMPLE.parent / "train_sample" / "depths" / record["image"].replace(".png", "_depth.png")
        assert sample.depth_polarity == "far_bright"
        assert sample.turns == [(record["conversations"][0]["value"], record["freeform_answer"])]
        assert sample.category == record["category"]
        assert sample.normalized_answer == record["normalized_answer"]
        assert type(sample.normalized_answer) is type(record["normalized_answer"])
        assert sample.num_mask_tags() == len(sample.regions) == len(record["rle"])
        assert all(r.kind == "rle" and r.data == e for r, e in zip(sample.regions, record["rle"]))
        # regions_to_grid decodes every mask at full resolution and raises on an undecodable or empty one
        grid = regions_to_grid(sample.regions, (1080, 1920), 64)
        assert grid.shape == (len(sample.regions), 64, 64) and (grid.sum(axis=(1, 2)) > 0).all()
    first = full_resolution_mask(samples[0].regions[0], (1080, 1920))
    assert first.shape == (1080, 1920) and first.dtype == np.uint8 and set(np.unique(first)) == {0, 1}
    kinds = {(s.category, type(s.normalized_answer).__name__) for s in samples}
    assert kinds == {("distance", "float"), ("count", "int"), ("mcq", "str"), ("left_right", "str")}


def _track3_record(rid: str, image: str, masks: list[np.ndarray], question: str, **extra) -> dict:
    record = {"id": rid, "image": image,
              "conversations": [{"from": "human", "value": question}],
              "rle": [rle_of(m) for m in masks]}
    if "answer" in extra:
        record["conversations"].append({"from": "gpt", "value": extra.pop("answer")})
    record.update(extra)
    return record


def test_track3_real_layout_with_depth_files(tmp_path):
    h, w = 12, 20
    masks = [box_mask(h, w, 0, 4, 0, 5), box_mask(h, w, 6, 12, 10, 20)]
    for split in ("val", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "depths").mkdir(parents=True)
        Image.new("RGB", (w, h)).save(tmp_path / split / "images" / "000007.png")
        Image.new("L", (w, h)).save(tmp_path / split / "depths" / "000007_depth.png")
    val = write_json(tmp_path / "val.json", [_track3_record(
        "a1", "000007.png", masks, "<image>\nIs the pallet <mask> left of the pallet <mask>?",
        answer="The pallet [Region 0] is to the left.", category="left_right", normalized_answer="left",
        freeform_answer="The pallet [Region 0] is on the left of the pallet [Region 1].")])
    test = write_json(tmp_path / "test.json", [_track3_record("t1", "000007.png", masks, "Distance <mask> to <mask>?")])

    (sample,) = list(iter_track3(val))
    assert sample == Sample(
        id="a1", image=tmp_path / "val" / "images" / "000007.png",
        turns=[("<image>\nIs the pallet <mask> left of the pallet <mask>?",
                "The pallet [Region 0] is on the left of the pallet [Region 1].")],
        regions=[Region("rle", rle_of(m)) for m in masks],
        depth=tmp_path / "val" / "depths" / "000007_depth.png", depth_polarity="far_bright",
        category="left_right", normalized_answer="left", source=f"{val}#record 0",
        meta={"index": 0, "format": "track3"})
    assert sample.image.exists() and sample.depth.exists()

    (test_sample,) = list(iter_track3(test))
    assert test_sample.turns == [("Distance <mask> to <mask>?", None)]
    assert test_sample.category is None and test_sample.normalized_answer is None
    assert test_sample.depth == tmp_path / "test" / "depths" / "000007_depth.png"

    (moved,) = list(iter_track3(val, images_dir=tmp_path / "elsewhere" / "images"))
    assert moved.depth == tmp_path / "elsewhere" / "depths" / "000007_depth.png"
    (moved,) = list(iter_track3(val, images_dir=tmp_path / "i", depths_dir=tmp_path / "d"))
    assert (moved.image, moved.depth) == (tmp_path / "i" / "000007.png", tmp_path / "d" / "000007_depth.png")


def test_track3_errors_name_the_record_and_the_file(tmp_path):
    mask = box_mask(4, 4, 0, 2, 0, 2)
    path = write_json(tmp_path / "train.json", [
        _track3_record("ok", "1.png", [mask], "A <mask>?"),
        _track3_record("bad", "2.png", [mask], "A <mask> and <mask>?")])
    samples = iter_track3(path)
    assert next(samples).id == "ok"
    with pytest.raises(SampleError) as err:
        next(samples)
    assert err.value.sample_id == "bad" and f"{path}#record 1" in str(err.value)
    assert "2 <mask> tags but the record has 1 masks" in str(err.value)
    write_json(path, [{"image": "1.png", "conversations": [], "rle": []}])
    with pytest.raises(SampleError, match=r"#record 0.*'id'"):
        list(iter_track3(path))


# ------------------------------------------------------------------------------------------- LLaVA
def test_llava_chat_json_with_images(tmp_path):
    (tmp_path / "images").mkdir()
    for name, color in (("GCC_1.jpg", (255, 0, 0)), ("GCC_2.png", (0, 0, 255))):
        Image.new("RGB", (8, 6), color).save(tmp_path / "images" / name)
    path = write_json(tmp_path / "chat.json", [
        {"id": "GCC_1", "image": "GCC_1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": "a red square"}]},
        {"id": "GCC_2", "image": "GCC_2.png", "conversations": [
            {"from": "human", "value": "Give a caption.\n<image>"}, {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "And the shape?"}, {"from": "gpt", "value": "a rectangle"}]}])
    samples = list(iter_llava(path))
    assert samples == [
        Sample(id="GCC_1", image=tmp_path / "images" / "GCC_1.jpg",
               turns=[("<image>\nDescribe the image briefly.", "a red square")],
               source=f"{path}#record 0", meta={"index": 0, "format": "llava"}),
        Sample(id="GCC_2", image=tmp_path / "images" / "GCC_2.png",
               turns=[("Give a caption.\n<image>", "blue"), ("And the shape?", "a rectangle")],
               source=f"{path}#record 1", meta={"index": 1, "format": "llava"})]
    assert all(s.depth is None and s.regions == [] and s.image.exists() for s in samples)
    assert [s.image for s in iter_llava(path, images_dir="/x")] == [Path("/x/GCC_1.jpg"), Path("/x/GCC_2.png")]

    write_json(path, [{"id": 3, "image": "a.jpg", "conversations": [
        {"from": "gpt", "value": "answer first"}, {"from": "human", "value": "?"}]}])
    with pytest.raises(SampleError, match="turn 0 is from 'gpt'"):
        list(iter_llava(path))


# --------------------------------------------------------------------------------------------- OSD
def _osd_records() -> list[dict]:
    m1, m2 = box_mask(10, 16, 0, 5, 0, 8), box_mask(10, 16, 5, 10, 8, 16)
    return [
        {"filename": "0a1b2c", "conversations": [
            {"from": "human", "value": "<image>\nIs <mask> <depth> behind <mask> <depth>?"},
            {"from": "gpt", "value": "No, Region [0] is in front of Region [1]."},
            {"from": "human", "value": "How wide is <mask>   <depth>?"},
            {"from": "gpt", "value": "Region [0] is 1.2 meters wide."}],
         "rle": [rle_of(m1), rle_of(m2), rle_of(m2)], "bbox": [[0, 0, 8, 5], [8, 5, 16, 10], [8, 5, 16, 10]]},
        {"filename": "ffee01.jpg", "conversations": [
            {"from": "human", "value": "Which is taller, <mask> <depth> or <mask> <depth>?"},
            {"from": "gpt", "value": "Region [1] is taller."}],
         "bbox": [[1.5, 2, 9, 9.5], [0, 0, 16, 10]]},
        {"id": "custom-7", "filename": "77", "conversations": [
            {"from": "human", "value": "What is in the picture? [\"quoted\"] ]"},
            {"from": "gpt", "value": "Nothing with a region."}]},
    ]


def test_osd_multi_turn_regions_and_paths(tmp_path):
    path = write_json(tmp_path / "result_10_depth_convs.json", _osd_records())
    samples = list(iter_osd(path, images_dir=tmp_path / "images", depths_dir=tmp_path / "depths"))
    first, second, third = samples
    assert first.id == "0a1b2c#0" and second.id == "ffee01.jpg#1" and third.id == "custom-7"
    assert first.turns == [("<image>\nIs <mask> behind <mask>?", "No, Region [0] is in front of Region [1]."),
                           ("How wide is <mask>?", "Region [0] is 1.2 meters wide.")]
    assert [r.kind for r in first.regions] == ["rle"] * 3  # masks preferred over boxes
    assert first.regions[1].data == rle_of(box_mask(10, 16, 5, 10, 8, 16))
    assert second.regions == [Region("box", [1.5, 2, 9, 9.5]), Region("box", [0, 0, 16, 10])]
    assert third.regions == [] and third.turns == [("What is in the picture? [\"quoted\"] ]", "Nothing with a region.")]
    assert (first.image, first.depth) == (tmp_path / "images" / "0a1b2c.jpg", tmp_path / "depths" / "0a1b2c.png")
    assert (second.image, second.depth) == (tmp_path / "images" / "ffee01.jpg", tmp_path / "depths" / "ffee01.png")
    assert all(s.depth_polarity == "near_bright" and s.source == f"{path}#record {i}" for i, s in enumerate(samples))

    boxes = next(iter_osd(path, images_dir="/i", region_form="bbox", depth_name="{stem}_depth.png",
                          image_ext=".png", depths_dir="/d"))
    assert boxes.regions[0] == Region("box", [0, 0, 8, 5])
    assert (boxes.image, boxes.depth) == (Path("/i/0a1b2c.png"), Path("/d/0a1b2c_depth.png"))
    assert next(iter_osd(path, images_dir="/i")).depth is None

    bad = _osd_records()[:1]
    bad[0]["rle"] = bad[0]["rle"][:2]
    bad[0].pop("bbox")
    write_json(path, bad)
    with pytest.raises(SampleError, match=r"0a1b2c#0.*3 <mask> tags but the record has 2"):
        list(iter_osd(path, images_dir="/i"))
    bad[0]["conversations"][0]["value"] = "Is <depth> near <mask> <depth>?"
    write_json(path, bad)
    with pytest.raises(SampleError, match="<depth> tag that does not follow"):
        list(iter_osd(path, images_dir="/i"))


def _big_osd_file(path: Path, target_bytes: int) -> int:
    """An OSD-like array written record by record (never held whole); returns the record count."""
    rng = np.random.default_rng(0)
    template = _osd_records()[0]
    count = 0
    with open(path, "w") as f:
        f.write("[\n")
        while f.tell() < target_bytes:
            record = dict(template, filename=f"{count:08x}",
                          noise="".join(rng.choice(list("ab]}[{\\\" ,"), size=2000)))
            f.write((",\n  " if count else "  ") + json.dumps(record))
            count += 1
        f.write("\n]\n")
    return count


_STREAM_PEAK = """
import sys, tracemalloc
from smolrgpt.data.osd import iter_osd
tracemalloc.start()
seen = 0
for sample in iter_osd(sys.argv[1], images_dir=sys.argv[2], chunk_bytes=256 << 10):
    assert sample.id == f"{seen:08x}#{seen}" and len(sample.regions) == 3, sample.id
    seen += 1
print(seen, tracemalloc.get_traced_memory()[1])
"""


def test_osd_streaming_memory_stays_bounded(tmp_path):
    # In a fresh process: tracemalloc traces the whole process, and inside the full suite the same
    # measurement read 8.8 MB (2.6 MB allowed) while the test passed alone.
    import subprocess
    import sys

    path = tmp_path / "big.json"
    count = _big_osd_file(path, 20 << 20)
    size = path.stat().st_size
    out = subprocess.run([sys.executable, "-c", _STREAM_PEAK, str(path), str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout.split()
    seen, peak = int(out[0]), int(out[1])
    assert seen == count and count > 1000
    assert peak < size / 8, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_json_array_records_across_chunk_boundaries(tmp_path, chunk):
    records = [{"text": "a ] b [ c } { \"quoted\" \\ back\\slash, comma", "n": [1, 2.5, -3e2]},
               "é ünïcödé 🚚", 12345678901234567890, 0.5, None, True, [], {}, {"nested": [[{"x": "]"}]]}]
    text = "\ufeff \n\t[\r\n" + " ,\n\n ".join(json.dumps(r, ensure_ascii=False, indent=3) for r in records) + "\n ]\n\n"
    path = tmp_path / "a.json"
    path.write_bytes(text.encode("utf-8"))
    assert [v for _, v in iter_json_array(path, chunk_bytes=chunk)] == records
    assert first_element(path) == records[0]
    path.write_text("  [ ]  ")
    assert list(iter_json_array(path, chunk_bytes=chunk)) == []


def test_json_array_errors_give_the_position(tmp_path):
    path = tmp_path / "bad.json"
    cases = {
        '[{"a": 1},\n {"a": 2, "b": "cut': r"file ends inside record 1 .* at line 2",
        '[{"a": 1},\n {"a": 2}': r"file ends after record 1: the array is never closed",
        '[{"a": 1}\n {"a": 2}]': r"expected ',' or ']' after record 0, found '\{' at line 2 column 2",
        '[{"a": 1},\n {"a": 2,}]': r"malformed JSON in record 1 .* line 2 column 10",
        '{"a": 1}': r"expected a JSON array",
        '[1, 2] trailing': r"unexpected 't' after the end of the array",
        '': r"expected a JSON array \('\['\), found the end of the file",
    }
    for text, pattern in cases.items():
        path.write_text(text)
        for chunk in (1, 5, 1 << 20):
            with pytest.raises(MalformedJSONError, match=pattern):
                list(iter_json_array(path, chunk_bytes=chunk))
    path.write_text('[{"a": 1},\n {"a": 2, "b": "cut')
    with pytest.raises(MalformedJSONError) as err:
        list(iter_json_array(path))
    assert (err.value.index, err.value.line) == (1, 2) and f"{path}#record 1" in str(err.value)


# ----------------------------------------------------------------------------------------- parquet
def test_parquet_embedded_images_lazy_and_polarity(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    depth = np.arange(48, dtype=np.uint8).reshape(6, 8)
    masks = [box_mask(6, 8, 0, 3, 0, 4), box_mask(6, 8, 3, 6, 4, 8)]
    rows = [
        {"id_db": "w-0", "id": "q0", "rgb_image": png_bytes(rgb), "depth_image": png_bytes(depth),
         "rle": [rle_of(m) for m in masks],
         "texts": {"user": "<mask_rgb><mask_depth> left of <mask_rgb> <mask_depth>?", "assistant": "left"},
         "category": "left_right", "normalized_answer": "left", "dataset_name": "warehouse-rgbd-smolRGPT"},
        {"id_db": "o-1", "id": "q1", "rgb_image": png_bytes(rgb), "depth_image": png_bytes(depth),
         "rle": [rle_of(masks[0])], "texts": {"user": "Is <mask> <depth> tall?", "assistant": "Yes."},
         "category": None, "normalized_answer": None, "dataset_name": "osd-110k-smolRGPT"},
        {"id_db": "l-2", "id": "q2", "rgb_image": png_bytes(rgb), "depth_image": None, "rle": None,
         "texts": {"user": "<image>\nCaption?", "assistant": "numbers"}, "category": None,
         "normalized_answer": None, "dataset_name": "llava-cc3m-smolRGPT"},
    ] * 2
    for k, row in enumerate(rows):
        rows[k] = dict(row, id=f"q{k}")
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)

    samples = list(iter_parquet(path, batch_size=2))
    assert [s.id for s in samples] == [f"q{k}" for k in range(6)]
    warehouse, osd, llava = samples[:3]
    assert warehouse.turns == [("<mask> left of <mask>?", "left")]
    assert warehouse.regions == [Region("rle", rle_of(m)) for m in masks]
    assert (warehouse.depth_polarity, osd.depth_polarity) == ("far_bright", "near_bright")
    assert (warehouse.category, warehouse.normalized_answer) == ("left_right", "left")
    assert osd.turns == [("Is <mask> tall?", "Yes.")] and llava.depth is None and llava.regions == []
    assert warehouse.meta == {"index": 0, "format": "parquet", "dataset_name": "warehouse-rgbd-smolRGPT",
                              "id_db": "w-0"}
    assert warehouse.source == f"{path}#row 0"
    image = warehouse.image
    assert isinstance(image, Image.Image) and image.size == (8, 6)
    assert image.tile  # header only: PIL empties `tile` once the pixels are decoded
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), rgb)
    np.testing.assert_array_equal(np.asarray(warehouse.depth), depth)

    pq.write_table(pa.Table.from_pylist([dict(rows[0], dataset_name="mystery")]), path)
    with pytest.raises(SampleError, match="unknown depth polarity for dataset_name 'mystery'"):
        list(iter_parquet(path))
    assert next(iter_parquet(path, depth_polarity="near_bright")).depth_polarity == "near_bright"


def test_parquet_file_names_multi_turn_in_authors_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "osd-110k-smolRGPT"
    (root / "data").mkdir(parents=True)
    table = pa.Table.from_pylist([{
        "id_db": "7", "id": "r7", "rgb_image": "a.jpg", "depth_image": "a.png",
        "rle": [{"size": [4, 4], "counts": "04<"}],
        "texts": [{"user": "Where is <mask>?", "assistant": "Left."}, {"user": "Sure?", "assistant": "Yes."}],
        "category": None, "normalized_answer": None, "dataset_name": "osd-110k-smolRGPT"}])
    pq.write_table(table, root / "data" / "part-0.parquet")
    (sample,) = list(open_dataset(root / "data"))
    assert (sample.image, sample.depth) == (root / "images" / "a.jpg", root / "depths" / "a.png")
    assert sample.turns == [("Where is <mask>?", "Left."), ("Sure?", "Yes.")]
    assert sample.regions == [Region("rle", {"size": [4, 4], "counts": "04<"})]
    (root / "train").mkdir()
    pq.write_table(table, root / "data" / "train-0.parquet")
    split = next(iter_parquet(root / "data" / "train-0.parquet"))
    assert split.image == root / "train" / "images" / "a.jpg"


# ------------------------------------------------------------------------------------ open_dataset
def test_open_dataset_sniffs_every_format(tmp_path, train_records):
    track3 = write_json(tmp_path / "val.json", train_records[:2])
    llava = write_json(tmp_path / "chat.json", [{"id": "x", "image": "x.jpg", "conversations": [
        {"from": "human", "value": "<image>\nCaption?"}, {"from": "gpt", "value": "c"}]}])
    osd = write_json(tmp_path / "osd.json", _osd_records())
    bench = write_json(tmp_path / "bench.json", [{"id": 0, "image_info": {"file_path": "a.jpg"}, "text_q": "q",
                                                  "conversations": [], "bbox": [], "qa_info": {}}])
    assert [detect_format(p) for p in (track3, llava, osd, bench)] == ["track3", "llava", "osd", "spatialbench"]
    assert [s.id for s in open_dataset(track3)] == [r["id"] for r in train_records[:2]]
    assert [s.image for s in open_dataset(llava, images_root="/imgs")] == [Path("/imgs/x.jpg")]
    assert len(list(open_dataset(osd, images_root=tmp_path, depths_root=tmp_path))) == 3
    with pytest.raises(SampleError, match="pass images_root"):
        open_dataset(osd)
    with pytest.raises(SampleError, match="cannot tell the format"):
        open_dataset(write_json(tmp_path / "odd.json", [{"what": 1}]))
    with pytest.raises(SampleError, match="unknown format 'csv'"):
        open_dataset(track3, format="csv")
    with pytest.raises(SampleError, match="file not found"):
        open_dataset(tmp_path / "missing.json")
